"""A long MP3 encoded as parallel chunks: joined without a seam, to the source's length, close
to a single-pass encode; and the encode plan's files appear whole or not at all."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acestep_api.engine import mp3_chunks
from acestep_api.engine.audio import write_audio
from acestep_api.engine.encoding import FILE_EXTENSIONS, EncodePlan, carry_out
from tests.audio_files import length_matches, read_audio

RATE = 48000
# Around each splice, the decoder's overlap-add spans one granule (576 samples) each side; 4
# frames each side hold it with room to spare.
BORDER = 4 * mp3_chunks.FRAME_SAMPLES
# A single-pass LAME encode of this signal is about 16 dB from the source; a seam, a lost or
# doubled frame or a misaligned chunk brings two decodes to that level or below. 40 dB leaves
# the chunked decode a hundred times closer to the single-pass one than the codec's own error.
MIN_SNR_DB = 40.0
# One 16-bit step: both decodes are the same codec's output, which players round to 16 bits.
LSB = 2.0**-15


def music(seconds: float, channels: int = 2, seed: int = 0) -> np.ndarray:
    """[samples, channels] float32: plucked harmonic notes on a beat, with noise-burst drums."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * RATE)
    out = np.zeros((channels, samples))
    beat = int(0.25 * RATE)
    for start in range(0, samples, beat):
        span = np.arange(min(beat * 2, samples - start)) / RATE
        pitch = 110 * 2 ** (rng.integers(0, 24) / 12)
        envelope = np.exp(-4 * span)
        for harmonic in range(1, 7):
            for channel in range(channels):
                detune = 1 + 0.002 * channel
                out[channel, start : start + len(span)] += (
                    0.08 / harmonic * envelope * np.sin(2 * np.pi * pitch * harmonic * detune * span + channel))
        if (start // beat) % 2 == 0:
            hit = min(3000, samples - start)
            out[:, start : start + hit] += 0.15 * rng.standard_normal((channels, hit)) * np.exp(-np.arange(hit) / 500)
    return np.ascontiguousarray(out.T, dtype=np.float32)


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(max_workers=3) as executor:
        yield lambda pieces: list(executor.map(lambda piece: piece(), pieces))


def decode(data: bytes) -> np.ndarray:
    return sf.read(io.BytesIO(data), dtype="float32", always_2d=True)[0]


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(((reference - other) ** 2).sum())
    return float("inf") if noise == 0 else 10 * np.log10(float((reference**2).sum()) / noise)


@pytest.mark.parametrize("seconds, channels, chunks", [(75.0, 2, 3), (31.37, 1, 2)])
def test_chunked_mp3_has_the_source_length_and_no_seam(pool, seconds, channels, chunks):
    source = music(seconds, channels)
    single = decode(mp3_chunks.encode_single(source, RATE))
    joined = mp3_chunks.encode_mp3_chunked(source, RATE, chunks, pool)
    assert len(joined.splice_samples) == chunks - 1  # joined, not the single-pass fallback
    chunked = decode(joined.data)

    # Encoder delay and end padding are trimmed by the decoder from the rewritten LAME tag.
    assert chunked.shape == single.shape == source.shape
    assert snr_db(single, chunked) >= MIN_SNR_DB
    difference = np.abs(single - chunked).max(axis=1)
    near = np.zeros(len(source), dtype=bool)
    for splice in joined.splice_samples:
        near[max(0, splice - BORDER) : splice + BORDER] = True
    elsewhere = difference[~near].max()
    assert difference[near].max() <= elsewhere + LSB


def test_the_joined_stream_carries_a_consistent_lame_tag(pool):
    source = music(40.0)
    joined = mp3_chunks.encode_mp3_chunked(source, RATE, 2, pool)
    tag, frames = mp3_chunks._parse_frames(joined.data)
    xing, lame = mp3_chunks._tag_fields(tag)
    assert int.from_bytes(tag[xing + 8 : xing + 12], "big") == len(frames)
    assert int.from_bytes(tag[xing + 12 : xing + 16], "big") == len(joined.data)
    assert int.from_bytes(tag[lame + 34 : lame + 36], "big") == mp3_chunks._crc16(tag[: lame + 34])
    assert int.from_bytes(tag[lame + 32 : lame + 34], "big") == mp3_chunks._crc16(joined.data[len(tag) :])
    assert sf.info(io.BytesIO(joined.data)).frames == len(source)


def test_no_splice_point_falls_back_to_one_pass(pool, monkeypatch):
    source = music(25.0)
    monkeypatch.setattr(mp3_chunks, "_find_splice", lambda *args: None)
    joined = mp3_chunks.encode_mp3_chunked(source, RATE, 2, pool)
    assert joined.splice_samples == () and joined.data == mp3_chunks.encode_single(source, RATE)


def test_short_songs_are_one_chunk():
    assert len(mp3_chunks.plan_chunks(int(15 * RATE), RATE, 8)) == 1
    spans = mp3_chunks.plan_chunks(int(240 * RATE), RATE, 2)
    assert len(spans) == 2 and spans[0].start == 0 and spans[-1].end == 240 * RATE
    assert all(span.start % mp3_chunks.FRAME_SAMPLES == 0 for span in spans)


@pytest.mark.parametrize("fmt", ["mp3", "flac", "wav", "opus", "wav32", "aac"])
def test_write_audio_with_two_workers_reads_back_whole(tmp_path, fmt):
    source = music(24.0)
    name = f"song{FILE_EXTENSIONS[fmt]}"
    path = write_audio(source.T, tmp_path / name, fmt, workers=2)
    assert length_matches(path, len(read_audio(path)[0]), len(source))
    assert os.listdir(tmp_path) == [name]


def test_a_failed_or_cancelled_plan_leaves_no_file(tmp_path):
    wave = music(2.0).T
    # libsndfile's Opus encoder refuses 44.1 kHz: the second file fails after the first is written.
    plan = EncodePlan("opus", 48000, (tmp_path / "a.opus", tmp_path / "b.opus"), (wave, wave))
    failing = EncodePlan("opus", 44100, (tmp_path / "c.opus",), (wave,))
    with pytest.raises(Exception):
        carry_out(EncodePlan("opus", 44100, plan.targets, plan.waves), workers=2)
    assert os.listdir(tmp_path) == []
    with pytest.raises(Exception):
        carry_out(failing, workers=1)
    assert os.listdir(tmp_path) == []

    calls = []

    def cancel_after_first_file(fraction: float, stage: str) -> None:
        calls.append(fraction)
        if len(calls) == 3:  # start, first file done, second file done: stop there
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        carry_out(plan, workers=1, progress=cancel_after_first_file)
    assert os.listdir(tmp_path) == []
    assert [Path(p).name for p in carry_out(plan, workers=2)] == ["a.opus", "b.opus"]


def test_every_splice_point_in_the_window_joins_exactly(pool, monkeypatch):
    """Splices where the later chunk's reservoir fits in the room left, and splices where the
    first kept frame is widened to a higher bitrate: both decode like the single pass."""
    source = music(30.0)
    single = decode(mp3_chunks.encode_single(source, RATE))
    spans = mp3_chunks.plan_chunks(len(source), RATE, 2)
    encoded = pool([lambda span=span: mp3_chunks.encode_single(source[span.start : span.end], RATE) for span in spans])
    border = spans[1].border
    widened = 0
    for j in range(border - mp3_chunks.SPLICE_SEARCH_FRAMES, border + mp3_chunks.SPLICE_SEARCH_FRAMES + 1):
        monkeypatch.setattr(mp3_chunks, "_find_splice", lambda *args, j=j: j)
        try:
            joined = mp3_chunks.join_chunks(encoded, spans, len(source))
        except mp3_chunks.UnsupportedStream:
            continue  # a frame already at the top bitrate cannot be widened; the search skips it
        widened += joined.widened
        chunked = decode(joined.data)
        assert chunked.shape == source.shape
        assert snr_db(single, chunked) >= MIN_SNR_DB
    assert widened > 0
