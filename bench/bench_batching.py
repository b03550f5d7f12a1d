"""Songs per hour for a queue of compatible jobs, with batching on and off, side by side.

For each config (the demo "tiny" checkpoints and a mid-size random DiT) the same queue of
``--jobs`` text2music jobs (one song each, the same duration and settings, each its own
caption, lyrics and seed) runs through the real queue and worker (jobs/queue.py,
jobs/worker.py) with ``batch_max_items`` 1 (off) and ``--max-items`` (on), in one process,
alternating off/on for ``--repeats`` rounds so both see the same machine. The time is from the
worker's start to the last job's files written (WAV, so the encoder does not hide the DiT); the
best round of each mode is printed as songs per hour, and the ratio on/off.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_batching.py [--jobs 16] [--duration 10] [--configs tiny,mid]

Run it on a quiet machine (`uptime`): it measures throughput, so a busy core shows as a slower mode.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import torch

from acestep_api.engine.engine import MusicEngine
from acestep_api.engine.request import GenerationRequest
from acestep_api.engine.tiny import MID_SIZE_DIT, write_tiny_checkpoints
from acestep_api.jobs.models import JobStatus
from acestep_api.jobs.queue import JobQueue
from acestep_api.jobs.store import JobStore
from acestep_api.jobs.worker import JobWorker

CAPTIONS = ("calm piano ballad", "driving synthwave with arpeggios", "acoustic folk, warm guitar and a soft voice",
            "dark techno", "big band swing with brass and a walking bass line", "lo-fi hip hop")


def build_engine(config: str, root: Path) -> MusicEngine:
    write_tiny_checkpoints(root, dit_overrides=MID_SIZE_DIT if config == "mid" else None)
    return MusicEngine.from_checkpoints(root, ["acestep-v15-turbo"], root / "audio", device="cpu", init_llm="off")


def queue_of(jobs: int, duration: float) -> list[GenerationRequest]:
    return [
        GenerationRequest(prompt=CAPTIONS[i % len(CAPTIONS)], lyrics=f"[verse]\nline {i} " * (1 + i % 4),
                          audio_duration=duration, batch_size=1, use_random_seed=False, seeds=[i],
                          audio_format="wav")
        for i in range(jobs)
    ]


def run_queue(engine: MusicEngine, requests: list[GenerationRequest], max_items: int, folder: Path) -> float:
    """Seconds from the worker's start to the last job ended; every job must succeed."""
    store = JobStore(folder / "jobs.sqlite3")
    queue = JobQueue(store, maxsize=len(requests) + 1)

    async def scenario() -> float:
        ids = [queue.submit(request)[0].id for request in requests]
        worker = JobWorker(queue, engine, encode_workers=1, batch_max_items=max_items)
        started = time.perf_counter()
        worker.start()
        try:
            while True:
                jobs = [queue.get(i) for i in ids]
                if all(job.status.ended for job in jobs):
                    elapsed = time.perf_counter() - started
                    failed = [job.error for job in jobs if job.status is not JobStatus.SUCCEEDED]
                    assert not failed, failed
                    return elapsed
                await asyncio.sleep(0.01)
        finally:
            await worker.stop()

    try:
        return asyncio.run(scenario())
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-items", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--configs", default="tiny,mid")
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), "
          f"{args.jobs} jobs of {args.duration:g} s, batching on = {args.max_items} items per call")
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs.split(","):
            engine = build_engine(config, Path(tmp) / config)
            requests = queue_of(args.jobs, args.duration)
            run_queue(engine, requests[:2], 2, Path(tempfile.mkdtemp(dir=tmp)))  # warm-up: first-call costs
            best = {1: float("inf"), args.max_items: float("inf")}
            for _ in range(args.repeats):
                for max_items in best:
                    seconds = run_queue(engine, requests, max_items, Path(tempfile.mkdtemp(dir=tmp)))
                    best[max_items] = min(best[max_items], seconds)
            off, on = best[1], best[args.max_items]
            print(f"{config:5s} off: {off:7.2f} s = {args.jobs * 3600 / off:8.0f} songs/h | "
                  f"on: {on:7.2f} s = {args.jobs * 3600 / on:8.0f} songs/h | on/off {off / on:.2f}x")


if __name__ == "__main__":
    main()
