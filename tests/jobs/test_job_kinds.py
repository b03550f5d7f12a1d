"""Jobs of every kind share the store, the queue and the worker: LM-only jobs round-trip through
SQLite with their own request and result types, a database written before job kinds existed
still opens, and the worker runs each kind on the engine's matching call."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from acestep_api.engine.lm_tasks import FormatRequest, LMTaskResult, SampleRequest
from acestep_api.engine.request import GenerationError, GenerationRequest
from acestep_api.jobs.models import JobApi, JobKind, JobStatus
from acestep_api.jobs.queue import JobQueue
from acestep_api.jobs.store import JobStore
from acestep_api.jobs.worker import JobWorker

# The jobs table as the first releases wrote it: no kind column.
OLD_SCHEMA = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, api TEXT NOT NULL,
    status TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    progress REAL NOT NULL, stage TEXT NOT NULL, request TEXT NOT NULL, result TEXT, error TEXT,
    attempts INTEGER NOT NULL, temp_files TEXT NOT NULL, interrupted INTEGER NOT NULL DEFAULT 0,
    run_marker TEXT
);
"""


def test_lm_jobs_round_trip_with_their_types(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    try:
        queue = JobQueue(store)
        formatted, _ = queue.submit(FormatRequest(caption="pop", lyrics="la", bpm=120, time_signature="4"), JobApi.LM)
        sampled, _ = queue.submit(SampleRequest(query="calm piano", instrumental=True), JobApi.LM)
        song, _ = queue.submit(GenerationRequest(prompt="x"))
        queue.finish(formatted, LMTaskResult(caption="Pop rock", bpm=120, lm_model="lm"))
        reopened = JobStore(tmp_path / "jobs.sqlite3")
        try:
            kinds = [reopened.get(job.id).kind for job in (formatted, sampled, song)]
            assert kinds == [JobKind.FORMAT, JobKind.SAMPLE, JobKind.GENERATION]
            again = reopened.get(formatted.id)
            assert again.request == formatted.request and again.result == LMTaskResult(caption="Pop rock", bpm=120,
                                                                                       lm_model="lm")
            assert reopened.get(sampled.id).request.instrumental is True
            assert [job.id for job in reopened.waiting()] == [sampled.id, song.id]
        finally:
            reopened.close()
    finally:
        store.close()


def test_a_database_from_before_job_kinds_opens_and_reads_as_generation(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        db.execute(
            "INSERT INTO jobs (id, api, status, created_at, progress, stage, request, attempts, temp_files) "
            "VALUES ('old', 'release_task', 'queued', 1.0, 0.0, 'queued', ?, 0, '[]')",
            (GenerationRequest(prompt="from an old server").model_dump_json(),),
        )
    store = JobStore(path)
    try:
        [job] = store.waiting()
        assert (job.id, job.kind, job.request.prompt) == ("old", JobKind.GENERATION, "from an old server")
        queue = JobQueue(store)
        new, _ = queue.submit(SampleRequest(query="x"), JobApi.LM)
        assert store.get(new.id).kind is JobKind.SAMPLE
    finally:
        store.close()


class KindEngine:
    """Answers each kind of job; records what it was asked."""

    def __init__(self):
        self.calls = []

    def generate(self, request, progress):
        raise GenerationError("no songs here")

    def run_lm_task(self, task):
        self.calls.append(task.kind)
        if isinstance(task, SampleRequest) and task.query == "break":
            raise GenerationError("create_sample failed: the 5 Hz LM could not process this input")
        return LMTaskResult(caption=f"{task.kind} done")


@pytest.mark.anyio
async def test_the_worker_runs_each_kind_on_its_engine_call(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    try:
        queue = JobQueue(store)
        engine = KindEngine()
        worker = JobWorker(queue, engine)
        worker.start()
        try:
            jobs = [queue.submit(request, JobApi.LM)[0] for request in
                    (FormatRequest(caption="x"), SampleRequest(query="break"), SampleRequest(query="y"))]
            ended = [await asyncio.wait_for(queue.wait_finished(job.id), 30) for job in jobs]
        finally:
            await worker.stop()
        assert engine.calls == ["format", "sample", "sample"]
        assert [job.status for job in ended] == [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.SUCCEEDED]
        assert ended[0].result.caption == "format done"
        assert ended[1].error == "create_sample failed: the 5 Hz LM could not process this input"
    finally:
        store.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_adapter_jobs_round_trip_with_their_types(tmp_path):
    from acestep_api.engine.adapter_tasks import AdapterAnswer, AdapterStatus, AdapterTask

    store = JobStore(tmp_path / "jobs.sqlite3")
    try:
        queue = JobQueue(store)
        load, _ = queue.submit(AdapterTask(op="load", folder="style", adapter_name="main"), JobApi.LORA)
        scale, _ = queue.submit(AdapterTask(op="scale", scale=0.5), JobApi.LORA)
        answer = AdapterAnswer(message="loaded", status=AdapterStatus(lora_loaded=True, adapters=["main"]))
        queue.finish(load, answer)
        reopened = JobStore(tmp_path / "jobs.sqlite3")
        try:
            assert [reopened.get(job.id).kind for job in (load, scale)] == [JobKind.ADAPTER, JobKind.ADAPTER]
            assert reopened.get(load.id).request == load.request and reopened.get(load.id).result == answer
            assert [job.id for job in reopened.waiting()] == [scale.id]
        finally:
            reopened.close()
    finally:
        store.close()
