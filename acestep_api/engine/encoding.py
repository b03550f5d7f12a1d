"""Decoded songs to files: the encode plan the engine makes, and the one function that carries it out.

``MusicEngine.render`` stops at a :class:`Rendered`: the result with the files' final names, and
an :class:`EncodePlan` (the waveforms and the format). ``Rendered.write`` encodes and writes the
files, then completes the result with the encode time. ``MusicEngine.generate`` calls it at once;
the job worker calls it on its encoding pool, so the engine thread goes on to the next job.

Work is cut into independent pieces (``encode_pieces``): one per file, or for a long MP3 one per
frame-aligned chunk (engine/mp3_chunks.py), so one song uses every core the pool has. Each
file appears whole or not at all (acestep_api.atomic_files); if any piece fails or the job is
cancelled, the files of the plan already written are removed.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from acestep_api.atomic_files import atomic_path
from acestep_api.engine import mp3_chunks
from acestep_api.engine.request import GenerationError, GenerationResult

# audio_format -> (soundfile format, subtype): the formats libsndfile writes itself.
SOUNDFILE_FORMATS: dict[str, tuple[str, str | None]] = {
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "wav": ("WAV", "PCM_16"),
    "wav32": ("WAV", "FLOAT"),  # 32-bit float WAV
    "flac": ("FLAC", "PCM_16"),
    "opus": ("OGG", "OPUS"),
}
# audio_format -> the extension of its files, for every format the engine writes. As the
# official server: wav32 is a .wav file; aac is a raw ADTS stream (.aac), written with PyAV
# (FFmpeg's encoder), since libsndfile has no AAC.
FILE_EXTENSIONS: dict[str, str] = {
    "mp3": ".mp3", "wav": ".wav", "wav32": ".wav", "flac": ".flac", "opus": ".opus", "aac": ".aac",
}
FILE_FORMATS: tuple[str, ...] = tuple(FILE_EXTENSIONS)
AAC_BIT_RATE = 128_000  # FFmpeg's default for its AAC encoder, which the official server uses
# Progress of a job while its files are encoded: from the first fraction to the last.
PROGRESS_ENCODING, PROGRESS_WRITTEN = 0.93, 0.99

Progress = Callable[[float, str], None]
Piece = Callable[[], bytes]


def default_workers() -> int:
    """Encoding threads when none are configured: one per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def as_frames(wave) -> np.ndarray:
    """A [channels, samples] waveform (tensor or array) as the [samples, channels] float32 in
    [-1, 1] that libsndfile reads, in one pass over the samples."""
    wave = _as_array(wave)
    frames = np.empty(wave.shape[::-1], dtype=np.float32)
    np.clip(wave.T, -1.0, 1.0, out=frames)
    return frames


def _as_array(wave) -> np.ndarray:
    return wave.detach().float().cpu().numpy() if hasattr(wave, "detach") else np.asarray(wave)


def check_format(fmt: str) -> None:
    if fmt not in FILE_FORMATS:
        raise GenerationError(f"audio_format {fmt!r} is not supported; use one of {', '.join(FILE_FORMATS)}")


def encode_bytes(frames: np.ndarray, fmt: str, sample_rate: int) -> bytes:
    """One single-pass file of ``frames`` in ``fmt``, in memory."""
    if fmt == "aac":
        return encode_aac(frames, sample_rate)
    file_format, subtype = SOUNDFILE_FORMATS[fmt]
    buffer = io.BytesIO()
    sf.write(buffer, frames, sample_rate, format=file_format, subtype=subtype)
    return buffer.getvalue()


def encode_aac(frames: np.ndarray, sample_rate: int, bit_rate: int = AAC_BIT_RATE) -> bytes:
    """[samples, channels] float32 frames as an AAC-LC stream in ADTS framing, in memory. A
    decoder gives back the encoder's priming (1024 samples) before the audio and pads the end to
    a whole frame of 1024 samples; ADTS has no field that tells it to trim them."""
    import av  # FFmpeg's libraries; imported here so the other formats never load them

    channels = frames.shape[1]
    layout = {1: "mono", 2: "stereo"}.get(channels)
    if layout is None:
        raise GenerationError(f"AAC output takes 1 or 2 channels, not {channels}")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="adts") as container:
        stream = container.add_stream("aac", rate=sample_rate, layout=layout)
        stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(frames.T), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):  # flush the encoder's look-ahead
            container.mux(packet)
    return buffer.getvalue()


