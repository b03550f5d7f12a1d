"""The song picture and the status words, without a browser."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from acestep_api.client.api_client import TaskState
from acestep_api.ui import picture
from acestep_api.ui.status_text import duration_words, finished_text, progress_bar, song_details, waiting_text

RATE = 48000


def tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    mono = 0.5 * np.sin(2 * np.pi * hz * t).astype(np.float32)
    return np.stack([mono, mono], axis=1)


@pytest.mark.parametrize("size", [(960, 300), (400, 120)])
def test_picture_has_the_requested_size(size):
    image = picture.song_picture(tone(2.0), RATE, *size)
    assert image.size == size and image.mode == "RGB"


def test_picture_of_a_file_shows_the_tone_where_it_is(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, tone(3.0, hz=1000.0), RATE)
    pixels = np.asarray(picture.picture_of_file(path, 600, 300)).astype(int)
    body = 300 - picture.AXIS_HEIGHT
    wave_rows = int(body * picture.WAVE_SHARE)
    spectrum = pixels[wave_rows:body].sum(axis=2)  # brightness, rows from high to low frequency
    brightest_row = int(np.median(spectrum.argmax(axis=0)))
    row_hz = np.geomspace(picture.MIN_HZ, RATE / 2, body - wave_rows)[::-1]
    assert 800 < row_hz[brightest_row] < 1250
    # The waveform spans most of its band for a steady tone (drawn from peak to peak).
    wave = np.asarray(picture.song_picture(tone(1.0), RATE, 200, 300))[:wave_rows]
    lit_rows = np.any(np.all(wave == picture.WAVE_COLOR, axis=2), axis=1).sum()
    assert lit_rows > 0.9 * wave_rows


def test_silence_and_empty_audio_still_draw():
    assert picture.song_picture(np.zeros((RATE, 2), np.float32), RATE).size == (picture.WIDTH, picture.HEIGHT)
    assert picture.song_picture(np.zeros((0, 2), np.float32), RATE, 100, 50).size == (100, 50)
    with pytest.raises(ValueError, match="sample rate"):
        picture.song_picture(tone(0.1), 0)


def test_an_undecodable_file_raises(tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(Exception):
        picture.picture_of_file(bad)


def state(elements, status=0, known=True, progress_text="") -> TaskState:
    return TaskState("t-1", status, elements=elements, known=known, progress_text=progress_text)


def test_waiting_text_says_queue_place_and_wait():
    text = waiting_text(state([{"status": 0, "stage": "queued", "queue_position": 3, "eta_seconds": 75.0}]), 2)
    assert "position 3 in line" in text and "1 min 15 s" in text and "t-1" in text


def test_running_text_says_stage_and_progress():
    text = waiting_text(state([{"status": 0, "stage": "diffusion step 4/8", "progress": 0.5,
                                "queue_position": 0}]), 12)
    assert "diffusion step 4/8" in text and "50%" in text and "12 s elapsed" in text
    assert progress_bar(0.5, 10) == "█████░░░░░"
    assert "Submitted" in waiting_text(state([], known=False), 0)


def test_finished_text():
    assert "Done: 2 songs" in finished_text(state([{}], status=1), 2, 9)
    failed = finished_text(state([{"status": 2, "stage": "failed", "error": "Cancelled by request"}], status=2), 0, 1)
    assert failed == "❌ Cancelled by request"
    assert duration_words(59.6) == "1 min 00 s" and duration_words(3) == "3 s"


def test_song_details_show_seed_metadata_models_and_info():
    element = {"seed_value": "11,22", "metas": {"bpm": 120, "keyscale": "C major", "timesignature": "4",
                                                "duration": 10.0, "genres": "N/A"},
               "dit_model": "acestep-v15-turbo", "lm_model": "acestep-5Hz-lm-0.6B", "prompt": "rock",
               "generation_info": "**⏱️ Total Time: 1.0s**"}
    text = song_details(element, 1)
    assert "**Seed:** 22" in text and "**BPM:** 120" in text and "**Key:** C major" in text
    assert "**Duration:** 10 s" in text and "N/A" not in text
    assert "acestep-v15-turbo" in text and "Total Time" in text
