"""Where the time goes: per-stage timings, real-time factor, and the server's overhead.

For each config (the demo "tiny" checkpoints and a mid-size random config) this script
1. calls MusicEngine.generate directly and prints each stage's time and the real-time factor
   (seconds of compute per second of audio), then
2. serves the same checkpoints with `acestep-api serve` in its own process (as a client
   meets it), submits the same request over HTTP, polls /query_result every 10 ms, and prints the server's overhead over the
   direct engine call for the same request.

    .venv/bin/python bench/bench_pipeline.py [--duration 30] [--repeats 3] [--configs tiny,mid]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from acestep_api.engine.engine import MusicEngine
from acestep_api.engine.request import GenerationRequest
from acestep_api.engine.tiny import MID_SIZE_DIT, write_tiny_checkpoints

STAGES = ("text_encoding", "diffusion", "decoding", "encoding")
# A client polling every 10 ms sees completion at most this late; it is part of the overhead.
POLL_SECONDS = 0.01


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_engine(config: str, root: Path) -> MusicEngine:
    overrides = MID_SIZE_DIT if config == "mid" else None
    write_tiny_checkpoints(root, dit_overrides=overrides)
    return MusicEngine.from_checkpoints(root, ["acestep-v15-turbo"], root / "out" / "api_audio", device="cpu")


def direct_runs(engine: MusicEngine, request: GenerationRequest, repeats: int) -> list[dict]:
    engine.generate(request)  # warm-up: first-call allocations and lazy imports
    return [engine.generate(request).timings for _ in range(repeats)]


def start_server(root: Path, port: int) -> subprocess.Popen:
    """`acestep-api serve` in its own process, on the same checkpoints: what a client meets."""
    env = {**os.environ, "ACESTEP_CONFIG_PATH": "acestep-v15-turbo", "ACESTEP_CONFIG_PATH2": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "acestep_api", "serve", "--checkpoint-dir", str(root),
         "--output-dir", str(root / "served"), "--port", str(port), "--device", "cpu"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


def served_runs(root: Path, request: GenerationRequest, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds from submit to "done" seen by a polling client, per job; and /health latencies
    measured while jobs ran (a separate pass, so the probes do not inflate the first figure)."""
    port = free_port()
    proc = start_server(root, port)
    body = request.model_dump(mode="json", exclude={"seeds", "use_random_seed"})
    body.update(seed=",".join(map(str, request.seeds)), use_random_seed=False)
    times, health = [], []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for run in range(2 * repeats + 1):  # run 0 warms up; then timed runs; then probed runs
                probing = run > repeats
                start = time.perf_counter()
                task_id = client.post("/release_task", json=body).json()["data"]["task_id"]
                while client.post("/query_result", json={"task_id_list": [task_id]}).json()["data"][0]["status"] == 0:
                    if probing:
                        probe = time.perf_counter()
                        client.get("/health")
                        health.append(time.perf_counter() - probe)
                    time.sleep(POLL_SECONDS)
                if 0 < run <= repeats:
                    times.append(time.perf_counter() - start)
    finally:
        proc.terminate()
        proc.wait()
    return times, health


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", default="tiny,mid")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, fp32")

    for config in args.configs.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            engine = build_engine(config, Path(tmp))
            request = GenerationRequest(prompt="bench", lyrics="[inst]", audio_duration=args.duration,
                                        batch_size=args.batch_size, use_random_seed=False,
                                        seeds=list(range(args.batch_size)), audio_format="mp3")
            direct = direct_runs(engine, request, args.repeats)
            served, health = served_runs(Path(tmp), request, args.repeats)

        total = statistics.median(t["total"] for t in direct)
        audio_seconds = args.duration * args.batch_size
        print(f"\n[{config}] {args.duration:.0f} s x {args.batch_size}, median of {args.repeats}")
        for stage in STAGES:
            values = [t[stage] for t in direct if stage in t]
            if values:
                print(f"  {stage:<14} {statistics.median(values):8.3f} s")
        print(f"  {'engine total':<14} {total:8.3f} s   real-time factor {total / audio_seconds:.4f} "
              f"({audio_seconds / total:.1f}x faster than real time)")
        served_median = statistics.median(served)
        print(f"  {'via server':<14} {served_median:8.3f} s   overhead {served_median - total:+.3f} s "
              f"({100 * (served_median - total) / total:+.1f}%)")
        if health:
            health.sort()
            print(f"  /health while a job runs: median {1000 * statistics.median(health):.1f} ms, "
                  f"max {1000 * health[-1]:.1f} ms over {len(health)} calls")


if __name__ == "__main__":
    main()
