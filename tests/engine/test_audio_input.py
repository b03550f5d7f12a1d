"""Input audio files: every accepted format decodes to 48 kHz stereo; bad files say why."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from acestep_api.engine.audio_input import AudioInputError, check_audio, is_silent, load_audio
from tests.input_audio_files import MIB, float_wav, wav_with_rate, write_bomb
from tests.peak_memory import PeakRss


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


def test_silent_file_is_accepted_and_loads(tmp_path):
    """Silence is no refusal: it means no source or no reference, as in the official handler."""
    path = tmp_path / "silence.wav"
    sf.write(path, np.full((24000, 2), 5e-7, dtype=np.float32), 48000, subtype="FLOAT")
    assert check_audio(path) == pytest.approx(0.5)
    wave = load_audio(path)
    assert wave.shape == (2, 24000) and is_silent(wave)
    # One audible sample is enough to be not silent.
    samples = np.zeros((24000, 2), dtype=np.float32)
    samples[100, 0] = 1e-3
    sf.write(path, samples, 48000, subtype="FLOAT")
    assert check_audio(path) == pytest.approx(0.5) and not is_silent(load_audio(path))


def test_too_long_gives_both_numbers(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, tone(3.0, 8000, 1), 8000, format="FLAC")
    for call in (load_audio, check_audio):
        with pytest.raises(AudioInputError, match=r"too long: 3\.0 s, the maximum is 2\.5 s"):
            call(path, max_seconds=2.5)
    assert check_audio(path, max_seconds=3.5) == pytest.approx(3.0)


# --- bounds: nothing out of bounds is decoded -----------------------------------------


def test_too_many_channels_are_refused_from_the_header(tmp_path):
    path = tmp_path / "nine.wav"
    sf.write(path, tone(0.2, 16000, 9), 16000)
    for call in (load_audio, check_audio):
        with pytest.raises(AudioInputError, match="^audio file 'nine.wav' has 9 channels; at most 8 are accepted$"):
            call(path)
    sf.write(path, tone(0.2, 16000, 8), 16000)
    assert check_audio(path) == pytest.approx(0.2)


@pytest.mark.parametrize("rate, accepted", [(2**31 - 1, False), (384001, False), (7999, False), (8000, True),
                                            (384000, True)])
def test_sample_rates_outside_8k_to_384k_are_refused(tmp_path, rate, accepted):
    path = wav_with_rate(tmp_path / "rate.wav", rate, frames=9600)
    if accepted:
        assert check_audio(path) == pytest.approx(9600 / rate)
        assert load_audio(path).shape[1] == pytest.approx(9600 * 48000 / rate, abs=2)
        return
    for call in (load_audio, check_audio):
        with pytest.raises(AudioInputError, match=f"has a sample rate of {rate} Hz; accepted: 8000 to 384000 Hz"):
            call(path)


def test_the_decoding_budget_is_checked_before_anything_is_decoded(tmp_path, monkeypatch):
    path = tmp_path / "wide.flac"
    sf.write(path, tone(2.0, 48000, 8), 48000, format="FLAC")  # 2.9 MiB as float32
    monkeypatch.setattr(sf.SoundFile, "read", lambda *a, **k: pytest.fail("decoded despite the budget"))
    message = ("audio file 'wide.flac' is too large to decode: 8 channels x 48000 Hz x 2.0 s would take 3 MB "
               r"as float32, the limit is 2 MB \(ACESTEP_MAX_DECODED_AUDIO_MB\)")
    for call in (load_audio, check_audio):
        with pytest.raises(AudioInputError, match=message):
            call(path, max_decoded_mb=2)
    monkeypatch.undo()
    assert check_audio(path, max_decoded_mb=3) == pytest.approx(2.0)
    assert load_audio(path).shape == (2, 96000)  # loading has no budget unless given one


def test_the_default_budget_is_the_settings_default():
    from acestep_api.engine.audio_input import DEFAULT_MAX_DECODED_MB
    from acestep_api.settings import Settings

    assert Settings(_env_file=None).max_decoded_audio_mb == DEFAULT_MAX_DECODED_MB


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_non_finite_samples_are_refused_by_check_and_load(tmp_path, poison):
    path = float_wav(tmp_path / "poison.wav", poison)
    for call in (load_audio, check_audio):
        with pytest.raises(AudioInputError, match="^audio file 'poison.wav' contains NaN or infinite samples$"):
            call(path)


def test_messages_carry_the_label_and_never_the_path(tmp_path):
    path = tmp_path / "ctx_audio_k3j2.mp3"
    path.write_bytes(b"this is plain text, not audio" * 20)
    for call in (load_audio, check_audio):
        with pytest.raises(AudioInputError) as refused:
            call(path, label="audio file")
        assert str(refused.value) == "audio file could not be decoded; accepted formats: wav, flac, mp3, ogg/opus"
    with pytest.raises(AudioInputError) as refused:
        check_audio(path)
    assert str(tmp_path) not in str(refused.value) and "Error opening" not in str(refused.value)


def test_decoding_streams_a_file_within_the_budget(tmp_path):
    """A check holds one block, not the file; a load holds the 48 kHz stereo result once."""
    path = write_bomb(tmp_path / "long.flac", seconds=300)  # 439 MiB as float32 at 8 channels
    with PeakRss() as memory:
        assert check_audio(path) == pytest.approx(300.0)
    assert memory.growth_mb < 64, f"checking grew memory by {memory.growth_mb:.0f} MB"
    with PeakRss() as memory:
        wave = load_audio(path)
    result_mb = wave.numel() * 4 / MIB  # 110 MiB
    assert wave.shape == (2, 300 * 48000) and wave.is_contiguous()
    assert memory.growth_mb < result_mb + 64, f"loading grew memory by {memory.growth_mb:.0f} MB"
