"""Reading the audio a request brings: source audio and reference (timbre) audio.

Every input becomes what the VAE expects (model-pipeline.md 3.5): 48 kHz, two channels
(mono duplicated, channels past the second dropped), float32 clipped to [-1, 1]. Files are
decoded with soundfile (libsndfile reads wav, flac, mp3 and ogg vorbis/opus without ffmpeg)
and resampled with soxr, a band-limited resampler.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from acestep_api.engine.request import DURATION_MAX

SAMPLE_RATE = 48000
CHANNELS = 2
SILENCE_THRESHOLD = 1e-6  # the official rule: every sample below this in magnitude is silence
ACCEPTED_FORMATS = "wav, flac, mp3, ogg/opus"


class AudioInputError(ValueError):
    """An input audio file cannot be used; the message says why."""


def _describe(path: Path) -> str:
    return f"audio file {path.name!r}"


def _open_info(path: Path) -> sf._SoundFileInfo:
    """The file's header, or AudioInputError for a missing, empty or undecodable file."""
    if not path.is_file():
        raise AudioInputError(f"{_describe(path)} does not exist")
    if path.stat().st_size == 0:
        raise AudioInputError(f"{_describe(path)} is empty")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioInputError(
            f"{_describe(path)} could not be decoded ({exc}); accepted formats: {ACCEPTED_FORMATS}"
        ) from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioInputError(f"{_describe(path)} is empty (no audio samples)")
    return info


def _check_length(path: Path, seconds: float, max_seconds: float) -> None:
    if seconds > max_seconds:
        raise AudioInputError(
            f"{_describe(path)} is too long: {seconds:.1f} s, the maximum is {max_seconds:g} s"
        )


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Samples [frames, channels] float32 and the file's sample rate."""
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioInputError(
            f"{_describe(path)} could not be decoded ({exc}); accepted formats: {ACCEPTED_FORMATS}"
        ) from None
    if samples.shape[0] == 0:
        raise AudioInputError(f"{_describe(path)} is empty (no audio samples)")
    return samples, rate


def is_silent(wave: torch.Tensor | np.ndarray) -> bool:
    """True when every sample is below the silence threshold in magnitude."""
    if isinstance(wave, torch.Tensor):
        return bool((wave.abs() < SILENCE_THRESHOLD).all())
    return bool((np.abs(wave) < SILENCE_THRESHOLD).all())


def to_model_format(samples: np.ndarray, rate: int) -> torch.Tensor:
    """[frames, channels] at ``rate`` -> [2, samples] float32 at 48 kHz, clipped to +-1."""
    if samples.shape[1] == 1:
        samples = np.repeat(samples, CHANNELS, axis=1)
    samples = samples[:, :CHANNELS]
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
    wave = torch.from_numpy(np.ascontiguousarray(samples.T, dtype=np.float32))
    return wave.clamp(-1.0, 1.0)


def load_audio(path: str | Path, *, max_seconds: float = DURATION_MAX) -> torch.Tensor:
    """Decode an input file into a [2, samples] float32 48 kHz waveform.

    Raises AudioInputError for a missing, empty, undecodable or too long file. Silence is
    not an error here: the engine treats a silent input the way the official server does.
    """
    path = Path(path)
    info = _open_info(path)
    _check_length(path, info.frames / info.samplerate, max_seconds)
    samples, rate = _decode(path)
    # The header's frame count can be an estimate (mp3): check the decoded length too.
    _check_length(path, samples.shape[0] / rate, max_seconds)
    return to_model_format(samples, rate)


def check_audio(path: str | Path, *, max_seconds: float = DURATION_MAX) -> float:
    """The file's duration in seconds, after checking that it can be used as an input.

    Raises AudioInputError when the file is missing, empty, undecodable, silent or longer
    than ``max_seconds``.
    """
    path = Path(path)
    info = _open_info(path)
    _check_length(path, info.frames / info.samplerate, max_seconds)
    samples, rate = _decode(path)
    seconds = samples.shape[0] / rate
    _check_length(path, seconds, max_seconds)
    if is_silent(samples):
        raise AudioInputError(f"{_describe(path)} is silent (every sample is below {SILENCE_THRESHOLD:g})")
    return seconds
