"""Accepted jobs survive a crash: SIGKILL the server mid-job, restart it on the same folder."""

from __future__ import annotations

import json
import time

import httpx

from acestep_api.jobs.models import JobStatus
from acestep_api.jobs.store import JobStore
from tests.e2e.server_process import ServerProcess

# Long enough on the demo checkpoints that the kill lands while the job is running.
SLOW_JOB = {"prompt": "slow", "duration": 180, "batch_size": 2, "audio_format": "wav"}


def submit(client: httpx.Client, body: dict) -> str:
    response = client.post("/release_task", json=body)
    assert response.status_code == 200, response.text
    return response.json()["data"]["task_id"]


def query(client: httpx.Client, task_id: str) -> dict:
    return client.post("/query_result", json={"task_id_list": [task_id]}).json()["data"][0]


def wait_until_running(client: httpx.Client, task_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = query(client, task_id)
        if item["status"] == 0 and json.loads(item["result"])[0]["stage"] != "queued":
            return
        assert item["status"] == 0, f"job ended before it could be interrupted: {item}"
        time.sleep(0.05)
    raise AssertionError(f"job {task_id} never started")


def wait_finished(client: httpx.Client, task_ids: list[str], timeout: float = 300.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = [query(client, t) for t in task_ids]
        if all(i["status"] in (1, 2) for i in items):
            return items
        time.sleep(0.25)
    raise AssertionError(f"jobs not finished: {items}")


def test_waiting_jobs_run_in_order_and_the_running_one_is_retried(tmp_path):
    server = ServerProcess(tmp_path).start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        running = submit(client, SLOW_JOB)
        waiting = [submit(client, {"prompt": f"song {i}", "duration": 10, "batch_size": 1}) for i in range(3)]
        wait_until_running(client, running)
    server.kill()

    server = ServerProcess(tmp_path).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            items = wait_finished(client, [running, *waiting])
            assert [i["status"] for i in items] == [1, 1, 1, 1], items
            for item in items:
                assert all(entry["file"] for entry in json.loads(item["result"]))
    finally:
        server.stop()

    store = JobStore(tmp_path / "jobs.sqlite3")
    try:
        jobs = [store.get(t) for t in (running, *waiting)]
        assert jobs[0].attempts == 2
        started = [job.started_at for job in jobs]
        assert started == sorted(started), "waiting jobs must keep their original order"
    finally:
        store.close()


def test_a_job_interrupted_twice_fails_with_its_reason(tmp_path):
    server = ServerProcess(tmp_path).start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        task = submit(client, SLOW_JOB)
        wait_until_running(client, task)
    server.kill()

    server = ServerProcess(tmp_path).start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        wait_until_running(client, task)
    server.kill()

    server = ServerProcess(tmp_path).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            item = query(client, task)
            assert item["status"] == 2
            (entry,) = json.loads(item["result"])
            assert entry["stage"] == "failed" and "server stopped" in entry["error"]
            # The server goes on serving new work after the failure.
            fresh = submit(client, {"prompt": "after", "duration": 10, "batch_size": 1})
            assert wait_finished(client, [fresh])[0]["status"] == 1
    finally:
        server.stop()
    store = JobStore(tmp_path / "jobs.sqlite3")
    try:
        assert store.get(task).status is JobStatus.FAILED
    finally:
        store.close()
