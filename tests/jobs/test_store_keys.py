"""The job store's per-key counts (JobStore.key_usage, key_counts), on a fresh database and on
one written before jobs recorded their key."""

import sqlite3

from acestep_api.jobs.models import Job, JobStatus
from acestep_api.jobs.store import JobStore
from tests.jobs import make_request


def keyed_job(job_id: str, key_name: str | None, created_at: float, seconds: float = 0.0,
              status: JobStatus = JobStatus.QUEUED) -> Job:
    return Job(id=job_id, request=make_request(job_id), created_at=created_at, status=status,
               key_name=key_name, audio_seconds=seconds)


def test_key_usage_counts_since_a_time_and_waiting_at_any_time(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.add(keyed_job("yesterday", "alice", 50.0, 600.0))  # still waiting
    store.add(keyed_job("today-1", "alice", 150.0, 60.0, JobStatus.SUCCEEDED))
    store.add(keyed_job("today-2", "alice", 160.0, 30.0, JobStatus.FAILED))
    store.add(keyed_job("today-3", "alice", 170.0, 20.0))
    store.add(keyed_job("bob", "bob", 150.0, 999.0))
    store.add(keyed_job("anonymous", None, 150.0, 999.0))
    usage = store.key_usage("alice", since=100.0)
    assert (usage.jobs_since, usage.audio_seconds_since, usage.waiting) == (3, 110.0, 2)
    nobody = store.key_usage("carol", since=100.0)
    assert (nobody.jobs_since, nobody.audio_seconds_since, nobody.waiting) == (0, 0.0, 0)
    counts = store.key_counts(since=100.0)
    assert set(counts) == {"alice", "bob"}
    assert counts["alice"].jobs == {"queued": 2, "running": 0, "succeeded": 1, "failed": 1}
    assert (counts["alice"].jobs_since, counts["alice"].audio_seconds_since) == (3, 110.0)
    assert store.get("today-1").key_name == "alice" and store.get("today-1").audio_seconds == 60.0
    store.close()


def test_a_database_from_before_keys_gains_the_columns(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:  # the table as the server wrote it before jobs recorded their key
        db.execute("""CREATE TABLE jobs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, api TEXT NOT NULL,
            status TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
            progress REAL NOT NULL, stage TEXT NOT NULL, request TEXT NOT NULL, result TEXT,
            error TEXT, attempts INTEGER NOT NULL, temp_files TEXT NOT NULL,
            interrupted INTEGER NOT NULL DEFAULT 0, run_marker TEXT,
            kind TEXT NOT NULL DEFAULT 'generation')""")
        db.execute("INSERT INTO jobs (id, api, status, created_at, progress, stage, request, attempts, temp_files) "
                   "VALUES ('old', 'release_task', 'queued', 100.0, 0, 'queued', ?, 0, '[]')",
                   (make_request("old").model_dump_json(),))
    store = JobStore(path)
    assert store.get("old").key_name is None and store.get("old").audio_seconds == 0.0
    store.add(keyed_job("a", "alice", 150.0, 60.0))
    assert store.key_usage("alice", since=0.0).audio_seconds_since == 60.0
    store.close()
    with sqlite3.connect(path) as db:
        indexes = {row[1] for row in db.execute("PRAGMA index_list(jobs)")}
    assert "jobs_key" in indexes
