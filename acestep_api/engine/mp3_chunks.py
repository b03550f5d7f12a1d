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


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc16_table()
_CRC_TABLE_NP = np.array(_CRC_TABLE, dtype=np.uint16)
_CRC_BLOCK = 1024


def _crc16_bytes(data: bytes, crc: int = 0) -> int:
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def _crc16(data: bytes) -> int:
    """CRC-16/ARC (polynomial 0x8005 reflected, initial value 0), as LAME's tag uses.

    A music stream has megabytes: blocks of ``_CRC_BLOCK`` bytes are run side by side with
    numpy, and their CRCs combined. The CRC is linear over GF(2) with no initial value, so
    crc(A + B) = shift(crc(A), len(B)) ^ crc(B), where shift feeds zero bytes."""
    blocks = len(data) // _CRC_BLOCK
    if blocks < 2:
        return _crc16_bytes(data)
    rows = np.frombuffer(data, dtype=np.uint8, count=blocks * _CRC_BLOCK).reshape(blocks, _CRC_BLOCK)
    states = np.zeros(blocks, dtype=np.uint16)
    for column in range(_CRC_BLOCK):
        states = (states >> 8) ^ _CRC_TABLE_NP[(states ^ rows[:, column]) & 0xFF]
    # The shift over one block, per state bit (zero bytes fed from that bit alone).
    shift = [_crc16_bytes(bytes(_CRC_BLOCK), 1 << bit) for bit in range(16)]
    crc = 0
    for block_crc in states.tolist():
        shifted = 0
        for bit in range(16):
            if crc >> bit & 1:
                shifted ^= shift[bit]
        crc = shifted ^ block_crc
    return _crc16_bytes(data[blocks * _CRC_BLOCK :], crc)


@dataclass
class _Chunk:
    """One chunk's encode: its frames, and its main data as one byte stream (the frames' main
    data regions end to end, the space ``main_data_begin`` counts in)."""

    data: bytes
    tag: bytes
    frames: list[_Frame]
    main: bytes
    region: list[int]  # where each frame's region starts in `main`; one more entry: the end

    @classmethod
    def parse(cls, data: bytes) -> "_Chunk":
        tag, frames = _parse_frames(data)
        main = b"".join(data[f.main_start : f.offset + f.size] for f in frames)
        region = [0]
        for frame in frames:
            region.append(region[-1] + frame.offset + frame.size - frame.main_start)
        return cls(data, tag, frames, main, region)

    def data_start(self, index: int) -> int:
        """Where frame ``index``'s main data starts in `main`."""
        return self.region[index] - self.frames[index].main_data_begin

    def head(self, index: int) -> bytes:
        """Frame ``index``'s header, CRC and side info."""
        frame = self.frames[index]
        return self.data[frame.offset : frame.main_start]


def _find_splice(a: _Chunk, a_first: int, b: _Chunk, b_first: int, border: int) -> int | None:
    """The song frame near ``border`` where chunk b takes over from chunk a: the nearest whose
    reservoir bytes fit in what chunk a leaves free there, else the nearest whose frame can be
    widened by the bytes missing (see join_chunks); None if there is neither."""
    candidates = []
    for distance in range(SPLICE_SEARCH_FRAMES + 1):
        for j in (border - distance, border + distance) if distance else (border,):
            ia, ib = j - a_first, j - b_first
            if WARM_UP_FRAMES <= ib < len(b.frames) - 1 and 0 <= ia <= len(a.frames) - RUN_OUT_FRAMES:
                missing = b.frames[ib].main_data_begin - a.frames[ia].main_data_begin
                if missing <= 0:
                    return j
                candidates.append((j, missing))
    for j, missing in candidates:
        try:
            _widened(b.head(j - b_first), missing)
        except UnsupportedStream:
            continue
        return j
    return None


def _widened(head: bytes, growth: int) -> tuple[bytes, int]:
    """``head`` with the lowest bitrate whose frame is at least ``growth`` bytes larger, and
    how many bytes larger it is."""
    header = int.from_bytes(head[:4], "big")
    if not (header >> 16) & 1:
        raise UnsupportedStream("a CRC-protected frame cannot be widened")
    index, rate = (header >> 12) & 15, _SAMPLE_RATES[(header >> 10) & 3]
    size = lambda i: 144 * _BITRATES_KBPS[i] * 1000 // rate  # noqa: E731
    for wider in range(index + 1, len(_BITRATES_KBPS)):
        if size(wider) - size(index) >= growth:
            header = (header & ~(15 << 12)) | (wider << 12)
            return header.to_bytes(4, "big") + head[4:], size(wider) - size(index)
    raise UnsupportedStream(f"no bitrate leaves {growth} more bytes")


