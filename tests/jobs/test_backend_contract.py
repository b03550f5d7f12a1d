"""The behaviour both job backends share (jobs/backend.py), run against each: the embedded
queue on SQLite and the distributed one on a real PostgreSQL with procrastinate's queue."""

from __future__ import annotations

import asyncio
import threading

import pytest
from procrastinate import App, PsycopgConnector

from acestep_api.jobs.backend import JobBackend
from acestep_api.jobs.distributed.backend import PostgresJobBackend
from acestep_api.jobs.distributed.store import open_pool
from acestep_api.jobs.models import JobApi, JobStatus
from acestep_api.jobs.queue import CANCELLED_ERROR, JobCancelled, JobQueue, QueueFullError
from acestep_api.jobs.store import JobStore
from tests.jobs import make_request, make_result


class Harness:
    """A backend and what a worker does to take the next job from it."""

    def __init__(self, backend, take, counts):
        self.backend, self.take, self.counts = backend, take, counts


def _procrastinate_take(url: str, backend: PostgresJobBackend):
    """As a GPU worker does: procrastinate hands over the next job of any queue, the backend
    claims its row (None when there is nothing left to run)."""

    async def fetch():
        app = App(connector=PsycopgConnector(conninfo=url))
        async with app.open_async():
            worker_id = await app.job_manager.register_worker()
            while True:
                job = await app.job_manager.fetch_job(queues=None, worker_id=worker_id)
                if job is None:
                    return None
                claimed = await asyncio.to_thread(backend.claim, job.task_kwargs["job_id"], "test-worker")
                if claimed is not None:
                    return claimed

    return lambda: asyncio.run(fetch())


@pytest.fixture(params=["embedded", "postgres"])
def harness(request, tmp_path):
    if request.param == "embedded":
        store = JobStore(tmp_path / "jobs.sqlite3")
        queue = JobQueue(store, maxsize=3, avg_job_seconds=6.0, avg_window=2)
        yield Harness(queue, lambda: asyncio.run(queue.next_job()), store.counts)
        store.close()
        return
    url = request.getfixturevalue("postgres_url")
    backend = PostgresJobBackend(open_pool(url), tmp_path / "uploads", maxsize=3, avg_job_seconds=6.0,
                                 avg_window=2, primary_model="acestep-v15-turbo")
    yield Harness(backend, _procrastinate_take(url, backend), backend.store.counts)
    backend.close()


def test_both_backends_have_the_interface(harness):
    assert isinstance(harness.backend, JobBackend)
    assert harness.backend.mode in ("embedded", "distributed")


def test_submit_positions_and_eta(harness):
    backend = harness.backend
    jobs = [backend.submit(make_request(str(i)), api=JobApi.LEGACY)[0] for i in range(3)]
    assert [backend.position(job.id) for job in jobs] == [1, 2, 3]
    assert backend.eta_seconds(jobs[2].id) == 18.0  # 3 x 6 s, one worker
    assert backend.size == 3
    stored = backend.get(jobs[0].id)
    assert stored.status is JobStatus.QUEUED and stored.api is JobApi.LEGACY
    assert stored.request.prompt == "0"

    taken = harness.take()
    assert taken.id == jobs[0].id and taken.status is JobStatus.RUNNING and taken.attempts == 1
    assert backend.position(jobs[0].id) is None and backend.eta_seconds(jobs[0].id) is None
    assert [backend.position(job.id) for job in jobs[1:]] == [1, 2]
    assert backend.get(jobs[0].id).status is JobStatus.RUNNING
    assert backend.running_count == 1


def test_a_full_queue_refuses_and_stores_nothing(harness):
    for i in range(3):
        harness.backend.submit(make_request(str(i)))
    with pytest.raises(QueueFullError):
        harness.backend.submit(make_request("fourth"))
    assert harness.counts()["total"] == 3


def test_progress_finish_fail_and_the_average(harness):
    backend = harness.backend
    first, _ = backend.submit(make_request("one"))
    second, _ = backend.submit(make_request("two"))
    running = harness.take()
    backend.report_progress(running, 0.5, "diffusion step 4/8")
    seen = backend.get(first.id)
    assert (seen.progress, seen.stage) == (0.5, "diffusion step 4/8")
    running.started_at -= 10.0  # as if it had run 10 s
    backend.finish(running, make_result(["/out/a.wav"]))
    done = backend.get(first.id)
    assert done.status is JobStatus.SUCCEEDED and done.progress == 1.0 and done.stage == "succeeded"
    assert done.result.audio_paths == ["/out/a.wav"] and done.result.metas.bpm == 120

    running = harness.take()
    running.started_at -= 2.0
    backend.fail(running, "Generation failed: nope")
    failed = backend.get(second.id)
    assert (failed.status, failed.stage, failed.error) == (JobStatus.FAILED, "failed", "Generation failed: nope")
    assert backend.avg_job_seconds == pytest.approx(6.0, abs=0.1)  # (10 + 2) / 2
    stats = backend.stats()
    assert stats["jobs"] == {"total": 2, "queued": 0, "running": 0, "succeeded": 1, "failed": 1}
    assert (stats["queue_size"], stats["queue_maxsize"]) == (0, 3)
    backend.report_progress(running, 0.3, "late callback")  # never undoes the end
    assert backend.get(second.id).stage == "failed"