@dataclass
class FileWork:
    """One file's share of the work: pieces that may run in parallel, and how their bytes join."""

    pieces: list[Piece]
    join: Callable[[list[bytes]], bytes]


def encode_pieces(wave: np.ndarray, fmt: str, sample_rate: int, workers: int) -> FileWork:
    """How to encode one [channels, samples] waveform with up to ``workers`` cores. MP3 is cut
    into chunks; FLAC, WAV, Opus and AAC are written in one pass
    (docs/architecture.md#the-encoding-pool says why). Each piece converts its own samples for
    its encoder, so that runs in parallel too."""
    check_format(fmt)
    samples = wave.shape[-1]
    if fmt == "mp3" and workers > 1:
        spans = mp3_chunks.plan_chunks(samples, sample_rate, workers)
        if len(spans) > 1:
            def join(parts: list[bytes]) -> bytes:
                try:
                    return mp3_chunks.join_chunks(parts, spans, samples).data
                except mp3_chunks.UnsupportedStream:
                    return mp3_chunks.encode_single(as_frames(wave), sample_rate)

            pieces = [_piece(wave[:, span.start : span.end], fmt, sample_rate) for span in spans]
            return FileWork(pieces, join)
    return FileWork([_piece(wave, fmt, sample_rate)], lambda parts: parts[0])


def _piece(wave: np.ndarray, fmt: str, sample_rate: int) -> Piece:
    return lambda: encode_bytes(as_frames(wave), fmt, sample_rate)


def write_file(path: Path, data: bytes) -> Path:
    """``data`` under ``path``, atomically (a kill mid-write leaves at most a partial file)."""
    with atomic_path(path) as temp:
        with open(temp, "wb") as out:
            out.write(data)
    return path


@dataclass(frozen=True)
class EncodePlan:
    """What the files of one job are made of: per file a [channels, samples] waveform and its target."""

    fmt: str
    sample_rate: int
    targets: tuple[Path, ...]
    waves: tuple[np.ndarray, ...] = field(repr=False)


def carry_out(plan: EncodePlan, executor: Executor | None = None, progress: Progress | None = None,
              workers: int | None = None) -> list[Path]:
    """Encode and write every file of ``plan``; the pieces run on ``executor`` (None: a pool of
    ``workers`` threads for this call). ``progress`` is told after each piece and may raise to
    stop (a cancel); then, as on any error, the files already written are removed."""
    workers = workers or default_workers()
    report = progress or (lambda fraction, stage: None)
    report(PROGRESS_ENCODING, "encoding")
    works = [encode_pieces(_as_array(wave), plan.fmt, plan.sample_rate, workers) for wave in plan.waves]
    own = executor is None
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="acestep-encode") if own else executor
    written: list[Path] = []
    futures = [[pool.submit(piece) for piece in work.pieces] for work in works]
    try:
        total, done = sum(len(f) for f in futures), 0
        for target, work, pending in zip(plan.targets, works, futures):
            parts = []
            for future in pending:
                parts.append(future.result())
                done += 1
                report(PROGRESS_ENCODING + (PROGRESS_WRITTEN - PROGRESS_ENCODING) * done / total, "encoding")
            written.append(write_file(Path(target), work.join(parts)))
        return [path.resolve() for path in written]
    except BaseException:
        for future in (f for pending in futures for f in pending):
            future.cancel()
        for path in written:
            with contextlib.suppress(OSError):
                os.remove(path)
        raise
    finally:
        if own:
            pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class Rendered:
    """A generation whose audio is decoded but not yet written.

    ``result`` already names the files (``audio_paths``); its timings lack the encoding.
    ``plan`` is None when the job makes no audio (the analysis modes)."""

    result: GenerationResult
    plan: EncodePlan | None = None

    def write(self, executor: Executor | None = None, progress: Progress | None = None,
              workers: int | None = None) -> GenerationResult:
        """Encode and write the files (see ``carry_out``); the result, with Timings.encoding."""
        report = progress or (lambda fraction, stage: None)
        if self.plan is None:
            report(1.0, "done")
            return self.result
        started = time.perf_counter()
        paths = carry_out(self.plan, executor, report, workers)
        seconds = time.perf_counter() - started
        timings = self.result.timings
        timings = replace(timings, encoding=seconds, total=(timings.total or 0.0) + seconds)
        result = self.result.model_copy(update={"audio_paths": [str(p) for p in paths], "timings": timings})
        report(1.0, "done")
        return result