def _with_main_data_begin(head: bytes, value: int) -> bytes:
    side = 4 if (int.from_bytes(head[:4], "big") >> 16) & 1 else 6
    head = bytearray(head)
    head[side] = value >> 1
    head[side + 1] = (head[side + 1] & 0x7F) | ((value & 1) << 7)
    return bytes(head)


@dataclass(frozen=True)
class JoinedMp3:
    data: bytes
    splice_samples: tuple[int, ...]  # source sample where each later chunk's frames take over
    widened: int = 0  # splices where a frame got a higher bitrate to hold the reservoir


def join_chunks(encoded: Sequence[bytes], spans: Sequence[ChunkSpan], samples: int) -> JoinedMp3:
    """One stream from chunk encodes of ``spans``; raises UnsupportedStream where they cannot be joined.

    The output is built as frame heads plus one main-data stream. Chunk k's frames from its
    takeover frame j on keep their own main-data layout (their bytes and back-pointers), so they
    decode as in chunk k. Its reservoir bytes (the ``main_data_begin`` bytes before frame j)
    go where chunk k-1 left room: the bytes its own frame j (dropped) used. If chunk k needs
    more than that, frame j's main data is put right after chunk k-1's, frame j gets a higher
    bitrate (a larger frame) so that frame j+1 finds chunk k's own layout again, and the
    bytes between are stuffing no decoder reads.
    """
    chunks = [_Chunk.parse(data) for data in encoded]
    firsts = [span.start // FRAME_SAMPLES for span in spans]
    takeovers = [0]
    for k in range(1, len(spans)):
        j = _find_splice(chunks[k - 1], firsts[k - 1], chunks[k], firsts[k], spans[k].border)
        if j is None or j <= takeovers[-1]:
            raise UnsupportedStream(f"no splice point near frame {spans[k].border}")
        takeovers.append(j)
    stops = takeovers[1:] + [firsts[-1] + len(chunks[-1].frames)]

    heads: list[bytes] = []
    sizes: list[int] = []  # region size of each output frame
    main = bytearray()
    widened = 0
    for k, chunk in enumerate(chunks):
        first, last = takeovers[k] - firsts[k], stops[k] - firsts[k]
        if k:
            previous = chunks[k - 1]
            free_from = len(main) - previous.frames[takeovers[k] - firsts[k - 1]].main_data_begin
            need = chunk.frames[first].main_data_begin
            if len(main) - need >= free_from:
                main[len(main) - need :] = chunk.main[chunk.data_start(first) : chunk.region[first]]
            else:
                # Frame `first` widened: its data follows chunk k-1's, chunk k's layout resumes after it.
                head, growth = _widened(chunk.head(first), need - (len(main) - free_from))
                heads.append(_with_main_data_begin(head, len(main) - free_from))
                size = chunk.region[first + 1] - chunk.region[first] + growth
                next_region = len(main) + size
                block = chunk.main[chunk.data_start(first) : chunk.data_start(first + 1)]
                resume = next_region - chunk.frames[first + 1].main_data_begin
                if resume < free_from + len(block):
                    raise UnsupportedStream("the widened frame does not hold its data")
                del main[free_from:]
                main += block + bytes(resume - len(main) - len(block))
                main += chunk.main[chunk.data_start(first + 1) : chunk.region[first + 1]]
                sizes.append(size)
                widened += 1
                first += 1
        for index in range(first, last):
            heads.append(chunk.head(index))
            sizes.append(chunk.region[index + 1] - chunk.region[index])
            main += chunk.main[chunk.region[index] : chunk.region[index + 1]]

    music, offsets, at = bytearray(), [], 0
    for head, size in zip(heads, sizes):
        offsets.append(len(music))
        music += head + main[at : at + size]
        at += size
    tag = _rewrite_tag(chunks[0].tag, offsets, bytes(music), samples)
    splices = tuple(j * FRAME_SAMPLES - ENCODER_DELAY for j in takeovers[1:])
    return JoinedMp3(tag + bytes(music), splices, widened)


def _rewrite_tag(tag: bytes, offsets: list[int], music: bytes, samples: int) -> bytes:
    """The first chunk's tag frame, describing the joined stream (``offsets``: each frame's in ``music``)."""
    xing, lame = _tag_fields(tag)
    tag = bytearray(tag)
    frame_count = len(offsets)
    total_bytes = len(tag) + len(music)
    tag[xing + 8 : xing + 12] = frame_count.to_bytes(4, "big")
    tag[xing + 12 : xing + 16] = total_bytes.to_bytes(4, "big")
    for i in range(_TOC_ENTRIES):
        offset = len(tag) + offsets[min(frame_count - 1, i * frame_count // _TOC_ENTRIES)]
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
