import asyncio
import os
import sqlite3
import threading

import pytest

from acestep_api.jobs.models import JobApi, JobStatus
from acestep_api.jobs.queue import CANCELLED_ERROR, JobCancelled, JobQueue, QueueFullError
from acestep_api.jobs.store import JobStore
from tests.jobs import make_request, make_result


@pytest.fixture
def store(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    yield store
    store.close()


def test_submit_stores_before_queueing_and_returns_position(store):
    queue = JobQueue(store, maxsize=5)
    first, position1 = queue.submit(make_request("one"), temp_files=["/tmp/x.wav"])
    second, position2 = queue.submit(make_request("two"), api=JobApi.LEGACY)
    assert (position1, position2) == (1, 2)
    assert store.get(first.id).temp_files == ["/tmp/x.wav"]
    assert store.get(second.id).api is JobApi.LEGACY
    assert first.id != second.id and len(first.id) == 36
    assert queue.get(first.id) is first  # the live object while waiting
    assert queue.size == 2


def test_full_queue_refuses_and_stores_nothing(store):
    queue = JobQueue(store, maxsize=2)
    queue.submit(make_request())
    queue.submit(make_request())
    with pytest.raises(QueueFullError):
        queue.submit(make_request("third"))
    assert store.counts()["total"] == 2
    assert queue.size == 2


def test_positions_and_eta_follow_the_queue(store):
    queue = JobQueue(store, avg_job_seconds=7.5)
    jobs = [queue.submit(make_request(str(i)))[0] for i in range(3)]
    assert [queue.position(j.id) for j in jobs] == [1, 2, 3]
    assert queue.eta_seconds(jobs[2].id) == 22.5

    taken = asyncio.run(queue.next_job())
    assert taken is jobs[0]
    assert queue.position(jobs[0].id) is None and queue.eta_seconds(jobs[0].id) is None
    assert [queue.position(j.id) for j in jobs[1:]] == [1, 2]
    assert queue.position("unknown") is None


def test_next_job_marks_running_and_saves(store):
    queue = JobQueue(store)
    job, _ = queue.submit(make_request())
    taken = asyncio.run(queue.next_job())
    stored = store.get(job.id)
    for record in (taken, stored):
        assert record.status is JobStatus.RUNNING
        assert record.attempts == 1 and record.progress == 0.01 and record.stage == "running"
        assert record.started_at is not None
    assert queue.get(job.id) is taken


def test_finish_and_fail_record_outcome_and_average(store):
    queue = JobQueue(store, avg_job_seconds=5.0, avg_window=2)
    assert queue.avg_job_seconds == 5.0
    jobs = [queue.submit(make_request(str(i)))[0] for i in range(3)]
    durations = [10.0, 2.0, 4.0]
    for job, duration in zip(jobs, durations):
        taken = asyncio.run(queue.next_job())
        taken.started_at -= duration  # as if it had run that long
        if job is jobs[1]:
            queue.fail(taken, "GenerationError: nope")
        else:
            queue.finish(taken, make_result(["/out/a.wav"]))

    assert queue.avg_job_seconds == pytest.approx(3.0, abs=0.05)  # last 2 only, failure included
    done = store.get(jobs[0].id)
    assert done.status is JobStatus.SUCCEEDED and done.progress == 1.0 and done.stage == "succeeded"
    assert done.result.audio_paths == ["/out/a.wav"] and done.finished_at >= done.started_at
    failed = store.get(jobs[1].id)
    assert failed.status is JobStatus.FAILED and failed.stage == "failed" and failed.error == "GenerationError: nope"

    # A restarted queue computes the same average from the store.
    assert JobQueue(store, avg_window=2).avg_job_seconds == pytest.approx(3.0, abs=0.05)


def test_stats_shape(store):
    queue = JobQueue(store, maxsize=9, avg_job_seconds=6.0)
    queue.submit(make_request())
    queue.submit(make_request())
    asyncio.run(queue.next_job())
    assert queue.stats() == {
        "jobs": {"total": 2, "queued": 1, "running": 1, "succeeded": 0, "failed": 0},
        "queue_size": 1,
        "queue_maxsize": 9,
        "avg_job_seconds": 6.0,
    }


def test_restart_reloads_waiting_jobs_in_order_and_requeues_running(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    queue = JobQueue(store)
    ids = [queue.submit(make_request(str(i)))[0].id for i in range(4)]
    asyncio.run(queue.next_job())  # ids[0] is running when the "server" dies
    store.close()

    store = JobStore(path)
    restarted = JobQueue(store)
    assert [restarted.position(i) for i in ids] == [1, 2, 3, 4]
    assert asyncio.run(restarted.next_job()).id == ids[0]
    assert store.get(ids[0]).attempts == 2


def test_progress_writes_are_throttled(store):
    queue = JobQueue(store)
    queue.submit(make_request())
    job = asyncio.run(queue.next_job())

    queue.report_progress(job, 0.015, "running")  # +0.005, same stage: memory only
    assert job.progress == 0.015 and store.get(job.id).progress == 0.01
    queue.report_progress(job, 0.5, "running")
    assert store.get(job.id).progress == 0.5
    queue.report_progress(job, 0.501, "diffusion step 4/8")  # stage change: written
    assert store.get(job.id).stage == "diffusion step 4/8"

    queue.finish(job, make_result([]))
    queue.report_progress(job, 0.3, "late callback")  # must not undo the final state
    assert job.progress == 1.0 and store.get(job.id).stage == "succeeded"


def test_submit_from_another_thread_wakes_the_waiting_worker(store):
    queue = JobQueue(store)

    async def scenario():
        waiter = asyncio.create_task(queue.next_job())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        thread = threading.Thread(target=queue.submit, args=(make_request("from thread"),))
        thread.start()
        thread.join()
        return await asyncio.wait_for(waiter, timeout=2)

    assert asyncio.run(scenario()).request.prompt == "from thread"


def _upload(store: JobStore, name: str) -> str:
    store.upload_dir.mkdir(exist_ok=True)
    path = store.upload_dir / name
    path.write_bytes(b"audio")
    return str(path)


def test_a_restart_removes_uploads_no_waiting_job_needs(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    queue = JobQueue(store)
    waits = _upload(store, "waits.wav")
    retried = _upload(store, "retried.wav")
    dies = _upload(store, "dies.wav")
    orphan = _upload(store, "orphan.wav")  # a server stopped mid-upload
    client_file = tmp_path / "client.wav"  # recorded with a job, but a client's own file
    client_file.write_bytes(b"mine")
    queue.submit(make_request("waits"), temp_files=[waits])
    for name, upload, attempts in [("retried", retried, 1), ("dies", dies, 2)]:
        job, _ = queue.submit(make_request(name), temp_files=[upload, str(client_file)])
        job.status, job.attempts, job.started_at = JobStatus.RUNNING, attempts, 1.0
        store.save(job)
    store.close()

    store = JobStore(path)
    queue = JobQueue(store)
    assert [job.request.prompt for job in store.waiting()] == ["waits", "retried"]
    assert sorted(str(p) for p in store.upload_dir.iterdir()) == sorted([waits, retried])
    assert not any(map(os.path.exists, (dies, orphan)))
    assert client_file.read_bytes() == b"mine"
    store.close()


def test_retention_purge_removes_the_uploads_of_purged_jobs_only(store, tmp_path):
    from acestep_api.jobs.retention import purge_expired

    queue = JobQueue(store)
    old_upload, recent_upload = _upload(store, "old.wav"), _upload(store, "recent.wav")
    client_file = tmp_path / "client.wav"
    client_file.write_bytes(b"mine")
    for name, upload, finished_at in [("old", old_upload, 10.0), ("recent", recent_upload, None)]:
        job, _ = queue.submit(make_request(name), temp_files=[upload, str(client_file)])
        if finished_at is not None:
            job.status, job.finished_at = JobStatus.FAILED, finished_at  # ended before cleanup ran
            store.save(job)
    purged = purge_expired(store, retention_seconds=100.0, now=1000.0)
    assert [job.request.prompt for job in purged] == ["old"]
    assert not os.path.exists(old_upload) and os.path.exists(recent_upload)
    assert client_file.read_bytes() == b"mine"


def test_an_ending_job_removes_its_uploads_even_if_the_store_fails(store, monkeypatch):
    queue = JobQueue(store)
    upload = _upload(store, "u.wav")
    queue.submit(make_request(), temp_files=[upload])
    job = asyncio.run(queue.next_job())

    def broken_save(job):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "save", broken_save)
    with pytest.raises(sqlite3.OperationalError):
        queue.fail(job, "boom")
    assert not os.path.exists(upload)


def test_cancelling_a_waiting_job_ends_it_at_once_and_keeps_the_order(store, tmp_path):
    queue = JobQueue(store)
    upload = store.upload_dir / "source.wav"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_bytes(b"RIFF")
    first, _ = queue.submit(make_request("first"))
    second, _ = queue.submit(make_request("second"), temp_files=[str(upload)])
    third, _ = queue.submit(make_request("third"))

    cancelled = queue.cancel(second.id)
    assert cancelled is second and cancelled.status is JobStatus.FAILED
    assert (cancelled.stage, cancelled.error) == ("cancelled", CANCELLED_ERROR)
    assert store.get(second.id).status is JobStatus.FAILED
    assert not upload.exists()
    assert [queue.position(j.id) for j in (first, third)] == [1, 2]
    assert queue.size == 2
    assert queue.cancel("unknown") is None
    # Cancelling a finished job changes nothing.
    assert queue.cancel(second.id).error == CANCELLED_ERROR


def test_cancelling_a_running_job_stops_it_at_its_next_progress_report(store):
    queue = JobQueue(store)
    job, _ = queue.submit(make_request())
    running = asyncio.run(queue.next_job())
    queue.report_progress(running, 0.2, "diffusion step 1/8")  # no cancel asked: fine

    assert queue.cancel(job.id) is running
    assert running.status is JobStatus.RUNNING and queue.cancel_requested(job.id)
    with pytest.raises(JobCancelled):
        queue.report_progress(running, 0.3, "diffusion step 2/8")
    queue.fail(running, "whatever the engine said")
    stored = store.get(job.id)
    assert (stored.status, stored.stage, stored.error) == (JobStatus.FAILED, "cancelled", CANCELLED_ERROR)
    assert not queue.cancel_requested(job.id)
    assert queue.avg_job_seconds == queue.default_job_seconds  # a cut run is no duration


def test_wait_finished_wakes_when_the_job_ends_from_another_thread(store):
    queue = JobQueue(store)
    job, _ = queue.submit(make_request())

    async def scenario():
        running = await queue.next_job()
        threading.Timer(0.05, queue.finish, (running, make_result(["/tmp/a.mp3"]))).start()
        return await queue.wait_finished(job.id, timeout=5)

    finished = asyncio.run(scenario())
    assert finished.status is JobStatus.SUCCEEDED
    assert queue._waiters == {}


def test_wait_finished_times_out_with_the_job_as_it_is(store):
    queue = JobQueue(store)
    job, _ = queue.submit(make_request())

    async def scenario():
        return await queue.wait_finished(job.id, timeout=0.05), await queue.wait_finished("nope", timeout=1)

    waiting, unknown = asyncio.run(scenario())
    assert waiting.status is JobStatus.QUEUED and unknown is None
    assert queue._waiters == {}
