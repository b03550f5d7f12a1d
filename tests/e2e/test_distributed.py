"""The distributed mode as deployed: PostgreSQL, two API replicas, two GPU workers on the demo
checkpoints, one shared output folder. Jobs go in through replica A and are polled through
replica B; one worker is SIGKILLed mid-job; every acknowledged job succeeds exactly once, the
killed one on its second attempt, and every file downloads from both replicas."""

from __future__ import annotations

import json
import signal
import time

import httpx
import psycopg
import pytest

from tests.e2e.distributed_processes import ReplicaProcess, WorkerProcess

STALL_SECONDS = 3.0
# Long enough on the demo checkpoints that the kill lands while it runs.
SLOW_JOB = {"prompt": "slow", "audio_duration": 120, "batch_size": 2, "audio_format": "wav", "inference_steps": 8}
JOB = {"prompt": "song", "audio_duration": 10, "inference_steps": 2}


def submit(client: httpx.Client, body: dict) -> str:
    response = client.post("/release_task", json=body)
    assert response.status_code == 200, response.text
    return response.json()["data"]["task_id"]


def items(client: httpx.Client, task_ids: list[str]) -> list[dict]:
    response = client.post("/query_result", json={"task_id_list": task_ids})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def waiting_view(item: dict) -> tuple:
    result = json.loads(item["result"])[0]
    return result["queue_position"], result["eta_seconds"], item["progress_text"]


def db_row(url: str, task_id: str) -> tuple:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT status, attempts, worker FROM acestep_jobs WHERE id = %s", (task_id,)).fetchone()


@pytest.mark.e2e
def test_two_replicas_two_workers_and_a_worker_killed_mid_job(tmp_path, postgres_url):
    out = tmp_path / "shared-outputs"
    env = {"ACESTEP_WORKER_STALL_SECONDS": str(STALL_SECONDS), "ACESTEP_AVG_JOB_SECONDS": "4"}
    replicas = [ReplicaProcess(out, postgres_url, env).start() for _ in range(2)]
    workers = [WorkerProcess(out, postgres_url, name, env) for name in ("w1", "w2")]
    try:
        a, b = (httpx.Client(base_url=replica.url, timeout=30) for replica in replicas)
        assert a.get("/health").json()["data"]["mode"] == "distributed"

        # No worker yet: the jobs wait, both replicas give the same places and ETAs, and the
        # poll says why nothing runs.
        slow = submit(a, SLOW_JOB)
        others = [submit(a, {**JOB, "prompt": f"song {i}"}) for i in range(5)]
        ids = [slow, *others]
        seen_a, seen_b = [waiting_view(i) for i in items(a, ids)], [waiting_view(i) for i in items(b, ids)]
        assert seen_a == seen_b
        assert [view[0] for view in seen_a] == [1, 2, 3, 4, 5, 6]
        assert [view[1] for view in seen_a] == [4.0 * n for n in range(1, 7)]
        assert "no live worker serves model acestep-v15-turbo" in seen_a[0][2]

        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_registered()
        deadline = time.monotonic() + 10
        while b.get("/health").json()["data"]["workers_alive"] < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert b.get("/health").json()["data"]["workers_alive"] == 2

        # Kill the worker that holds the slow job while it runs.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status, attempts, holder = db_row(postgres_url, slow)
            if status == "running":
                break
            time.sleep(0.05)
        assert status == "running", (status, attempts, holder)
        time.sleep(0.5)
        victim = next(worker for worker in workers if worker.name == holder)
        survivor = next(worker for worker in workers if worker is not victim)
        victim.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.proc.wait(timeout=30)
        while time.monotonic() < killed_at + 60:
            status, attempts, holder = db_row(postgres_url, slow)
            if attempts == 2:
                break
            time.sleep(0.05)
        redelivery = time.monotonic() - killed_at
        print(f"\nre-delivery after SIGKILL: {redelivery:.1f} s (stall timeout {STALL_SECONDS} s)")
        assert attempts == 2 and holder == survivor.name
        assert redelivery < 30

        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            ended = items(b, ids)
            if all(item["status"] != 0 for item in ended):
                break
            time.sleep(0.5)
        assert [item["status"] for item in ended] == [1] * len(ids), [item.get("error") for item in ended]

        with psycopg.connect(postgres_url, autocommit=True) as conn:
            rows = dict(conn.execute("SELECT id, attempts FROM acestep_jobs").fetchall())
            # one procrastinate job per accepted job, each succeeded once
            entries = conn.execute(
                "SELECT args->>'job_id', status, count(*) OVER (PARTITION BY args->>'job_id') "
                "FROM procrastinate_jobs").fetchall()
        assert rows == {slow: 2, **{task_id: 1 for task_id in others}}
        assert sorted(job_id for job_id, _, _ in entries) == sorted(ids)
        assert {(status, count) for _, status, count in entries} == {("succeeded", 1)}

        for item in ended:
            for result in json.loads(item["result"]):
                bodies = [client.get(result["file"]) for client in (a, b)]
                assert [body.status_code for body in bodies] == [200, 200]
                assert bodies[0].content == bodies[1].content and len(bodies[0].content) > 1000
        stats = a.get("/v1/stats").json()["data"]
        assert stats["jobs"]["succeeded"] == len(ids) and stats["workers"] == 1
    finally:
        for process in [*workers, *replicas]:
            process.stop()
