"""The distributed mode over HTTP, in one test process: an app that is an API replica and a
GPU worker (`serve --with-worker`) and a replica without models share a real PostgreSQL;
what one accepts the other answers, a cancel reaches the worker's running job, and a database
out of reach is a 503 with a sentence, never a 500."""

from __future__ import annotations

import asyncio
import time

import pytest

from acestep_api.jobs.distributed import setup as distributed_setup
from acestep_api.jobs.distributed import store as distributed_store
from tests.answer_hygiene import problems
from tests.e2e.server_process import free_port
from tests.server.conftest import serve
from tests.server.test_cancel_http import SteppingEngine

pytestmark = pytest.mark.anyio


@pytest.fixture
def dist_settings(settings, postgres_url):
    return settings.model_copy(update={"database_url": postgres_url, "worker_stall_seconds": 2.0})


async def poll(client, task_id: str, until, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await client.post("/query_result", json={"task_id_list": [task_id]})
        assert response.status_code == 200, response.text
        item = response.json()["data"][0]
        if until(item):
            return item
        await asyncio.sleep(0.1)
    raise AssertionError(f"{task_id} never reached the state; last: {item}")


async def test_a_job_accepted_by_one_replica_is_answered_by_the_other(dist_settings, engine):
    stepping = SteppingEngine(engine)
    async with serve(dist_settings, stepping) as (_, worker_client), \
            serve(dist_settings, None, start_worker=False) as (replica, replica_client):
        health = (await replica_client.get("/health")).json()["data"]
        deadline = time.monotonic() + 10
        while health["workers_alive"] < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            health = (await replica_client.get("/health")).json()["data"]
        assert (health["mode"], health["workers_alive"]) == ("distributed", 1)
        assert health["loaded_model"] == "acestep-v15-turbo"  # what the worker reported
        assert replica.state.engine is None  # the replica loaded no model

        accepted = await worker_client.post("/release_task", json={"prompt": "calm", "audio_duration": 10,
                                                                     "inference_steps": 2})
        task_id = accepted.json()["data"]["task_id"]
        item = await poll(replica_client, task_id, lambda item: item["status"] != 0)
        assert item["status"] == 1, item
        results = __import__("json").loads(item["result"])
        audio = await replica_client.get(results[0]["file"])
        assert audio.status_code == 200 and len(audio.content) > 1000
        stats = (await replica_client.get("/v1/stats")).json()["data"]
        assert stats["jobs"]["succeeded"] == 1 and stats["workers"] == 1
        # Each process counts what it did: this one accepted, started and ended the job.
        metrics = (await worker_client.get("/metrics")).text
        assert 'acestep_jobs_submitted_total{api="release_task"' in metrics
        assert 'acestep_jobs_succeeded_total{api="release_task"' in metrics


async def test_a_cancel_through_the_replica_stops_the_running_job_and_the_worker_goes_on(dist_settings, engine):
    stepping = SteppingEngine(engine)
    async with serve(dist_settings, stepping) as (_, worker_client), \
            serve(dist_settings, None, start_worker=False) as (_, replica_client):
        long_id = (await worker_client.post("/v1/music/generate", json={"caption": "long"})).json()["job_id"]
        await poll(replica_client, long_id, lambda item: item["progress_text"].startswith("step"))
        started = time.monotonic()
        cancelled = await replica_client.post(f"/v1/jobs/{long_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        item = await poll(replica_client, long_id, lambda item: item["status"] == 2, timeout=20)
        assert "Cancelled" in item["error"]
        assert time.monotonic() - started < 5 and stepping.steps < 900

        after = await replica_client.post("/release_task", json={"prompt": "next", "audio_duration": 10,
                                                                   "inference_steps": 2})
        next_id = after.json()["data"]["task_id"]
        assert (await poll(replica_client, next_id, lambda item: item["status"] != 0))["status"] == 1


async def test_a_database_out_of_reach_is_a_503_with_a_sentence(settings, monkeypatch):
    monkeypatch.setattr(distributed_setup, "MIGRATE_WAIT_SECONDS", 0.0)
    monkeypatch.setattr(distributed_store, "POOL_TIMEOUT", 0.5)
    nowhere = settings.model_copy(update={"database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/none"})
    async with serve(nowhere, None, start_worker=False) as (_, client):
        for method, path, body in (("GET", "/health", None), ("POST", "/query_result", {"task_id_list": ["x"]}),
                                   ("POST", "/release_task", {"prompt": "x"}), ("GET", "/v1/stats", None)):
            response = await client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            assert "database cannot be reached" in response.json()["detail"]
            assert response.headers["retry-after"] == "5"
            assert problems(response.status_code, response.text) == []


class FailingEngine(SteppingEngine):
    """A prompt "crash" makes the engine raise as a bug would."""

    def generate(self, request, progress):
        if request.prompt == "crash":
            raise ValueError("a bug in the engine")
        return super().generate(request, progress)


async def test_an_engine_failure_fails_that_job_only(dist_settings, engine):
    async with serve(dist_settings, FailingEngine(engine)) as (_, client):
        crashed = (await client.post("/release_task", json={"prompt": "crash"})).json()["data"]["task_id"]
        fine = (await client.post("/release_task", json={"prompt": "fine", "audio_duration": 10,
                                                           "inference_steps": 2})).json()["data"]["task_id"]
        failed = await poll(client, crashed, lambda item: item["status"] != 0)
        assert failed["status"] == 2 and failed["error"].startswith("Generation failed: an internal error occurred")
        assert "ValueError" not in failed["error"]
        assert (await poll(client, fine, lambda item: item["status"] != 0))["status"] == 1


async def test_replicas_and_workers_come_back_after_the_database_restarts(dist_settings, engine, postgres,
                                                                          monkeypatch):
    monkeypatch.setattr(distributed_store, "POOL_TIMEOUT", 0.5)
    async with serve(dist_settings, SteppingEngine(engine)) as (_, worker_client), \
            serve(dist_settings, None, start_worker=False) as (_, replica_client):
        first = (await replica_client.post("/release_task", json=JOB)).json()["data"]["task_id"]
        assert (await poll(replica_client, first, lambda item: item["status"] != 0))["status"] == 1

        await asyncio.to_thread(postgres.stop)
        try:
            down = await replica_client.post("/query_result", json={"task_id_list": [first]})
            assert down.status_code == 503 and "database" in down.json()["detail"]
        finally:
            await asyncio.to_thread(postgres.restart)

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            response = await replica_client.post("/release_task", json=JOB)
            if response.status_code == 200:
                break
            assert response.status_code == 503
            await asyncio.sleep(0.5)
        second = response.json()["data"]["task_id"]
        item = await poll(replica_client, second, lambda item: item["status"] != 0, timeout=90)
        assert item["status"] == 1  # the worker reconnected and ran it


JOB = {"prompt": "again", "audio_duration": 10, "inference_steps": 2}
