"""One MP3 encoded in parallel: frame-aligned chunks encoded by libsndfile (LAME), joined into one stream.

A chunked encode must decode like a single-pass one: same length to the sample, no seam.

* Frame grid. An MPEG-1 Layer III frame holds 1152 samples and LAME puts ``ENCODER_DELAY``
  (576) samples before the first input sample. Every chunk starts at a multiple of 1152 source
  samples, so frame ``f`` of a chunk starting at sample ``s`` is frame ``f + s / 1152`` of the
  song: the frames of all chunks sit on one grid and can be exchanged one for one.
* Overlap. Chunks overlap by a few dozen frames. Each chunk starts ``WARM_UP_FRAMES`` before
  its splice window, so its psychoacoustic model, filter banks and MDCT history have seen the
  real preceding audio (not silence) by the time its frames are kept; the chunk before it runs
  ``RUN_OUT_FRAMES`` past the window, so its kept frames never see its own end padding. The
  overlapping frames of one of the two are dropped.
* Bit reservoir. A frame's main data may start up to 511 bytes before its header, in the
  spare room of earlier frames (``main_data_begin``). At a splice, the first kept frame of the
  later chunk needs its ``main_data_begin`` bytes from that chunk's own earlier frames. The
  splice is put at a frame ``j`` (searched within ``SPLICE_SEARCH_FRAMES`` of the border) where
  the earlier chunk's own frame ``j`` reaches back at least as far: those bytes of the earlier
  chunk held only frame ``j``'s data, which is dropped, so the later chunk's reservoir bytes are
  copied there and every frame on either side decodes exactly as in its own chunk.
* Header. The first chunk's Xing/LAME tag frame is kept with the song's frame count, byte
  count, seek table, end padding (so that decoders trim to the source length), lengths and
  CRCs rewritten.

If no splice point is found or the stream is not what this module reads (not MPEG-1, no LAME
tag), ``encode_mp3`` falls back to one single-pass encode: slower, never wrong.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import soundfile as sf

log = logging.getLogger(__name__)

FRAME_SAMPLES = 1152  # MPEG-1 Layer III
ENCODER_DELAY = 576  # LAME's, as its tag records it
WARM_UP_FRAMES = 16
SPLICE_SEARCH_FRAMES = 8
RUN_OUT_FRAMES = 8
# Shorter chunks than this are not worth their overlap (about 0.8 s of audio encoded twice).
MIN_CHUNK_SECONDS = 10.0

_BITRATES_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)  # MPEG-1 Layer III
_SAMPLE_RATES = (44100, 48000, 32000)  # MPEG-1
_TOC_ENTRIES = 100

RunAll = Callable[[Sequence[Callable[[], bytes]]], list[bytes]]


class UnsupportedStream(ValueError):
    """The encoder's output is not the MPEG-1 Layer III stream with a LAME tag this module joins."""


def encode_single(frames: np.ndarray, sample_rate: int) -> bytes:
    """One MP3 of ``frames`` [samples, channels] float32, as libsndfile writes it."""
    buffer = io.BytesIO()
    sf.write(buffer, frames, sample_rate, format="MP3", subtype="MPEG_LAYER_III")
    return buffer.getvalue()


@dataclass(frozen=True)
class ChunkSpan:
    """Source samples ``[start, end)`` encoded as one chunk; ``border`` is the song frame
    (None for the first chunk) where it takes over from the chunk before."""

    start: int
    end: int
    border: int | None


def plan_chunks(samples: int, sample_rate: int, chunks: int) -> list[ChunkSpan]:
    """Up to ``chunks`` overlapping spans covering ``samples``, each at least MIN_CHUNK_SECONDS long."""
    song_frames = math.ceil(samples / FRAME_SAMPLES)
    margin = WARM_UP_FRAMES + SPLICE_SEARCH_FRAMES
    chunks = max(1, min(chunks, int(samples / (MIN_CHUNK_SECONDS * sample_rate))))
    # Borders leave room for a full overlap on each side and never near the song's ends.
    borders = [round(song_frames * k / chunks) for k in range(1, chunks)]
    borders = [b for b in borders if margin < b < song_frames - SPLICE_SEARCH_FRAMES - RUN_OUT_FRAMES - 1]
    spans = []
    starts = [0] + [(b - margin) * FRAME_SAMPLES for b in borders]
    ends = [(b + SPLICE_SEARCH_FRAMES + RUN_OUT_FRAMES) * FRAME_SAMPLES for b in borders] + [samples]
    for start, end, border in zip(starts, ends, [None] + borders):
        spans.append(ChunkSpan(start, min(end, samples), border))
    return spans


