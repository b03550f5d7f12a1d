"""Input audio files: every accepted format decodes to 48 kHz stereo; bad files say why."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from acestep_api.engine.audio_input import AudioInputError, check_audio, load_audio


def tone(seconds: float, rate: int, channels: int, frequency: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = amplitude * np.sin(2 * np.pi * frequency * t)
    # Distinct channels, so a swapped or dropped channel shows up.
    return np.stack([mono * (1.0 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


# (file suffix, soundfile format, subtype, sample rate, channels)
FORMATS = [
    ("wav", "WAV", "PCM_16", 48000, 2),
    ("wav", "WAV", "FLOAT", 22050, 1),
    ("flac", "FLAC", "PCM_24", 44100, 2),
    ("mp3", "MP3", "MPEG_LAYER_III", 44100, 2),
    ("mp3", "MP3", "MPEG_LAYER_III", 32000, 1),
    ("ogg", "OGG", "VORBIS", 44100, 2),
    ("opus", "OGG", "OPUS", 48000, 2),
    ("ogg", "OGG", "OPUS", 24000, 1),
    ("wav", "WAV", "PCM_16", 16000, 4),
]


@pytest.mark.parametrize("suffix, fmt, subtype, rate, channels", FORMATS)
def test_every_format_decodes_to_48k_stereo_of_the_right_length(tmp_path, suffix, fmt, subtype, rate, channels):
    seconds = 1.5
    path = tmp_path / f"input.{suffix}"
    sf.write(path, tone(seconds, rate, channels), rate, format=fmt, subtype=subtype)

    wave = load_audio(path)
    assert wave.dtype == torch.float32 and wave.shape[0] == 2
    # Lossy codecs add a little encoder delay/padding; 30 ms is well below one latent frame's
    # worth of doubt at the rates tested and far from a wrong-rate result (x0.5 or x2).
    assert abs(wave.shape[1] / 48000 - seconds) < 0.03
    assert wave.abs().max() <= 1.0
    assert check_audio(path) == pytest.approx(seconds, abs=0.03)
    if channels == 1:
        assert torch.equal(wave[0], wave[1])
    else:
        # The second channel was written 0.8x the first: kept, not mixed or duplicated.
        ratio = wave[1].abs().sum() / wave[0].abs().sum()
        assert ratio == pytest.approx(0.8, abs=0.05)


def test_resampling_keeps_the_frequency(tmp_path):
    path = tmp_path / "sine.wav"
    sf.write(path, tone(1.0, 44100, 1, frequency=1000.0), 44100, subtype="FLOAT")
    wave = load_audio(path)[0].numpy()
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    peak_hz = np.argmax(spectrum) * 48000 / len(wave)
    assert peak_hz == pytest.approx(1000.0, abs=2.0)
    # A nearest-neighbour resampler leaves images and distortion: a proper one keeps the
    # energy away from 1 kHz tiny.
    freqs = np.fft.rfftfreq(len(wave), 1 / 48000)
    far = spectrum[np.abs(freqs - 1000.0) > 50.0]
    assert far.max() < 1e-3 * spectrum.max()


def test_clipping_to_unit_range(tmp_path):
    path = tmp_path / "loud.wav"
    sf.write(path, tone(0.5, 48000, 2, amplitude=3.0), 48000, subtype="FLOAT")
    wave = load_audio(path)
    assert wave.abs().max() == pytest.approx(1.0)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    for call in (load_audio, check_audio):
        with pytest.raises(AudioInputError, match="is empty"):
            call(path)


def test_wav_with_no_samples_is_empty(tmp_path):
    path = tmp_path / "nothing.wav"
    sf.write(path, np.zeros((0, 2), dtype=np.float32), 48000)
    with pytest.raises(AudioInputError, match="empty"):
        check_audio(path)


def test_undecodable_file_names_the_accepted_formats(tmp_path):
    path = tmp_path / "notes.mp3"
    path.write_bytes(b"this is plain text, not audio" * 20)
    for call in (load_audio, check_audio):
        with pytest.raises(AudioInputError, match="could not be decoded.*wav, flac, mp3, ogg/opus"):
            call(path)


def test_missing_file(tmp_path):
    with pytest.raises(AudioInputError, match="does not exist"):
        check_audio(tmp_path / "absent.wav")


def test_silent_file_is_refused_by_check_but_loads(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.full((24000, 2), 5e-7, dtype=np.float32), 48000, subtype="FLOAT")
    with pytest.raises(AudioInputError, match="silent"):
        check_audio(path)
    assert load_audio(path).shape == (2, 24000)
    # One audible sample is enough to be not silent.
    samples = np.zeros((24000, 2), dtype=np.float32)
    samples[100, 0] = 1e-3
    sf.write(path, samples, 48000, subtype="FLOAT")
    assert check_audio(path) == pytest.approx(0.5)


def test_too_long_gives_both_numbers(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, tone(3.0, 8000, 1), 8000, format="FLAC")
    for call in (load_audio, check_audio):
        with pytest.raises(AudioInputError, match=r"too long: 3\.0 s, the maximum is 2\.5 s"):
            call(path, max_seconds=2.5)
    assert check_audio(path, max_seconds=3.5) == pytest.approx(3.0)
