"""How long writing a song's file takes, per format, with 1 and with 2 cores.

The song is a deterministic synthetic 240 s stereo 48 kHz signal shaped like music: a chord
progression of plucked harmonic notes, a bass line, noise-burst drums and a stereo spread, so
the MP3 encoder's psychoacoustic model and bit reservoir work as on a real song (pure noise or
a sine would not). Each format is written through the engine's own path (encoding.carry_out,
atomic write included) into a temporary folder; the best of ``--repeats`` runs is printed as
seconds and seconds per audio minute. The MP3 line compares 2 cores (parallel chunks) with
the single-pass encode every version before the chunked one used.

    .venv/bin/python bench/bench_encoding.py [--seconds 240] [--repeats 3] [--formats mp3,flac,wav,opus]

Run it on a quiet machine (`uptime`): with another process on a core, the 2-core figures measure
the contention, not the encoder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from acestep_api.atomic_files import atomic_path
from acestep_api.engine.encoding import EncodePlan, carry_out

RATE = 48000
CHORDS = ((0, 4, 7), (9, 12, 16), (5, 9, 12), (7, 11, 14))  # I - vi - IV - V, semitones above the root


def synthetic_song(seconds: float, seed: int = 0) -> np.ndarray:
    """[2, samples] float32 in [-1, 1], the same for the same arguments."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * RATE)
    song = np.zeros((2, samples), dtype=np.float64)
    beat = int(RATE * 60 / 120)  # 120 bpm
    root = 220.0
    for number, start in enumerate(range(0, samples, beat)):
        chord = CHORDS[(number // 8) % len(CHORDS)]
        length = min(2 * beat, samples - start)
        t = np.arange(length) / RATE
        pluck = np.exp(-3.0 * t)
        note = root * 2 ** (chord[number % 3] / 12 + rng.integers(0, 2))
        pan = 0.5 + 0.4 * np.sin(number)
        voice = sum(0.1 / h * np.sin(2 * np.pi * note * h * t + rng.uniform(0, 6)) for h in range(1, 8)) * pluck
        song[0, start : start + length] += (1 - pan) * voice
        song[1, start : start + length] += pan * voice
        bass = 0.2 * np.sin(2 * np.pi * root / 4 * 2 ** (chord[0] / 12) * t) * np.exp(-1.5 * t)
        song[:, start : start + length] += bass
        hit = min(beat // 4 if number % 2 else beat // 2, samples - start)
        decay = np.exp(-np.arange(hit) / (RATE * (0.01 if number % 2 else 0.04)))
        song[:, start : start + hit] += 0.25 * rng.standard_normal((2, hit)) * decay
    song /= max(1.0, float(np.abs(song).max()) / 0.9)
    return song.astype(np.float32)


def best_seconds(plan: EncodePlan, workers: int, repeats: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of the fastest of ``repeats`` writes."""
    runs = []
    for _ in range(repeats):
        cpu, started = _cpu_seconds(), time.perf_counter()
        paths = carry_out(plan, workers=workers)
        runs.append((time.perf_counter() - started, _cpu_seconds() - cpu))
        for path in paths:
            os.remove(path)
    return min(runs)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def single_pass_seconds(wave: np.ndarray, path: Path, repeats: int) -> float:
    """The MP3 write as the engine did it before the encoding pool: libsndfile straight to the file."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        # As engine/audio.py's write_audio did: clip, to [samples, channels] float32, write.
        frames = np.ascontiguousarray(np.clip(wave, -1.0, 1.0).T, dtype=np.float32)
        with atomic_path(path) as temp:
            sf.write(temp, frames, RATE, format="MP3", subtype="MPEG_LAYER_III")
        times.append(time.perf_counter() - started)
        os.remove(path)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--formats", default="mp3,flac,wav,opus")
    args = parser.parse_args()

    wave = synthetic_song(args.seconds)
    minutes = args.seconds / 60
    print(f"{args.seconds:.0f} s stereo {RATE} Hz synthetic song; best of {args.repeats}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    # CPU / wall: the cores the write kept busy (2.0 at best with 2 cores, less when others run).
    print(f"{'format':<7}{'cores':>6}{'seconds':>10}{'s / audio min':>15}{'CPU / wall':>12}")
    results: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for fmt in args.formats.split(","):
            plan = EncodePlan(fmt, RATE, (Path(folder) / f"song.{fmt}",), (wave,))
            for workers in (1, 2):
                seconds, cpu = best_seconds(plan, workers, args.repeats)
                results[fmt, workers] = seconds
                print(f"{fmt:<7}{workers:>6}{seconds:>10.3f}{seconds / minutes:>15.3f}{cpu / seconds:>12.2f}")
        if ("mp3", 2) in results:
            single = single_pass_seconds(wave, Path(folder) / "before.mp3", args.repeats)
            print(f"mp3 single pass as written before the pool (sf.write to the file): {single:.3f} s; "
                  f"speed-up with 2 cores: {single / results['mp3', 2]:.2f}x "
                  f"(1 core through the pool: {results['mp3', 1]:.3f} s)")


if __name__ == "__main__":
    main()
