import sqlite3

from acestep_api.jobs.models import Job, JobApi, JobStatus
from acestep_api.jobs.store import JobStore
from tests.jobs import make_request, make_result


def new_job(job_id: str, created_at: float = 1000.0, **fields) -> Job:
    return Job(id=job_id, request=make_request(f"prompt {job_id}"), created_at=created_at, **fields)


def test_round_trip_keeps_every_field(tmp_path):
    store = JobStore(tmp_path / "db" / "jobs.sqlite3")
    job = new_job("a", api=JobApi.LEGACY, temp_files=["/tmp/upload.wav"])
    store.add(job)
    job.status = JobStatus.SUCCEEDED
    job.started_at, job.finished_at = 1001.5, 1003.0
    job.progress, job.stage, job.attempts = 1.0, "succeeded", 1
    job.result = make_result(["/out/a.mp3", "/out/b.mp3"])
    job.request = make_request("prompt a", bpm=95, batch_size=3)
    store.save(job)

    loaded = store.get("a")
    assert loaded == job
    assert loaded.api is JobApi.LEGACY and loaded.status is JobStatus.SUCCEEDED
    assert loaded.request.bpm == 95 and loaded.result.audio_paths == ["/out/a.mp3", "/out/b.mp3"]
    assert store.get("missing") is None
    store.close()


def test_database_uses_wal_mode(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    JobStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_waiting_follows_submission_order_even_with_equal_timestamps(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    for job_id in ["c", "a", "b", "d"]:
        store.add(new_job(job_id, created_at=5.0))
    running = store.get("a")
    running.status = JobStatus.RUNNING
    store.save(running)
    assert [j.id for j in store.waiting()] == ["c", "b", "d"]


def test_counts_and_recent_durations(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    finished = [("s1", JobStatus.SUCCEEDED, 10.0, 12.0), ("f1", JobStatus.FAILED, 20.0, 21.0),
                ("s2", JobStatus.SUCCEEDED, 30.0, 34.0)]
    for job_id, status, started, ended in finished:
        job = new_job(job_id)
        store.add(job)
        job.status, job.started_at, job.finished_at = status, started, ended
        store.save(job)
    store.add(new_job("q"))
    running = new_job("r", status=JobStatus.RUNNING, started_at=40.0)
    store.add(running)

    assert store.counts() == {"total": 5, "queued": 1, "running": 1, "succeeded": 2, "failed": 1}
    assert store.recent_durations(10) == [4.0, 1.0, 2.0]  # newest first, failures included
    assert store.recent_durations(2) == [4.0, 1.0]


def test_reopened_file_keeps_waiting_jobs_in_order(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    for job_id in ["first", "second", "third"]:
        store.add(new_job(job_id))
    store.close()

    reopened = JobStore(path)
    assert [j.id for j in reopened.waiting()] == ["first", "second", "third"]
    assert reopened.get("second").request.prompt == "prompt second"


def test_running_job_is_requeued_once_then_failed(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    for job_id in ["early", "victim", "late"]:
        store.add(new_job(job_id))
    victim = store.get("victim")
    victim.status, victim.attempts, victim.started_at = JobStatus.RUNNING, 1, 50.0
    victim.progress, victim.stage = 0.4, "diffusion step 3/8"
    store.save(victim)
    store.close()

    # First restart: back in line at its original place.
    store = JobStore(path)
    changed = store.recover_interrupted(max_attempts=2)
    assert [(j.id, j.status) for j in changed] == [("victim", JobStatus.QUEUED)]
    assert [j.id for j in store.waiting()] == ["early", "victim", "late"]
    requeued = store.get("victim")
    assert requeued.progress == 0.0 and requeued.stage == "queued" and requeued.started_at is None
    assert store.recover_interrupted() == []  # nothing left to recover

    # Second interruption: failed with its reason, not retried.
    requeued.status, requeued.attempts, requeued.started_at = JobStatus.RUNNING, 2, 60.0
    store.save(requeued)
    store.close()
    store = JobStore(path)
    changed = store.recover_interrupted(max_attempts=2)
    assert [(j.id, j.status) for j in changed] == [("victim", JobStatus.FAILED)]
    failed = store.get("victim")
    assert failed.status is JobStatus.FAILED and failed.finished_at is not None
    assert failed.error == (
        "The server stopped while this job was running (attempt 2 of 2); it was not retried again."
    )
    assert [j.id for j in store.waiting()] == ["early", "late"]
    # Its run time is unknown, so it does not count in the average.
    assert store.recent_durations(10) == []


def test_purge_deletes_only_old_finished_jobs(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    rows = [("old-ok", JobStatus.SUCCEEDED, 100.0), ("old-bad", JobStatus.FAILED, 150.0),
            ("new-ok", JobStatus.SUCCEEDED, 900.0), ("waiting", JobStatus.QUEUED, None),
            ("running", JobStatus.RUNNING, None)]
    for job_id, status, finished_at in rows:
        job = new_job(job_id, created_at=1.0)
        store.add(job)
        job.status, job.finished_at = status, finished_at
        store.save(job)

    purged = store.purge_finished_before(500.0)
    assert sorted(j.id for j in purged) == ["old-bad", "old-ok"]
    assert store.get("old-ok") is None and store.get("old-bad") is None
    assert {j for j in ["new-ok", "waiting", "running"] if store.get(j)} == {"new-ok", "waiting", "running"}
