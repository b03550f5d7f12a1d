"""Cancelling over HTTP: POST /v1/jobs/{id}/cancel (legacy, unwrapped) and POST /cancel_task
(wrapped): waiting jobs end at once, running ones stop at their next step, finished ones are
refused with 409, unknown ids with 404; positions and ETAs of later jobs move up."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from acestep_api.server.services import cancel as cancel_module
from tests.server.conftest import serve, wait_finished

pytestmark = pytest.mark.anyio

CANCELLED = "Cancelled by request"


class SteppingEngine:
    """The tiny engine, but a job whose prompt is "long" first reports progress in a loop with
    short sleeps (it is reliably still running when a cancel arrives), and one whose prompt is
    "blocked" waits for `release` before its first report."""

    def __init__(self, inner):
        self._inner = inner
        self.steps = 0
        self.blocked = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def generate(self, request, progress):
        if request.prompt == "blocked":
            self.blocked.set()
            self.release.wait(30)
            progress(0.5, "after the long step")
        if request.prompt == "long":
            for step in range(1, 1000):
                progress(step / 1000, f"step {step}/1000")
                self.steps = step
                time.sleep(0.01)
        return self._inner.generate(request, progress)


@pytest.fixture
async def stepping(settings, engine):
    wrapped = SteppingEngine(engine)
    async with serve(settings, wrapped) as (app, client):
        yield app, client, wrapped


async def submit_legacy(client, caption: str = "x") -> str:
    response = await client.post("/v1/music/generate", json={"caption": caption})
    assert response.status_code == 200, response.text
    return response.json()["job_id"]


async def query_status(client, task_id: str) -> int:
    response = await client.post("/query_result", json={"task_id_list": [task_id]})
    return response.json()["data"][0]["status"]


async def until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


# --- Waiting jobs ---------------------------------------------------------------------------


async def test_legacy_cancel_of_a_waiting_job_ends_it_at_once(idle):
    app, client = idle
    job_id = await submit_legacy(client)
    response = await client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    answer = response.json()
    assert answer["stopped"] is True
    assert (answer["job_id"], answer["status"], answer["error"], answer["queue_position"], answer["eta_seconds"]) == (
        job_id, "failed", CANCELLED, 0, None)
    assert answer["started_at"] is None and answer["finished_at"] >= answer["created_at"]
    answer.pop("stopped")
    assert (await client.get(f"/v1/jobs/{job_id}")).json() == answer
    assert await query_status(client, job_id) == 2
    assert app.state.queue.size == 0

    response = await client.post(f"/v1/jobs/{job_id}/cancel")
    assert (response.status_code, response.json()) == (409, {"detail": "Job already failed"})


@pytest.mark.parametrize("send", ["json", "form"])
async def test_cancel_task_of_a_waiting_job(idle, send):
    app, client = idle
    response = await client.post("/release_task", json={"prompt": "x"})
    task_id = response.json()["data"]["task_id"]
    body = {"json": {"task_id": task_id}} if send == "json" else {"data": {"task_id": task_id}}
    response = await client.post("/cancel_task", **body)
    assert response.status_code == 200
    answer = response.json()
    assert (answer["code"], answer["error"]) == (200, None)
    assert answer["data"] == {"task_id": task_id, "cancelled": True, "stopped": True, "status": 2,
                              "stage": "cancelled", "error": CANCELLED, "reason": None}
    assert await query_status(client, task_id) == 2
    view = (await client.get(f"/v1/jobs/{task_id}")).json()
    assert (view["status"], view["error"]) == ("failed", CANCELLED)

    response = await client.post("/cancel_task", json={"task_id": task_id})
    assert (response.status_code, response.json()) == (409, {"detail": "Task already failed"})


async def test_unknown_ids_are_404(idle):
    _, client = idle
    response = await client.post("/v1/jobs/nope/cancel")
    assert (response.status_code, response.json()) == (404, {"detail": "Job not found"})
    response = await client.post("/cancel_task", json={"task_id": "nope"})
    assert (response.status_code, response.json()) == (404, {"detail": "Task not found"})


async def test_positions_and_eta_move_up_as_earlier_jobs_are_cancelled(idle):
    _, client = idle
    first, second, third = [await submit_legacy(client, caption) for caption in ("a", "b", "c")]

    async def place(job_id):
        view = (await client.get(f"/v1/jobs/{job_id}")).json()
        return view["queue_position"], view["eta_seconds"]

    assert await place(third) == (3, 15.0)
    await client.post(f"/v1/jobs/{first}/cancel")
    assert [await place(job_id) for job_id in (second, third)] == [(1, 5.0), (2, 10.0)]
    await client.post("/cancel_task", json={"task_id": second})
    assert await place(third) == (1, 5.0)
    # A cancelled job took no time: the average stays what it was.
    assert (await client.get(f"/v1/jobs/{third}")).json()["avg_job_seconds"] == 5.0


async def test_cancel_task_with_a_list_answers_each_id(idle):
    _, client = idle
    waiting, ended = await submit_legacy(client), await submit_legacy(client)
    await client.post(f"/v1/jobs/{ended}/cancel")
    response = await client.post("/cancel_task", data={"task_id_list": json.dumps([waiting, "nope", ended])})
    assert response.status_code == 200
    items = response.json()["data"]
    assert [(i["task_id"], i["cancelled"], i["stopped"], i["status"], i["reason"]) for i in items] == [
        (waiting, True, True, 2, None),
        ("nope", False, False, None, "Task not found"),
        (ended, False, True, 2, "Task already failed"),
    ]


@pytest.mark.parametrize("body, field", [
    ({}, "task_id is required"),
    ({"task_id": "  "}, "task_id is required"),
    ({"task_id": {"a": 1}}, "task_id must be a string"),
    ({"task_id": "a", "task_id_list": ["b"]}, "not both"),
    ({"task_id_list": "nope"}, "task_id_list must be a non-empty list"),
    ({"task_id_list": []}, "task_id_list must be a non-empty list"),
])
async def test_cancel_task_bad_bodies_are_a_400_naming_the_field(idle, body, field):
    _, client = idle
    response = await client.post("/cancel_task", json=body)
    assert response.status_code == 400 and field in response.json()["detail"]


# --- Running jobs ---------------------------------------------------------------------------


async def test_legacy_cancel_stops_a_running_job_between_steps(stepping):
    app, client, engine = stepping
    job_id = await submit_legacy(client, "long")
    await until(lambda: engine.steps > 0)
    response = await client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    answer = response.json()
    assert (answer["stopped"], answer["status"], answer["error"]) == (True, "failed", CANCELLED)
    assert answer["started_at"] is not None
    assert engine.steps < 999  # it did not run to the end
    assert await query_status(client, job_id) == 2


async def test_cancel_task_answers_before_a_running_job_has_stopped(stepping, monkeypatch):
    app, client, engine = stepping
    monkeypatch.setattr(cancel_module, "CANCEL_WAIT_SECONDS", 0.2)
    task_id = (await client.post("/release_task", json={"prompt": "blocked"})).json()["data"]["task_id"]
    await until(engine.blocked.is_set)
    response = await client.post("/cancel_task", json={"task_id": task_id})
    data = response.json()["data"]
    assert (data["cancelled"], data["stopped"], data["status"], data["error"]) == (True, False, 0, None)
    # It stops at its next progress report.
    engine.release.set()
    job = await wait_finished(app, task_id)
    assert (job.status.value, job.stage, job.error) == ("failed", "cancelled", CANCELLED)
    assert await query_status(client, task_id) == 2


async def test_finished_jobs_are_refused_with_409(live):
    app, client = live
    response = await client.post("/v1/music/generate",
                                 json={"caption": "x", "duration": 10, "batch_size": 1, "audio_format": "wav"})
    job = await wait_finished(app, response.json()["job_id"])
    assert job.status.value == "succeeded", job.error
    response = await client.post(f"/v1/jobs/{job.id}/cancel")
    assert (response.status_code, response.json()) == (409, {"detail": "Job already succeeded"})
    response = await client.post("/cancel_task", json={"task_id": job.id})
    assert (response.status_code, response.json()) == (409, {"detail": "Task already succeeded"})
    assert (await client.get(f"/v1/jobs/{job.id}")).json()["status"] == "succeeded"


# --- The optional key -----------------------------------------------------------------------


async def test_cancel_routes_follow_the_key(settings, engine):
    async with serve(settings.model_copy(update={"api_key": "secret"}), engine, start_worker=False) as (_, client):
        response = await client.post("/v1/music/generate", json={"caption": "x"}, headers={"Authorization": "secret"})
        job_id = response.json()["job_id"]
        for path, body in ((f"/v1/jobs/{job_id}/cancel", {}), ("/cancel_task", {"task_id": job_id})):
            response = await client.post(path, json=body)
            assert response.status_code == 401
            assert response.json() == {"detail": "Missing ai_token or Authorization header"}
        response = await client.post("/cancel_task", json={"task_id": job_id, "ai_token": "secret"})
        assert response.status_code == 200 and response.json()["data"]["stopped"] is True
