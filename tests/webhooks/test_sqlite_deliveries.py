"""The SQLite delivery store on a real database file: a delivery waits for its job's end, is
claimed for one attempt at a time, and goes when its job is removed."""

from __future__ import annotations

from acestep_api.engine.request import GenerationRequest
from acestep_api.jobs.models import Job
from acestep_api.jobs.store import JobStore
from acestep_api.webhooks.deliveries import DeliveryState
from acestep_api.webhooks.sqlite_deliveries import SQLiteDeliveryStore


def test_a_delivery_from_submission_to_its_claims(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    jobs, store = JobStore(path), SQLiteDeliveryStore(path)
    try:
        jobs.add(Job(id="a", request=GenerationRequest()))
        store.register("a", "https://example.com/a", 100.0)
        store.register("a", "https://example.com/other", 101.0)  # a second report changes nothing
        assert store.get("a").url == "https://example.com/a" and store.get("a").state is DeliveryState.WAITING
        assert store.claim_due(1e12, 1e12, 8) == []  # waiting: the job has not ended
        assert store.next_due_at() is None
        assert store.job_ended("a", '{"task_id": "a"}', 200.0)
        assert not store.job_ended("a", '{"other": 1}', 300.0)  # a job ends once
        assert store.next_due_at() == 200.0
        [claimed] = store.claim_due(250.0, 290.0, 8)
        assert claimed.payload == '{"task_id": "a"}' and claimed.next_attempt_at == 290.0
        assert store.claim_due(260.0, 300.0, 8) == []  # leased to the attempt in flight
        claimed.attempts, claimed.state, claimed.last_status = 1, DeliveryState.DELIVERED, 204
        store.record_attempt(claimed)
        assert store.get("a").state is DeliveryState.DELIVERED and store.next_due_at() is None
        # Reopened (a restart), the row is still there; gone once its job is.
        store.close()
        store = SQLiteDeliveryStore(path)
        assert store.get("a").last_status == 204
        assert store.purge_orphans() == 0
        jobs.purge_finished_before(float("inf"))  # "a" is queued: not purged
        jobs.save(Job(id="a", request=GenerationRequest(), status="failed", finished_at=1.0))
        assert [job.id for job in jobs.purge_finished_before(2.0)] == ["a"]
        assert store.purge_orphans() == 1 and store.get("a") is None
    finally:
        store.close()
        jobs.close()
