"""Where the time goes: per-stage timings, real-time factor, and the server's overhead.

For each config (the demo "tiny" checkpoints and a mid-size random config) this script
1. calls MusicEngine.generate directly and prints each stage's time and the real-time factor
   (seconds of compute per second of audio), then
2. serves the same engine through the real app on a loopback uvicorn server, submits the
   same request over HTTP, polls /query_result, and prints the server's overhead over the
   direct engine call for the same request.

    .venv/bin/python bench/bench_pipeline.py [--duration 30] [--repeats 3] [--configs tiny,mid]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch
import uvicorn

from acestep_api.engine.engine import MusicEngine
from acestep_api.engine.request import GenerationRequest
from acestep_api.engine.tiny import MID_SIZE_DIT, write_tiny_checkpoints
from acestep_api.server.app import create_app
from acestep_api.settings import Settings
from tests.e2e.server_process import free_port

STAGES = ("text_encoding", "conditioning", "diffusion", "decoding", "encoding")


def build_engine(config: str, root: Path) -> MusicEngine:
    overrides = MID_SIZE_DIT if config == "mid" else None
    write_tiny_checkpoints(root, dit_overrides=overrides)
    return MusicEngine.from_checkpoints(root, ["acestep-v15-turbo"], root / "out" / "api_audio", device="cpu")


def direct_runs(engine: MusicEngine, request: GenerationRequest, repeats: int) -> list[dict]:
    engine.generate(request)  # warm-up: first-call allocations and lazy imports
    return [engine.generate(request).timings for _ in range(repeats)]


def served_runs(engine: MusicEngine, root: Path, request: GenerationRequest, repeats: int) -> list[float]:
    settings = Settings(output_dir=root / "out", checkpoint_dir=root, api_port=free_port())
    server = uvicorn.Server(uvicorn.Config(create_app(settings, engine=engine), host="127.0.0.1",
                                           port=settings.api_port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    body = request.model_dump(mode="json", exclude={"seeds", "use_random_seed"})
    body.update(seed=",".join(map(str, request.seeds)), use_random_seed=False)
    times = []
    with httpx.Client(base_url=f"http://127.0.0.1:{settings.api_port}", timeout=60) as client:
        for _ in range(repeats + 1):
            start = time.perf_counter()
            task_id = client.post("/release_task", json=body).json()["data"]["task_id"]
            while client.post("/query_result", json={"task_id_list": [task_id]}).json()["data"][0]["status"] == 0:
                time.sleep(0.005)
            times.append(time.perf_counter() - start)
    server.should_exit = True
    thread.join()
    return times[1:]  # the first run is the warm-up


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
            served = served_runs(engine, Path(tmp), request, args.repeats)

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


if __name__ == "__main__":
    main()