@dataclass(frozen=True)
class _Frame:
    offset: int
    size: int
    main_start: int  # offset of the main data region (after header, CRC and side info)
    main_data_begin: int


def _parse_frames(data: bytes) -> tuple[bytes, list[_Frame]]:
    """(the Xing/LAME tag frame, the audio frames) of an MPEG-1 Layer III stream."""
    frames, offset = [], 0
    while offset + 4 <= len(data):
        header = int.from_bytes(data[offset : offset + 4], "big")
        if header >> 21 != 0x7FF or (header >> 19) & 3 != 3 or (header >> 17) & 3 != 1:
            raise UnsupportedStream(f"no MPEG-1 Layer III frame at byte {offset}")
        bitrate = _BITRATES_KBPS[(header >> 12) & 15] if (header >> 12) & 15 < 15 else 0
        rate_index = (header >> 10) & 3
        if not bitrate or rate_index == 3:
            raise UnsupportedStream(f"free-format or reserved frame at byte {offset}")
        size = 144 * bitrate * 1000 // _SAMPLE_RATES[rate_index] + ((header >> 9) & 1)
        crc = 0 if (header >> 16) & 1 else 2
        side_info = 17 if (header >> 6) & 3 == 3 else 32
        side = offset + 4 + crc
        main_data_begin = (data[side] << 1) | (data[side + 1] >> 7)
        frames.append(_Frame(offset, size, side + side_info, main_data_begin))
        offset += size
    if offset != len(data) or len(frames) < 2:
        raise UnsupportedStream("the stream does not end on a frame")
    tag = data[frames[0].offset : frames[0].offset + frames[0].size]
    if _tag_fields(tag) is None:
        raise UnsupportedStream("the first frame carries no Xing/LAME tag")
    return tag, frames[1:]


def _tag_fields(tag: bytes) -> tuple[int, int] | None:
    """(offset of "Xing"/"Info", offset of the LAME extension) in a tag frame, or None."""
    for at in (36, 21, 13):  # side info length after the header: stereo, mono (MPEG-1), and MPEG-2 mono
        if tag[at : at + 4] in (b"Xing", b"Info"):
            flags = int.from_bytes(tag[at + 4 : at + 8], "big")
            if flags & 0xF != 0xF:
                return None
            lame = at + 8 + 4 + 4 + _TOC_ENTRIES + 4
            return (at, lame) if tag[lame : lame + 4] == b"LAME" else None
    return None


