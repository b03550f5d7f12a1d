"""JobQueue.claim_batch's contract: the head first, then waiting jobs of its key in queue order
within the item budget, all marked running and stored; the others keep their places."""

from __future__ import annotations

import pytest

from acestep_api.jobs.models import JobStatus
from acestep_api.jobs.queue import JobQueue
from acestep_api.jobs.store import JobStore
from tests.jobs import make_request


@pytest.fixture
def store(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    yield store
    store.close()


def key_of(job):
    """Jobs whose prompt starts with the same word share a key; "solo ..." has none."""
    word = getattr(job.request, "prompt", "solo").split()[0]  # an adapter job has no prompt
    return None if word == "solo" else word


def items_of(job):
    return getattr(job.request, "batch_size", 1)


def submit(queue, *specs):
    return [queue.submit(make_request(prompt, batch_size=size))[0] for prompt, size in specs]


def prompts(jobs):
    return [job.request.prompt for job in jobs]


def test_nothing_waiting_claims_nothing(store):
    assert JobQueue(store).claim_batch(key_of, items_of, 8) == []


def test_the_head_and_its_kind_in_order_within_the_budget(store):
    queue = JobQueue(store)
    jobs = submit(queue, ("a 1", 2), ("b 1", 1), ("a 2", 4), ("a 3", 2), ("a 4", 1), ("b 2", 1))
    claimed = queue.claim_batch(key_of, items_of, 5)
    # a 2 (4 items) does not fit after a 1; a 3 does, then a 4 fills the budget
    assert prompts(claimed) == ["a 1", "a 3", "a 4"]
    for job in claimed:
        assert job.status is JobStatus.RUNNING and job.attempts == 1
        assert store.get(job.id).status is JobStatus.RUNNING
    assert queue.running_count == 3
    # the jobs passed over keep their order: b 1 is the next head
    assert [queue.position(job.id) for job in jobs] == [None, 1, 2, None, None, 3]
    assert prompts(queue.claim_batch(key_of, items_of, 5)) == ["b 1", "b 2"]
    assert prompts(queue.claim_batch(key_of, items_of, 5)) == ["a 2"]
    assert queue.size == 0


def test_a_head_without_a_key_or_filling_the_budget_goes_alone(store):
    queue = JobQueue(store)
    submit(queue, ("solo x", 1), ("solo y", 1), ("c 1", 3), ("c 2", 1))
    assert prompts(queue.claim_batch(key_of, items_of, 8)) == ["solo x"]  # no key: never batched
    assert prompts(queue.claim_batch(key_of, items_of, 8)) == ["solo y"]
    assert prompts(queue.claim_batch(key_of, items_of, 3)) == ["c 1"]  # the head alone fills it
    assert prompts(queue.claim_batch(key_of, items_of, 1)) == ["c 2"]


def test_an_observer_hears_each_batch_with_its_items(store):
    heard = []

    class Observer:
        def batch_claimed(self, jobs, items):
            heard.append((prompts(jobs), items))

        def job_submitted(self, job): ...

        def job_started(self, job): ...

        def job_ended(self, job, outcome): ...

    queue = JobQueue(store, events=Observer())
    submit(queue, ("d 1", 2), ("solo", 1), ("d 2", 3))
    queue.claim_batch(key_of, items_of, 8)
    queue.claim_batch(key_of, items_of, 8)
    assert heard == [(["d 1", "d 2"], 5)]  # the keyless head is not a batch


def test_a_cancelled_waiting_job_is_never_claimed(store):
    queue = JobQueue(store)
    first, second, third = submit(queue, ("e 1", 1), ("e 2", 1), ("e 3", 1))
    queue.cancel(second.id)
    assert prompts(queue.claim_batch(key_of, items_of, 8)) == ["e 1", "e 3"]


def test_no_job_joins_from_behind_an_adapter_job(store):
    from acestep_api.engine.adapter_tasks import AdapterTask

    queue = JobQueue(store)
    submit(queue, ("f 1", 1), ("f 2", 1))
    queue.submit(AdapterTask(op="toggle", use_lora=True))
    submit(queue, ("f 3", 1))
    # f 3 would run with the defaults the adapter job sets: it waits for it
    assert prompts(queue.claim_batch(key_of, items_of, 8)) == ["f 1", "f 2"]
