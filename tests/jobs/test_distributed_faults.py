"""The distributed backend's routing and its handling of dead workers, on a real PostgreSQL with
procrastinate's own queue, worker and heartbeat tables."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from procrastinate import App, PsycopgConnector

from acestep_api.engine.lm_tasks import FormatRequest
from acestep_api.engine.served import ServedModel, ServedModels
from acestep_api.jobs.distributed.backend import LM_QUEUE, PostgresJobBackend, queue_for_model
from acestep_api.jobs.distributed.runner import DistributedWorker, worker_queues
from acestep_api.jobs.distributed.store import open_pool
from acestep_api.jobs.events import Outcome
from acestep_api.jobs.models import JobStatus
from tests.jobs import make_request, make_result

TURBO, BASE = "acestep-v15-turbo", "acestep-v15-base"


def served(*models: str, lm: bool = False) -> ServedModels:
    return ServedModels(models=tuple(ServedModel(name, "turbo" in name, ("text2music",)) for name in models),
                        lm_model="acestep-5Hz-lm-0.6B", lm_available=lm)


@pytest.fixture
def backend(postgres_url, tmp_path):
    backend = PostgresJobBackend(open_pool(postgres_url), tmp_path / "uploads", primary_model=TURBO,
                                 fallback_served=served(TURBO, BASE), stall_seconds=5)
    yield backend
    backend.close()


class ProcrastinateWorker:
    """What a GPU worker does with procrastinate, step by step: register, fetch from its
    queues, claim the row."""

    def __init__(self, url: str, backend: PostgresJobBackend, queues: list[str] | None = None):
        self.url, self.backend, self.queues = url, backend, queues

    def take(self):
        async def fetch():
            app = App(connector=PsycopgConnector(conninfo=self.url))
            async with app.open_async():
                self.worker_id = await app.job_manager.register_worker()
                entry = await app.job_manager.fetch_job(queues=self.queues, worker_id=self.worker_id)
                if entry is None:
                    return None
                return await asyncio.to_thread(self.backend.claim, entry.task_kwargs["job_id"], "w")

        return asyncio.run(fetch())

    def die(self) -> None:
        """Its heartbeat stops: as procrastinate sees a SIGKILLed worker once the timeout passed."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' "
                         "WHERE id = %s", (self.worker_id,))


def recover(url: str, backend: PostgresJobBackend) -> list:
    async def run():
        app = App(connector=PsycopgConnector(conninfo=url))
        async with app.open_async():
            stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=backend.stall_seconds)
            return [await asyncio.to_thread(backend.recover_stalled, entry.id) for entry in stalled]

    return asyncio.run(run())


def test_a_job_goes_only_to_a_worker_serving_its_model_and_waits_saying_why(backend, postgres_url):
    turbo_job, _ = backend.submit(make_request("turbo"))
    base_job, _ = backend.submit(make_request("base", model=BASE))
    lm_job, _ = backend.submit(FormatRequest(caption="rough"))
    thinking_job, _ = backend.submit(make_request("with codes", thinking=True))
    assert worker_queues(served(TURBO)) == [queue_for_model(TURBO)]
    assert worker_queues(served(TURBO, BASE, lm=True)) == [
        "dit:" + TURBO, "dit:" + BASE, "dit+lm:" + TURBO, "dit+lm:" + BASE, LM_QUEUE]

    # A worker with the turbo model only registers (as runner.py's heartbeat does).
    DistributedWorker(postgres_url, backend, None, served(TURBO), name="turbo-only")._register()
    backend._workers.clear()
    assert backend.get(turbo_job.id).stage == "queued"
    assert backend.get(base_job.id).stage == f"queued: no live worker serves model {BASE}"
    assert backend.get(lm_job.id).stage == "queued: no live worker has the 5 Hz LM"
    assert backend.get(thinking_job.id).stage == f"queued: no live worker serves model {TURBO} with the 5 Hz LM"
    assert backend.workers() == {"alive": 1, "models": [TURBO], "lm": False}

    turbo_worker = ProcrastinateWorker(postgres_url, backend, worker_queues(served(TURBO)))
    assert turbo_worker.take().id == turbo_job.id
    assert turbo_worker.take() is None  # the base and LM jobs are not for it
    lm_worker = ProcrastinateWorker(postgres_url, backend, worker_queues(served(TURBO, BASE, lm=True)))
    taken = {lm_worker.take().id for _ in range(3)}
    assert taken == {base_job.id, lm_job.id, thinking_job.id}


class EndsHeard:
    """An observer that keeps the job ends it is told of (its webhook hangs on them)."""

    def __init__(self):
        self.ended: list[tuple[str, Outcome]] = []

    def job_submitted(self, job) -> None:
        pass

    def job_started(self, job) -> None:
        pass

    def job_ended(self, job, outcome) -> None:
        self.ended.append((job.id, outcome))


