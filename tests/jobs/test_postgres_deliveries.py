"""The distributed mode's webhook deliveries (jobs/distributed/deliveries.py) on a real
PostgreSQL: a job submitted with a callback URL has its delivery in the same transaction and
its URL on its row; sender loops of several processes claiming at once never take one delivery
twice; a claim is a lease, due again when it runs out; deliveries of removed jobs are purged;
a delivery left waiting by a process that ended its job and stopped gets its answer."""

from __future__ import annotations

import json
import threading

import pytest

from acestep_api.jobs.distributed.backend import PostgresJobBackend
from acestep_api.jobs.distributed.store import open_pool
from acestep_api.jobs.distributed.stranded import announce_stranded
from acestep_api.webhooks.deliveries import DeliveryState
from acestep_api.webhooks.observer import WebhookEvents
from tests.jobs import make_request


@pytest.fixture
def backends(postgres_url, tmp_path):
    """Two backends on one database, as two processes have (a pool each)."""
    opened = [PostgresJobBackend(open_pool(postgres_url), tmp_path / "uploads", primary_model="acestep-v15-turbo")
              for _ in range(2)]
    yield opened
    for backend in opened:
        backend.close()


def test_a_delivery_is_registered_with_its_job(backends):
    first, second = backends
    job, _ = first.submit(make_request("x"), webhook_url="https://example.com/hook")
    plain, _ = first.submit(make_request("y"))
    delivery = second.deliveries.get(job.id)  # the other process sees it
    assert (delivery.url, delivery.state, delivery.attempts) == ("https://example.com/hook", DeliveryState.WAITING, 0)
    assert second.deliveries.get(plain.id) is None
    with first.store.connection() as conn:
        rows = dict(conn.execute("SELECT id, webhook_url FROM acestep_jobs").fetchall())
    assert rows == {job.id: "https://example.com/hook", plain.id: None}
    # Only a waiting delivery takes the job's answer, once.
    assert second.deliveries.job_ended(job.id, '{"a": 1}', now=10.0)
    assert not first.deliveries.job_ended(job.id, '{"a": 2}', now=11.0)
    assert not first.deliveries.job_ended(plain.id, "{}", now=11.0)
    ended = first.deliveries.get(job.id)
    assert (ended.state, ended.payload, ended.next_attempt_at) == (DeliveryState.PENDING, '{"a": 1}', 10.0)
    assert first.deliveries.next_due_at() == 10.0


def test_concurrent_claims_never_share_a_delivery_and_a_lease_runs_out(backends):
    first, second = backends
    ids = []
    for i in range(60):
        job, _ = first.submit(make_request(str(i)), webhook_url=f"https://example.com/{i}")
        first.deliveries.job_ended(job.id, "{}", now=100.0 + i)
        ids.append(job.id)
    claims: dict[int, list[str]] = {0: [], 1: []}
    start = threading.Barrier(2)

    def claim(n: int) -> None:
        store = backends[n].deliveries
        start.wait()
        while batch := store.claim_due(now=1000.0, lease_until=2000.0, limit=2):
            claims[n].extend(delivery.job_id for delivery in batch)

    threads = [threading.Thread(target=claim, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not set(claims[0]) & set(claims[1])
    assert sorted(claims[0] + claims[1]) == sorted(ids)
    assert claims[0] and claims[1]  # both loops took part

    # Claimed deliveries are due again only at the lease's end: then another loop takes them.
    assert second.deliveries.claim_due(now=1999.0, lease_until=3000.0, limit=100) == []
    assert first.deliveries.next_due_at() == 2000.0
    again = second.deliveries.claim_due(now=2000.0, lease_until=3000.0, limit=5)
    assert [delivery.job_id for delivery in again] == ids[:5]  # oldest first
    assert all(delivery.next_attempt_at == 3000.0 for delivery in again)

    # A settled delivery is never claimed again.
    done = again[0]
    done.state, done.attempts, done.last_status, done.next_attempt_at, done.delivered_at = (
        DeliveryState.DELIVERED, 1, 200, None, 2001.0)
    first.deliveries.record_attempt(done)
    stored = second.deliveries.get(done.job_id)
    assert (stored.state, stored.attempts, stored.last_status, stored.delivered_at) == (
        DeliveryState.DELIVERED, 1, 200, 2001.0)
    assert done.job_id not in {d.job_id for d in second.deliveries.claim_due(now=1e9, lease_until=2e9, limit=100)}


def test_deliveries_of_removed_jobs_are_purged(backends):
    first, _ = backends
    kept, _ = first.submit(make_request("kept"), webhook_url="https://example.com/kept")
    gone, _ = first.submit(make_request("gone"), webhook_url="https://example.com/gone")
    with first.store.connection() as conn:
        conn.execute("DELETE FROM acestep_jobs WHERE id = %s", (gone.id,))
    assert first.deliveries.purge_orphans() == 1
    assert first.deliveries.get(gone.id) is None and first.deliveries.get(kept.id) is not None
    assert first.deliveries.purge_orphans() == 0


def test_a_delivery_left_waiting_by_a_process_that_stopped_gets_its_answer(backends):
    first, second = backends
    job, _ = first.submit(make_request("x"), webhook_url="https://example.com/hook")
    recent, _ = first.submit(make_request("y"), webhook_url="https://example.com/hook")
    # Both ended in the table, as by a worker that then died before storing the answers.
    with first.store.connection() as conn:
        conn.execute("UPDATE acestep_jobs SET status = 'failed', stage = 'failed', error = 'gone', "
                     "finished_at = %s WHERE id = %s", (1000.0, job.id))
        conn.execute("UPDATE acestep_jobs SET status = 'failed', stage = 'failed', error = 'gone', "
                     "finished_at = %s WHERE id = %s", (1095.0, recent.id))
    webhooks = WebhookEvents(second.deliveries, lambda ended: {"task_id": ended.id, "error": ended.error})
    assert announce_stranded(second, webhooks, now=1100.0) == 1  # the other ended too recently
    delivery = first.deliveries.get(job.id)
    assert delivery.state is DeliveryState.PENDING and json.loads(delivery.payload) == {"task_id": job.id,
                                                                                          "error": "gone"}
    assert first.deliveries.get(recent.id).state is DeliveryState.WAITING
    assert announce_stranded(second, webhooks, now=1100.0) == 0  # done once
