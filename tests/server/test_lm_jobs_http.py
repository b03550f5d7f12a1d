"""The 5 Hz LM's routes run their work as jobs on the one queue: behind a running song, counted in
/v1/stats, cancelled when their time is up or their client goes away, and never holding the
worker after that."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from acestep_api.jobs.models import JobApi, JobKind, JobStatus
from tests.server.conftest import serve

pytestmark = pytest.mark.anyio


class GatedEngine:
    """The tiny engine with the tiny LM; a song whose prompt is "gated" reports progress until
    the test opens the gate (a cancel takes effect at a report), and LM-only jobs are noted."""

    def __init__(self, inner):
        self._inner = inner
        self.gate, self.started = threading.Event(), threading.Event()
        self.lm_tasks: list[tuple[str, float]] = []  # (kind, time.time() it started)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def generate(self, request, progress):
        if request.prompt == "gated":
            self.started.set()
            deadline = time.monotonic() + 60
            while not self.gate.wait(0.01) and time.monotonic() < deadline:
                progress(0.05, "waiting at the gate")
        return self._inner.generate(request, progress)

    def run_lm_task(self, task):
        self.lm_tasks.append((task.kind, time.time()))
        return self._inner.run_lm_task(task)


@pytest.fixture
async def gated(settings, lm_engine):
    engine = GatedEngine(lm_engine)
    async with serve(settings, engine) as (app, client):
        yield app, client, engine


async def start_gated_song(app, client, engine) -> str:
    response = await client.post("/release_task", json={"prompt": "gated", "batch_size": 1, "audio_format": "wav"})
    task_id = response.json()["data"]["task_id"]
    assert await asyncio.to_thread(engine.started.wait, 30), "the song never started"
    return task_id


def lm_jobs(app) -> list:
    store = app.state.store
    rows = store._db.execute("SELECT id FROM jobs WHERE api = ? ORDER BY seq", (JobApi.LM.value,)).fetchall()
    return [store.get(job_id) for (job_id,) in rows]


@pytest.mark.parametrize("route,body,kind", [
    ("/format_input", {"prompt": "pop rock", "lyrics": "la la la"}, JobKind.FORMAT),
    ("/v1/create_sample", {"query": "a calm piano piece"}, JobKind.SAMPLE),
])
async def test_lm_work_waits_behind_a_running_job_and_is_counted(gated, route, body, kind):
    app, client, engine = gated
    song = await start_gated_song(app, client, engine)
    before = (await client.get("/v1/stats")).json()["data"]["jobs"]

    answer = asyncio.create_task(client.post(route, json=body))
    # The LM job is queued behind the song, visible in the queue and the statistics.
    deadline = time.monotonic() + 30
    while not lm_jobs(app):
        assert time.monotonic() < deadline, "the LM route queued no job"
        await asyncio.sleep(0.01)
    [waiting] = lm_jobs(app)
    assert waiting.kind is kind and waiting.status is JobStatus.QUEUED
    assert app.state.queue.position(waiting.id) == 1
    during = (await client.get("/v1/stats")).json()["data"]
    assert during["jobs"]["total"] == before["total"] + 1 and during["queue_size"] == 1
    await asyncio.sleep(0.3)
    assert not answer.done() and engine.lm_tasks == []  # the LM did not run beside the song

    engine.gate.set()
    response = await answer
    assert response.status_code == 200 and response.json()["code"] == 200, response.text
    ended = app.state.queue.get(song)
    assert ended.status is JobStatus.SUCCEEDED
    [(ran_kind, lm_started)] = engine.lm_tasks
    assert ran_kind == kind.value
    # The LM started only after the song had ended.
    assert ended.finished_at is not None and lm_started >= ended.finished_at
    [done] = lm_jobs(app)
    assert done.status is JobStatus.SUCCEEDED and done.result is not None
    after = (await client.get("/v1/stats")).json()["data"]["jobs"]
    assert after["total"] == before["total"] + 1 and after["succeeded"] == before["succeeded"] + 2


async def test_an_lm_job_past_its_time_is_cancelled_and_frees_the_worker(settings, lm_engine):
    engine = GatedEngine(lm_engine)
    impatient = settings.model_copy(update={"generation_timeout": 0.3})
    async with serve(impatient, engine) as (app, client):
        song = await start_gated_song(app, client, engine)
        response = await client.post("/format_input", json={"prompt": "pop rock"})
        assert (response.status_code, response.json()) == (504, {"detail": "Generation timeout"})
        [cancelled] = lm_jobs(app)
        assert cancelled.status is JobStatus.FAILED and cancelled.error == "Cancelled by request"
        engine.gate.set()
        # The worker goes on: the song ends, the cancelled LM job never runs, the next one does.
        assert (await app.state.queue.wait_finished(song, 60)).status is JobStatus.SUCCEEDED
        relaxed = settings.model_copy(update={"generation_timeout": 60})
        app.state.settings = relaxed
        response = await client.post("/v1/create_sample", json={"query": "a calm piano piece"})
        assert response.json()["code"] == 200, response.text
        assert [kind for kind, _ in engine.lm_tasks] == ["sample"]
        assert app.state.queue.size == 0


async def test_a_client_that_goes_away_cancels_its_lm_job(gated):
    """Through the ASGI interface: the body arrives, then the client disconnects while its job
    waits behind the song; the job is cancelled and never runs."""
    app, client, engine = gated
    song = await start_gated_song(app, client, engine)
    hang_up = asyncio.Event()
    body = json.dumps({"prompt": "pop rock"}).encode()
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await hang_up.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        pass

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/format_input", "raw_path": b"/format_input", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                                     (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "app": app,
    }
    call = asyncio.create_task(app(scope, receive, send))
    deadline = time.monotonic() + 30
    while not lm_jobs(app):
        assert time.monotonic() < deadline, "the LM route queued no job"
        await asyncio.sleep(0.01)
    hang_up.set()
    await asyncio.wait_for(call, 30)
    [gone] = lm_jobs(app)
    assert gone.status is JobStatus.FAILED and gone.error == "Cancelled by request"
    engine.gate.set()
    assert (await app.state.queue.wait_finished(song, 60)).status is JobStatus.SUCCEEDED
    assert engine.lm_tasks == []


async def test_lm_jobs_do_not_count_in_the_song_time_estimate(gated):
    app, client, engine = gated
    engine.gate.set()
    queue = app.state.queue
    response = await client.post("/format_input", json={"prompt": "pop rock"})
    assert response.json()["code"] == 200
    assert list(queue._durations) == [] and queue.store.recent_durations(50) == []
    await start_gated_song(app, client, engine)
    deadline = time.monotonic() + 60
    while not queue.store.recent_durations(50):
        assert time.monotonic() < deadline, "the song did not finish"
        await asyncio.sleep(0.05)
    assert len(queue._durations) == 1 and len(queue.store.recent_durations(50)) == 1


async def test_an_lm_job_is_no_task_the_polling_routes_know(gated):
    """LM-only jobs are answered by their own route: their ids are no tasks of /query_result or
    the older API (a client never learns them, and their result is no song)."""
    app, client, engine = gated
    engine.gate.set()
    assert (await client.post("/format_input", json={"prompt": "pop rock"})).json()["code"] == 200
    [job] = lm_jobs(app)
    answer = (await client.post("/query_result", json={"task_id_list": [job.id]})).json()
    assert answer["data"] == [{"task_id": job.id, "result": "[]", "status": 0}]
    assert (await client.get(f"/v1/jobs/{job.id}")).status_code == 404