def test_a_dead_workers_job_runs_again_once_and_a_second_death_fails_it_with_the_reason(backend, postgres_url):
    backend.events = heard = EndsHeard()
    job, _ = backend.submit(make_request())
    later, _ = backend.submit(make_request("later"))
    first = ProcrastinateWorker(postgres_url, backend)
    assert first.take().attempts == 1
    assert recover(postgres_url, backend) == []  # alive: nothing to do
    first.die()
    assert recover(postgres_url, backend) == [JobStatus.QUEUED]
    assert backend.position(job.id) == 1 and backend.position(later.id) == 2  # its place in line kept

    second = ProcrastinateWorker(postgres_url, backend)
    again = second.take()
    assert (again.id, again.attempts) == (job.id, 2)
    second.die()
    assert heard.ended == []  # the first death queued it again: no end
    assert recover(postgres_url, backend) == [JobStatus.FAILED]
    assert heard.ended == [(job.id, Outcome.CRASHED)]  # the recovering process tells of the end
    failed = backend.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == ("The server stopped while this job was running (attempt 2 of 2); "
                            "it was not retried again.")
    assert recover(postgres_url, backend) == []  # its queue entry is closed

    # A run still going on a worker taken for dead cannot end the job a second time.
    backend.finish(again, make_result(["/out/late.wav"]))
    assert backend.get(job.id).status is JobStatus.FAILED
    assert heard.ended == [(job.id, Outcome.CRASHED)]


def test_retention_purges_old_finished_jobs_with_their_queue_entries(backend, postgres_url, tmp_path):
    from acestep_api.jobs.retention import purge_expired

    old, _ = backend.submit(make_request("old"))
    waiting, _ = backend.submit(make_request("waiting"))
    worker = ProcrastinateWorker(postgres_url, backend)
    taken = worker.take()
    audio = tmp_path / "old.wav"
    audio.write_bytes(b"RIFF")
    backend.finish(taken, make_result([str(audio)]))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        # procrastinate closes its entry when the task returns; here, as it would
        conn.execute("SELECT procrastinate_finish_job_v1(procrastinate_id, 'succeeded', false) "
                     "FROM acestep_jobs WHERE id = %s", (old.id,))
    purged = purge_expired(backend.store, retention_seconds=60, now=taken.finished_at + 61)
    assert [job.id for job in purged] == [old.id] and not audio.exists()
    assert backend.get(old.id) is None and backend.get(waiting.id).status is JobStatus.QUEUED
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        left = conn.execute("SELECT args->>'job_id' FROM procrastinate_jobs").fetchall()
    assert left == [(waiting.id,)]


def test_the_commands_migrate_and_refuse_without_a_database(postgres, monkeypatch, capsys):
    from acestep_api.cli import main

    fresh = postgres.url(postgres.create_database())
    monkeypatch.setenv("ACESTEP_DATABASE_URL", fresh)
    assert main(["db", "migrate"]) == 0 and "created" in capsys.readouterr().out
    assert main(["db", "migrate"]) == 0 and "up to date" in capsys.readouterr().out
    with psycopg.connect(fresh, autocommit=True) as conn:
        tables = {name for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"acestep_jobs", "acestep_workers", "procrastinate_jobs", "procrastinate_workers"} <= tables

    monkeypatch.delenv("ACESTEP_DATABASE_URL")
    assert main(["db", "migrate"]) == 2
    assert main(["worker"]) == 2
    assert main(["serve", "--with-worker"]) == 2
    assert "ACESTEP_DATABASE_URL" in capsys.readouterr().err


def test_a_job_cancelled_after_procrastinate_handed_it_out_still_never_runs(backend, postgres_url):
    job, _ = backend.submit(make_request())

    async def fetch_cancel_claim():
        app = App(connector=PsycopgConnector(conninfo=postgres_url))
        async with app.open_async():
            worker_id = await app.job_manager.register_worker()
            entry = await app.job_manager.fetch_job(queues=None, worker_id=worker_id)
            assert entry.task_kwargs["job_id"] == job.id
            await asyncio.to_thread(backend.cancel, job.id)  # arrives between fetch and claim
            return await asyncio.to_thread(backend.claim, job.id, "w")

    assert asyncio.run(fetch_cancel_claim()) is None
    cancelled = backend.get(job.id)
    assert (cancelled.status, cancelled.stage, cancelled.attempts) == (JobStatus.FAILED, "cancelled", 0)


def test_what_a_worker_serves_travels_as_json():
    from pathlib import Path

    from acestep_api.jobs.distributed.backend import served_from_json, served_to_json

    original = ServedModels(models=(ServedModel(TURBO, True, ("text2music", "cover")),), lm_model="lm",
                            lm_available=True, is_demo=True, device="cuda", lora_dir=Path("/srv/loras"))
    assert served_from_json(served_to_json(original)) == original
