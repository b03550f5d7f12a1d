"""Reading the audio a request brings: source audio and reference (timbre) audio.

Every input becomes what the VAE expects (docs/pipeline.md#audio-tasks): 48 kHz, two channels
(mono duplicated, channels past the second dropped), float32 clipped to [-1, 1]. Files are
decoded with soundfile (libsndfile reads wav, flac, mp3 and ogg vorbis/opus without ffmpeg)
and resampled with soxr, a band-limited resampler.

A small compressed file can hold a great deal of audio (a 231 KB FLAC of 8 channels x 600 s
is 0.88 GB as float32), so nothing is decoded before the header's channels, sample rate and
length are within bounds and frames x channels as float32 fits the decoding budget
(ACESTEP_MAX_DECODED_AUDIO_MB, checked at submission). Decoding then runs block by block:
a check holds one block, a load holds the 48 kHz stereo result and one block. The blocks
are also checked as they come (length, for headers that only estimate it, as mp3's do;
NaN or infinite samples, which would only surface as a failed generation).

Messages name the audio by a label the caller chooses and never carry libsndfile's own text,
which quotes the file's server path; that text goes to the log.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from acestep_api.engine.request import DURATION_MAX

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
CHANNELS = 2
SILENCE_THRESHOLD = 1e-6  # the official rule: every sample below this in magnitude is silence
ACCEPTED_FORMATS = "wav, flac, mp3, ogg/opus"
# Telephone audio to the highest rate studio converters use; past either end a header is a
# mistake or an attack (a WAV claiming 2^31-1 Hz fails deep inside the model's STFT).
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 384000
MAX_CHANNELS = 8  # 7.1 surround; only the first two are used anyway
# 600 s of 48 kHz stereo float32 is 220 MiB; twice that and some more leaves room for
# 96 kHz stereo or 6 channels at 48 kHz over the longest accepted input.
DEFAULT_MAX_DECODED_MB = 512.0
BLOCK_FRAMES = 1 << 16  # frames decoded at a time: 1.4 s at 48 kHz, 2 MiB at 8 channels
_FLOAT32_BYTES = 4
_MIB = 1024 * 1024


class AudioInputError(ValueError):
    """An input audio file cannot be used; the message says why (without the file's path)."""


def _label(path: Path, label: str | None) -> str:
    return label if label is not None else f"audio file {path.name!r}"


def _undecodable(label: str, path: Path, error: Exception) -> AudioInputError:
    # libsndfile's message quotes the full path: it is logged, never answered.
    log.info("Could not decode %s: %s", path, error)
    return AudioInputError(f"{label} could not be decoded; accepted formats: {ACCEPTED_FORMATS}")


def _open_info(path: Path, label: str) -> sf._SoundFileInfo:
    """The file's header, or AudioInputError for a missing, empty or undecodable file."""
    if not path.is_file():
        raise AudioInputError(f"{label} does not exist")
    if path.stat().st_size == 0:
        raise AudioInputError(f"{label} is empty")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise _undecodable(label, path, exc) from None
    if info.frames <= 0 or info.samplerate <= 0 or info.channels <= 0:
        raise AudioInputError(f"{label} is empty (no audio samples)")
    return info


def _check_format(label: str, info: sf._SoundFileInfo) -> None:
    if info.channels > MAX_CHANNELS:
        raise AudioInputError(f"{label} has {info.channels} channels; at most {MAX_CHANNELS} are accepted")
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise AudioInputError(
            f"{label} has a sample rate of {info.samplerate} Hz; accepted: {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz"
        )


def _check_length(label: str, seconds: float, max_seconds: float) -> None:
    if seconds > max_seconds:
        raise AudioInputError(f"{label} is too long: {seconds:.1f} s, the maximum is {max_seconds:g} s")


def decoded_mb(frames: int, channels: int) -> float:
    """MiB that `frames` x `channels` samples take as float32."""
    return frames * channels * _FLOAT32_BYTES / _MIB


def _check_budget(label: str, frames: int, channels: int, rate: int, max_decoded_mb: float | None) -> None:
    if max_decoded_mb is not None and decoded_mb(frames, channels) > max_decoded_mb:
        raise AudioInputError(
            f"{label} is too large to decode: {channels} channels x {rate} Hz x {frames / rate:.1f} s would take "
            f"{decoded_mb(frames, channels):.0f} MB as float32, the limit is {max_decoded_mb:g} MB "
            "(ACESTEP_MAX_DECODED_AUDIO_MB)"
        )


def _blocks(path: Path, label: str, info: sf._SoundFileInfo, max_seconds: float,
            max_decoded_mb: float | None) -> Iterator[np.ndarray]:
    """The file's samples, [frames, channels] float32, a block at a time, each checked."""
    rate, frames = info.samplerate, 0
    try:
        with sf.SoundFile(str(path)) as file:
            while True:
                block = file.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                frames += block.shape[0]
                # Counted as decoded too, not only trusted from the header (an mp3's is an estimate).
                _check_length(label, frames / rate, max_seconds)
                _check_budget(label, frames, block.shape[1], rate, max_decoded_mb)
                if not np.isfinite(block).all():
                    raise AudioInputError(f"{label} contains NaN or infinite samples")
                yield block
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise _undecodable(label, path, exc) from None
    if frames == 0:
        raise AudioInputError(f"{label} is empty (no audio samples)")


def _opened(path: str | Path, label: str | None, max_seconds: float, max_decoded_mb: float | None):
    path = Path(path)
    label = _label(path, label)
    info = _open_info(path, label)
    # Length first: it is the bound a client is most likely to meet, and says the most.
    _check_length(label, info.frames / info.samplerate, max_seconds)
    _check_format(label, info)
    _check_budget(label, info.frames, info.channels, info.samplerate, max_decoded_mb)
    return path, label, info


def is_silent(wave: torch.Tensor | np.ndarray) -> bool:
    """True when every sample is below the silence threshold in magnitude."""
    if isinstance(wave, torch.Tensor):
        return bool((wave.abs() < SILENCE_THRESHOLD).all())
    return bool((np.abs(wave) < SILENCE_THRESHOLD).all())


def _stereo(block: np.ndarray) -> np.ndarray:
    """[frames, channels] -> [frames, 2]: mono duplicated, channels past the second dropped."""
    if block.shape[1] == 1:
        return np.repeat(block, CHANNELS, axis=1)
    return block[:, :CHANNELS]


def load_audio(path: str | Path, *, max_seconds: float = DURATION_MAX, label: str | None = None,
               max_decoded_mb: float | None = None) -> torch.Tensor:
    """Decode an input file into a [2, samples] float32 48 kHz waveform, block by block.

    Raises AudioInputError for a missing, empty, undecodable, out-of-bounds (channels, sample
    rate, length, `max_decoded_mb` when given) or non-finite file. No budget by default: the
    file was checked at submission, and streaming holds only the 48 kHz stereo result.
    Silence is not an error here: the engine treats a silent input the way the official
    server does. `label` names the file in messages (default: its file name).
    """
    path, label, info = _opened(path, label, max_seconds, max_decoded_mb)
    resampler = None
    if info.samplerate != SAMPLE_RATE:
        resampler = soxr.ResampleStream(info.samplerate, SAMPLE_RATE, CHANNELS, dtype="float32", quality="HQ")
    # The result is written in place, sized from the header (soundfile reads no further than
    # the header's frame count), so it is held once, not once as blocks and again when
    # joined; the slack covers the resampler's rounding, and growing is only a safety net.
    wave = torch.empty((CHANNELS, info.frames * SAMPLE_RATE // info.samplerate + BLOCK_FRAMES), dtype=torch.float32)
    position = 0

    def put(chunk: np.ndarray) -> None:
        nonlocal wave, position
        if position + chunk.shape[0] > wave.shape[1]:
            more = max(chunk.shape[0], wave.shape[1] // 2)
            wave = torch.cat([wave[:, :position], torch.empty((CHANNELS, more), dtype=torch.float32)], dim=1)
        wave[:, position:position + chunk.shape[0]] = torch.from_numpy(chunk.T)
        position += chunk.shape[0]

    for block in _blocks(path, label, info, max_seconds, max_decoded_mb):
        block = np.ascontiguousarray(_stereo(block))
        put(block if resampler is None else resampler.resample_chunk(block))
    if resampler is not None:
        put(resampler.resample_chunk(np.zeros((0, CHANNELS), dtype=np.float32), last=True))
    return _trimmed(wave, position).clamp_(-1.0, 1.0)


def _trimmed(wave: torch.Tensor, frames: int) -> torch.Tensor:
    """The first `frames` of a contiguous [2, capacity] buffer as a contiguous [2, frames]
    tensor on the same memory: the second row moves down over the gap (memmove allows the
    overlap), where slicing would leave a strided view and copying would hold it twice."""
    capacity = wave.shape[1]
    if frames == capacity:
        return wave
    item = wave.element_size()
    ctypes.memmove(wave.data_ptr() + frames * item, wave.data_ptr() + capacity * item, frames * item)
    return wave.view(-1)[: CHANNELS * frames].view(CHANNELS, frames)


def check_audio(path: str | Path, *, max_seconds: float = DURATION_MAX, label: str | None = None,
                max_decoded_mb: float = DEFAULT_MAX_DECODED_MB) -> float:
    """The file's duration in seconds, after checking that it can be used as an input.

    Raises AudioInputError when the file is missing, empty, undecodable, holds NaN or
    infinite samples, or is out of bounds: channels, sample rate, longer than `max_seconds`,
    or more than `max_decoded_mb` MiB as float32 (refused from the header, before any
    decoding). Silence is accepted: the engine reads a silent source as silence frames and a
    silent reference as none, as the official handler does. Decodes one block at a time and
    keeps none.
    """
    path, label, info = _opened(path, label, max_seconds, max_decoded_mb)
    frames = 0
    for block in _blocks(path, label, info, max_seconds, max_decoded_mb):
        frames += block.shape[0]
    return frames / info.samplerate