def _crc16(data: bytes, crc: int = 0) -> int:
    """CRC-16 (polynomial 0x8005, reflected), as LAME's tag uses."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _main_region_tail(frames: list[_Frame], before: int, count: int) -> list[tuple[int, int]]:
    """(offset, length) pieces of the last ``count`` main-data bytes before frame ``before``,
    in stream order (headers and side info skipped)."""
    pieces = []
    index = before - 1
    while count > 0:
        if index < 0:
            raise UnsupportedStream("main_data_begin reaches before the first frame")
        frame = frames[index]
        room = frame.offset + frame.size - frame.main_start
        take = min(room, count)
        pieces.append((frame.offset + frame.size - take, take))
        count -= take
        index -= 1
    return pieces[::-1]


def _find_splice(a: list[_Frame], a_first: int, b: list[_Frame], b_first: int, border: int) -> int | None:
    """A song frame near ``border`` where chunk b can take over from chunk a (module docstring)."""
    for distance in range(SPLICE_SEARCH_FRAMES + 1):
        for j in (border - distance, border + distance) if distance else (border,):
            ia, ib = j - a_first, j - b_first
            if not (0 <= ia < len(a) and WARM_UP_FRAMES <= ib < len(b)):
                continue
            if b[ib].main_data_begin <= a[ia].main_data_begin and ia + RUN_OUT_FRAMES <= len(a):
                return j
    return None


@dataclass(frozen=True)
class JoinedMp3:
    data: bytes
    splice_samples: tuple[int, ...]  # source sample where each later chunk's frames take over


def join_chunks(encoded: Sequence[bytes], spans: Sequence[ChunkSpan], samples: int) -> JoinedMp3:
    """One stream from chunk encodes of ``spans``; raises UnsupportedStream where they cannot be joined."""
    parsed = [_parse_frames(data) for data in encoded]
    firsts = [span.start // FRAME_SAMPLES for span in spans]
    # The song frame where each chunk takes over (the first chunk: 0) and where it stops.
    takeovers = [0]
    for k in range(1, len(spans)):
        j = _find_splice(parsed[k - 1][1], firsts[k - 1], parsed[k][1], firsts[k], spans[k].border)
        if j is None or j <= takeovers[-1]:
            raise UnsupportedStream(f"no splice point near frame {spans[k].border}")
        takeovers.append(j)
    stops = takeovers[1:] + [firsts[-1] + len(parsed[-1][1])]

    out = bytearray()
    out_frames: list[tuple[int, int, int]] = []  # (offset, size, main_start) of each frame in `out`
    for k, (data, (_, frames)) in enumerate(zip(encoded, parsed)):
        first, last = takeovers[k] - firsts[k], stops[k] - firsts[k]
        if k:
            # Chunk k's reservoir bytes go where the previous chunk's dropped frame had its data.
            need = frames[first].main_data_begin
            reservoir = b"".join(data[o : o + n] for o, n in _main_region_tail(frames, first, need))
            for offset, length in _tail_in_output(out_frames, need):
                out[offset : offset + length] = reservoir[:length]
                reservoir = reservoir[length:]
        for frame in frames[first:last]:
            out_frames.append((len(out), frame.size, len(out) + frame.main_start - frame.offset))
            out += data[frame.offset : frame.offset + frame.size]

    tag = _rewrite_tag(parsed[0][0], out_frames, bytes(out), samples)
    splices = tuple(j * FRAME_SAMPLES - ENCODER_DELAY for j in takeovers[1:])
    return JoinedMp3(tag + bytes(out), splices)


def _tail_in_output(out_frames: list[tuple[int, int, int]], count: int) -> list[tuple[int, int]]:
    """(offset, length) pieces of the last ``count`` main-data bytes written so far, in stream order."""
    frames = [_Frame(offset, size, main_start, 0) for offset, size, main_start in out_frames]
    return _main_region_tail(frames, len(frames), count)


def _rewrite_tag(tag: bytes, out_frames: list[tuple[int, int, int]], music: bytes, samples: int) -> bytes:
    """The first chunk's tag frame, describing the joined stream."""
    xing, lame = _tag_fields(tag)
    tag = bytearray(tag)
    frame_count = len(out_frames)
    total_bytes = len(tag) + len(music)
    tag[xing + 8 : xing + 12] = frame_count.to_bytes(4, "big")
    tag[xing + 12 : xing + 16] = total_bytes.to_bytes(4, "big")
    for i in range(_TOC_ENTRIES):
        offset = len(tag) + out_frames[min(frame_count - 1, i * frame_count // _TOC_ENTRIES)][0]
        tag[xing + 16 + i] = min(255, 256 * offset // total_bytes)
    delay = ((tag[lame + 21] << 4) | (tag[lame + 22] >> 4))
    padding = frame_count * FRAME_SAMPLES - delay - samples
    if not 0 <= padding < 4096:
        raise UnsupportedStream(f"end padding {padding} does not fit the LAME tag")
    tag[lame + 22] = (tag[lame + 22] & 0xF0) | (padding >> 8)
    tag[lame + 23] = padding & 0xFF
    tag[lame + 28 : lame + 32] = total_bytes.to_bytes(4, "big")
    tag[lame + 32 : lame + 34] = _crc16(music).to_bytes(2, "big")
    tag[lame + 34 : lame + 36] = _crc16(bytes(tag[: lame + 34])).to_bytes(2, "big")
    return bytes(tag)


def encode_mp3_chunked(frames: np.ndarray, sample_rate: int, chunks: int, run_all: RunAll) -> JoinedMp3:
    """``frames`` [samples, channels] float32 as one MP3, its chunks encoded through ``run_all``
    (which runs the callables, in parallel where it can, and returns their results in order)."""
    samples = len(frames)
    spans = plan_chunks(samples, sample_rate, chunks)
    if len(spans) > 1:
        encoded = run_all([_encoder(frames[span.start : span.end], sample_rate) for span in spans])
        try:
            return join_chunks(encoded, spans, samples)
        except UnsupportedStream as why:
            log.info("MP3 chunks not joined (%s); encoding in one pass", why)
    return JoinedMp3(run_all([_encoder(frames, sample_rate)])[0], ())


def _encoder(frames: np.ndarray, sample_rate: int) -> Callable[[], bytes]:
    return lambda: encode_single(frames, sample_rate)