def test_a_cancelled_waiting_job_never_runs_and_the_order_holds(harness, tmp_path):
    backend = harness.backend
    first, _ = backend.submit(make_request("first"))
    second, _ = backend.submit(make_request("second"))
    third, _ = backend.submit(make_request("third"))
    cancelled = backend.cancel(second.id)
    assert (cancelled.status, cancelled.stage, cancelled.error) == (JobStatus.FAILED, "cancelled", CANCELLED_ERROR)
    assert [backend.position(job.id) for job in (first, third)] == [1, 2]
    assert [harness.take().id, harness.take().id] == [first.id, third.id]
    assert backend.get(second.id).attempts == 0
    assert backend.cancel("unknown") is None and backend.get("unknown") is None
    assert backend.position("unknown") is None


def test_a_cancelled_running_job_stops_at_its_next_progress_report(harness):
    backend = harness.backend
    job, _ = backend.submit(make_request())
    running = harness.take()
    backend.report_progress(running, 0.2, "diffusion step 1/8")
    assert backend.cancel(job.id).status is JobStatus.RUNNING
    assert backend.cancel_requested(job.id)
    if isinstance(backend, PostgresJobBackend):
        # On a worker, procrastinate's abort flag reaches the run (runner.py); here the
        # worker's own stop request stands for it.
        backend.request_stop(job.id)
    with pytest.raises(JobCancelled):
        backend.report_progress(running, 0.3, "diffusion step 2/8")
    backend.fail(running, "whatever the engine said")
    stored = backend.get(job.id)
    assert (stored.status, stored.stage, stored.error) == (JobStatus.FAILED, "cancelled", CANCELLED_ERROR)
    assert not backend.cancel_requested(job.id)


def test_wait_finished_wakes_when_the_job_ends_elsewhere_and_times_out(harness):
    backend = harness.backend
    job, _ = backend.submit(make_request())
    other, _ = backend.submit(make_request("other"))
    running = harness.take()

    async def scenario():
        threading.Timer(0.1, backend.finish, (running, make_result(["/tmp/a.mp3"]))).start()
        ended = await backend.wait_finished(job.id, timeout=5)
        waiting = await backend.wait_finished(other.id, timeout=0.05)
        unknown = await backend.wait_finished("nope", timeout=1)
        return ended, waiting, unknown

    ended, waiting, unknown = asyncio.run(scenario())
    assert ended.status is JobStatus.SUCCEEDED
    assert waiting.status is JobStatus.QUEUED and unknown is None


def test_jobs_are_charged_to_their_key_and_counted_per_key(harness):
    backend = harness.backend
    first, _ = backend.submit(make_request("one"), key_name="alice", audio_seconds=30.0)
    backend.submit(make_request("two"), key_name="alice", audio_seconds=12.5)
    backend.submit(make_request("three"))
    stored = backend.get(first.id)
    assert (stored.key_name, stored.audio_seconds) == ("alice", 30.0)
    counts = backend.store.key_counts(since=0.0)
    assert list(counts) == ["alice"]
    assert counts["alice"].jobs["queued"] == 2
    assert (counts["alice"].jobs_since, counts["alice"].audio_seconds_since) == (2, 42.5)
    assert backend.store.key_counts(since=first.created_at + 3600)["alice"].jobs_since == 0


def test_a_keys_usage_counts_its_jobs_seconds_and_waiting_jobs(harness):
    backend = harness.backend
    backend.submit(make_request("one"), key_name="bob", audio_seconds=20.0)
    backend.submit(make_request("two"), key_name="bob", audio_seconds=10.0)
    harness.take()
    usage = backend.store.key_usage("bob", since=0.0)
    assert (usage.jobs_since, usage.audio_seconds_since, usage.waiting) == (2, 30.0, 1)
    assert backend.store.key_usage("nobody", since=0.0).jobs_since == 0
