"""Where the time goes: per-stage timings, real-time factor, and the server's overhead.

For each config (the demo "tiny" checkpoints and a mid-size random DiT) this script
1. calls MusicEngine.generate directly and prints each stage's time and the real-time factor
   (seconds of compute per second of audio);
2. serves the same checkpoints with `acestep-api serve` in its own process, as a client meets
   it, submits the same request over HTTP, polls /query_result every 20 ms, and prints the
   server's overhead over the direct call (runs interleaved with the direct ones), split into
   queue + HTTP + polling and the engine's own time inside the server;
3. measures /health latency while a job runs.

    .venv/bin/python bench/bench_pipeline.py [--duration 30] [--repeats 5] [--configs tiny,mid]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
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
# A client polling every 20 ms sees completion at most this late; it is part of the overhead.
POLL_SECONDS = 0.02


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_engine(config: str, root: Path) -> MusicEngine:
    overrides = MID_SIZE_DIT if config == "mid" else None
    write_tiny_checkpoints(root, dit_overrides=overrides)
    return MusicEngine.from_checkpoints(root, ["acestep-v15-turbo"], root / "out" / "api_audio", device="cpu")


def direct_run(engine: MusicEngine, request: GenerationRequest) -> dict[str, float]:
    return dataclasses.asdict(engine.generate(request).timings)


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


def served_run(client: httpx.Client, body: dict, probe_health: bool = False) -> tuple[float, float, list[float]]:
    """(seconds from submit until the client sees the job done, the engine's own total inside
    the server, /health latencies measured while the job ran)."""
    health = []
    start = time.perf_counter()
    task_id = client.post("/release_task", json=body).json()["data"]["task_id"]
    while (item := client.post("/query_result", json={"task_id_list": [task_id]}).json()["data"][0])["status"] == 0:
        if probe_health:
            probe = time.perf_counter()
            client.get("/health")
            health.append(time.perf_counter() - probe)
        time.sleep(POLL_SECONDS)
    wall = time.perf_counter() - start
    info = json.loads(item["result"])[0]["generation_info"]
    engine_total = float(re.search(r"Total Time: ([0-9.]+)s", info).group(1))
    return wall, engine_total, health


def bench_config(config: str, args: argparse.Namespace) -> None:
    request = GenerationRequest(prompt="bench", lyrics="[inst]", audio_duration=args.duration,
                                batch_size=args.batch_size, use_random_seed=False,
                                seeds=list(range(args.batch_size)), audio_format="mp3")
    body = request.model_dump(mode="json", exclude={"seeds", "use_random_seed"})
    body.update(seed=",".join(map(str, request.seeds)), use_random_seed=False)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        engine = build_engine(config, root)
        proc = start_server(root, port := free_port())
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
                direct_run(engine, request)  # warm-ups: first-call allocations, lazy imports
                served_run(client, body)
                direct, served, inside = [], [], []
                # Interleaved, so machine noise hits both sides alike.
                for _ in range(args.repeats):
                    direct.append(direct_run(engine, request))
                    wall, engine_total, _ = served_run(client, body)
                    served.append(wall)
                    inside.append(engine_total)
                _, _, health = served_run(client, body, probe_health=True)
        finally:
            proc.terminate()
            proc.wait()

    median = statistics.median
    total = median(t["total"] for t in direct)
    audio_seconds = args.duration * args.batch_size
    print(f"\n[{config}] {args.duration:.0f} s x {args.batch_size}, median of {args.repeats}")
    for stage in STAGES:
        print(f"  {stage:<16} {median(t[stage] for t in direct):8.3f} s")
    print(f"  {'engine total':<16} {total:8.3f} s   real-time factor {total / audio_seconds:.4f} "
          f"({audio_seconds / total:.1f}x faster than real time)")
    served_median = median(served)
    queue_http = median(w - e for w, e in zip(served, inside))
    print(f"  {'via server':<16} {served_median:8.3f} s   overhead {served_median - total:+.3f} s "
          f"({100 * (served_median - total) / total:+.1f}%)")
    print(f"    of which queue + HTTP + {1000 * POLL_SECONDS:.0f} ms polling: {queue_http:+.3f} s "
          f"({100 * queue_http / total:+.1f}%); engine inside the server: {median(inside):.3f} s")
    health.sort()
    print(f"  /health while a job runs: median {1000 * median(health):.1f} ms, "
          f"max {1000 * health[-1]:.1f} ms over {len(health)} calls")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", default="tiny,mid")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, fp32")
    for config in args.configs.split(","):
        bench_config(config, args)


if __name__ == "__main__":
    main()
