import asyncio
import os
import time

import pytest
import soundfile as sf

from acestep_api.jobs.models import JobStatus
from acestep_api.jobs.queue import JobQueue
from acestep_api.jobs.store import JobStore
from acestep_api.jobs.worker import JobWorker
from tests.jobs import WavEngine, make_request, make_result


@pytest.fixture
def store(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    yield store
    store.close()


async def wait_until_finished(queue: JobQueue, job_ids, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [queue.get(i) for i in job_ids]
        if all(j.status in (JobStatus.SUCCEEDED, JobStatus.FAILED) for j in jobs):
            return jobs
        await asyncio.sleep(0.01)
    raise AssertionError("jobs did not finish in time")


def run_jobs(queue: JobQueue, engine, requests, **worker_options):
    """Submit the requests, run the worker until they are done, return the jobs."""

    async def scenario():
        ids = [queue.submit(request)[0].id for request in requests]
        worker = JobWorker(queue, engine, **worker_options)
        worker.start()
        try:
            return await wait_until_finished(queue, ids)
        finally:
            await worker.stop()

    return asyncio.run(scenario())


def test_jobs_run_in_order_and_produce_real_audio(store, tmp_path):
    engine = WavEngine(tmp_path / "audio")
    queue = JobQueue(store)
    jobs = run_jobs(queue, engine, [make_request(p, batch_size=2) for p in ["first", "second", "third"]])

    assert engine.calls == ["first", "second", "third"]
    assert len(engine.threads) == 1  # one engine thread owns the accelerator
    starts = [j.started_at for j in jobs]
    assert starts == sorted(starts)
    for job in jobs:
        stored = store.get(job.id)
        assert stored.status is JobStatus.SUCCEEDED and stored.attempts == 1
        assert len(stored.result.audio_paths) == 2
        data, rate = sf.read(stored.result.audio_paths[0])
        assert rate == 8000 and len(data) == 800


def test_failures_are_readable_and_the_next_job_still_runs(store, tmp_path, caplog):
    engine = WavEngine(tmp_path / "audio")
    queue = JobQueue(store)
    with caplog.at_level("ERROR", logger="acestep_api.jobs.worker"):
        failed, crashed, fine = run_jobs(
            queue, engine, [make_request("please fail"), make_request("crash now"), make_request("fine")]
        )

    assert store.get(failed.id).status is JobStatus.FAILED
    assert store.get(failed.id).error == "Reference audio could not be read"
    # No exception class or message for the client (issue #10); the job id leads to the log.
    assert store.get(crashed.id).error == (
        f"Generation failed: an internal error occurred; the server log has the details (job {crashed.id})")
    assert "Traceback" in caplog.text and "ValueError: boom" in caplog.text  # traceback only in the log
    assert store.get(fine.id).status is JobStatus.SUCCEEDED
    assert queue.stats()["jobs"] == {"total": 3, "queued": 0, "running": 0, "succeeded": 1, "failed": 2}


def test_progress_reaches_the_store_while_running(store, tmp_path):
    class WatchedEngine(WavEngine):
        def generate(self, request, progress):
            progress(0.4, "diffusion step 3/8")
            self.seen = store.get(self.job_id)  # what a poller would read right now
            return super().generate(request, progress)

    engine = WatchedEngine(tmp_path / "audio")
    queue = JobQueue(store)
    job, _ = queue.submit(make_request("watched"))
    engine.job_id = job.id

    async def scenario():
        worker = JobWorker(queue, engine)
        worker.start()
        try:
            await wait_until_finished(queue, [job.id])
        finally:
            await worker.stop()

    asyncio.run(scenario())
    assert engine.seen.status is JobStatus.RUNNING
    assert (engine.seen.progress, engine.seen.stage) == (0.4, "diffusion step 3/8")
    assert store.get(job.id).progress == 1.0


def test_event_loop_stays_responsive_while_generate_blocks(store, tmp_path):
    engine = WavEngine(tmp_path / "audio", delay=0.5)
    queue = JobQueue(store)
    ticks = []

    async def scenario():
        job, _ = queue.submit(make_request("slow"))
        worker = JobWorker(queue, engine)
        worker.start()

        async def ticker():
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.02)

        tick_task = asyncio.create_task(ticker())
        try:
            await wait_until_finished(queue, [job.id])
        finally:
            tick_task.cancel()
            await worker.stop()

    asyncio.run(scenario())
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(ticks) >= 10  # the loop kept ticking through the 0.5 s generate
    assert max(gaps) < 0.3


def test_temp_files_are_deleted_when_a_job_ends(store, tmp_path):
    engine = WavEngine(tmp_path / "audio")
    queue = JobQueue(store)
    store.upload_dir.mkdir()
    uploads = []
    for name in ["ok.wav", "bad.wav"]:
        path = store.upload_dir / name
        path.write_bytes(b"upload")
        uploads.append(str(path))
    # Recorded with a job, but not in the upload folder: a client's own file is never deleted.
    client_file = tmp_path / "client.wav"
    client_file.write_bytes(b"mine")

    async def scenario():
        ok, _ = queue.submit(make_request("fine"), temp_files=[uploads[0], str(client_file)])
        bad, _ = queue.submit(make_request("crash"), temp_files=[uploads[1], str(store.upload_dir / "gone.wav")])
        worker = JobWorker(queue, engine)
        worker.start()
        try:
            await wait_until_finished(queue, [ok.id, bad.id])
        finally:
            await worker.stop()

    asyncio.run(scenario())
    assert not any(os.path.exists(p) for p in uploads)
    assert client_file.read_bytes() == b"mine"


def test_stop_leaves_a_cut_job_running_for_the_restart(store, tmp_path):
    engine = WavEngine(tmp_path / "audio", delay=0.3)
    queue = JobQueue(store)
    store.upload_dir.mkdir()
    upload = store.upload_dir / "upload.wav"
    upload.write_bytes(b"x")

    async def scenario():
        job, _ = queue.submit(make_request("cut"), temp_files=[str(upload)])
        worker = JobWorker(queue, engine)
        worker.start()
        while store.get(job.id).progress != 0.25:
            await asyncio.sleep(0.01)
        await worker.stop()
        return job

    job = asyncio.run(scenario())
    time.sleep(0.4)  # let the cut generate call return in its thread: it must write nothing
    stored = store.get(job.id)
    assert stored.status is JobStatus.RUNNING and stored.progress == 0.25
    assert upload.exists()  # kept for the retry
    assert JobQueue(store).position(job.id) == 1


def test_retention_purge_removes_old_jobs_and_their_files(store, tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    queue = JobQueue(store)

    def finished_job(name: str, finished_at: float | None, status=JobStatus.SUCCEEDED):
        path = audio / f"{name}.wav"
        path.write_bytes(b"audio")
        job, _ = queue.submit(make_request(name))
        if finished_at is None:
            return job, path
        taken = asyncio.run(queue.next_job())
        queue.finish(taken, make_result([str(path)]))
        taken.status, taken.finished_at = status, finished_at
        store.save(taken)
        return taken, path

    now = time.time()
    old, old_file = finished_job("old", now - 10_000)
    old_failed, old_failed_file = finished_job("old-failed", now - 20_000, JobStatus.FAILED)
    recent, recent_file = finished_job("recent", now - 10)
    waiting, waiting_file = finished_job("waiting", None)

    async def scenario():
        worker = JobWorker(queue, WavEngine(tmp_path / "engine"), retention_seconds=3600)
        worker.start()
        # The first purge runs at start; the waiting job is then taken and run.
        deadline = time.monotonic() + 5
        while store.get(old.id) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await wait_until_finished(queue, [waiting.id])
        await worker.stop()

    asyncio.run(scenario())
    assert store.get(old.id) is None and not old_file.exists()
    assert store.get(old_failed.id) is None and not old_failed_file.exists()
    assert store.get(recent.id) is not None and recent_file.exists()
    assert store.get(waiting.id).status is JobStatus.SUCCEEDED and waiting_file.exists()


def test_a_cancelled_running_job_stops_between_steps_and_the_next_job_runs(store, tmp_path):
    steps_run = []

    class SteppingEngine(WavEngine):
        def generate(self, request, progress):
            if request.prompt == "long":
                for step in range(1, 200):
                    progress(step / 200, f"diffusion step {step}/200")
                    steps_run.append(step)
                    time.sleep(0.01)
            return super().generate(request, progress)

    queue = JobQueue(store)
    engine = SteppingEngine(tmp_path / "audio")

    async def scenario():
        long_job, _ = queue.submit(make_request("long"))
        next_job, _ = queue.submit(make_request("next"))
        worker = JobWorker(queue, engine)
        worker.start()
        try:
            while not steps_run:
                await asyncio.sleep(0.01)
            queue.cancel(long_job.id)
            cancelled = await queue.wait_finished(long_job.id, timeout=10)
            finished = await queue.wait_finished(next_job.id, timeout=10)
            return cancelled, finished
        finally:
            await worker.stop()

    cancelled, finished = asyncio.run(scenario())
    assert (cancelled.status, cancelled.stage, cancelled.error) == (JobStatus.FAILED, "cancelled", "Cancelled by request")
    assert len(steps_run) < 199
    assert finished.status is JobStatus.SUCCEEDED


def test_describe_failure_keeps_generation_errors_and_drops_paths():
    from acestep_api.engine.request import GenerationError
    from acestep_api.jobs.worker import describe_failure

    assert describe_failure(GenerationError("Generation produced NaN")) == "Generation produced NaN"
    leaked = GenerationError("src_audio_path: cannot open '/srv/out/uploads/ctx_audio_1.mp3'")
    assert describe_failure(leaked) == "src_audio_path: cannot open 'ctx_audio_1.mp3'"
    assert describe_failure(GenerationError("time signature 2/4; see https://example.org/a/b")) == (
        "time signature 2/4; see https://example.org/a/b")
    described = describe_failure(OSError(2, "No such file", "/srv/out/api_audio/x.mp3"), "job-1")
    assert described == "an internal error occurred; the server log has the details (job job-1)"
