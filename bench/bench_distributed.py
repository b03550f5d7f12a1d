"""Throughput and polling latency of the distributed mode on this machine.

For 1, 2 and 4 GPU workers (`acestep-api worker --demo`, CPU, OMP_NUM_THREADS=1 each) and one
API replica on a throwaway PostgreSQL: the songs per minute for a queue of 32 jobs (demo
checkpoints, 10 s songs), and the latency of POST /query_result on the replica while those
jobs run, with 10,000 finished jobs stored besides (p50 / p99 over the polls, measured by the
client, HTTP included; the goal is a p99 under 10 ms).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_distributed.py [--jobs 32] [--workers 1,2,4]

PostgreSQL comes from tests/postgres_server.py (initdb + pg_ctl on a free port, as the tests).
On a machine with fewer cores than workers the figures measure the contention, not the queue.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

from acestep_api.jobs.distributed.schema import migrate
from tests.e2e.distributed_processes import ReplicaProcess, WorkerProcess
from tests.postgres_server import PostgresServer

SONG = {"prompt": "bench", "audio_duration": 10, "inference_steps": 8, "audio_format": "wav"}
STORED_JOBS = 10_000


def store_finished_jobs(url: str, count: int) -> list[str]:
    """`count` finished jobs as one real job's row, under new ids (a replica's history)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO acestep_jobs (id, api, status, created_at, started_at, finished_at, progress, stage, "
            "request, result, error, attempts, temp_files, run_marker, kind, queue) "
            "SELECT 'stored-' || n, api, status, created_at, started_at, finished_at, progress, stage, request, "
            "result, error, attempts, temp_files, run_marker, kind, queue FROM acestep_jobs, "
            "generate_series(1, %s) AS n WHERE status = 'succeeded' AND id = "
            "(SELECT id FROM acestep_jobs WHERE status = 'succeeded' LIMIT 1)", (count,))
    return [f"stored-{n}" for n in range(1, count + 1)]


def poll_latencies(base_url: str, ids: list[str], stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while not stop.is_set():
            body = {"task_id_list": [random.choice(ids)]}
            started = time.perf_counter()
            response = client.post("/query_result", json=body)
            out.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            time.sleep(0.01)


def run(server: PostgresServer, folder: Path, workers: int, jobs: int, stored: list[str] | None) -> tuple:
    url = server.url(server.create_database())
    migrate(url)
    out = folder / f"outputs-{workers}"
    replica = ReplicaProcess(out, url).start()
    procs = [WorkerProcess(out, url, f"bench-{workers}-{i}").start() for i in range(workers)]
    try:
        for proc in procs:
            proc.wait_registered()
        with httpx.Client(base_url=replica.url, timeout=30) as client:
            # One song first, so stored history has a real row to copy and the models are warm.
            warm = client.post("/release_task", json=SONG).json()["data"]["task_id"]
            wait_all(client, [warm])
            history = store_finished_jobs(url, STORED_JOBS) if stored is not None else []
            started = time.monotonic()
            ids = [client.post("/release_task", json={**SONG, "prompt": f"bench {i}"}).json()["data"]["task_id"]
                   for i in range(jobs)]
            latencies: list[float] = []
            stop = threading.Event()
            poller = threading.Thread(target=poll_latencies, args=(replica.url, history + ids, stop, latencies))
            if stored is not None:
                poller.start()
            wait_all(client, ids)
            elapsed = time.monotonic() - started
            stop.set()
            if stored is not None:
                poller.join()
        return jobs / elapsed * 60, latencies
    finally:
        for proc in [*procs, replica]:
            proc.stop()


def wait_all(client: httpx.Client, ids: list[str]) -> None:
    while True:
        items = client.post("/query_result", json={"task_id_list": ids}).json()["data"]
        if all(item["status"] != 0 for item in items):
            failed = [item for item in items if item["status"] != 1]
            assert not failed, failed[:1]
            return
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="acestep-bench-"))
    server = PostgresServer(folder / "pg").start()
    try:
        for count in (int(n) for n in args.workers.split(",")):
            rate, latencies = run(server, folder, count, args.jobs, stored=[])
            line = f"{count} worker(s): {rate:.1f} songs/min ({args.jobs} jobs)"
            if latencies:
                ms = sorted(1000 * value for value in latencies)
                p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
                line += (f"; /query_result with {STORED_JOBS} stored jobs: p50 {statistics.median(ms):.1f} ms, "
                         f"p99 {p99:.1f} ms over {len(ms)} polls")
            print(f"{line} [load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores]", flush=True)
    finally:
        server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
