"""The queue tells its observer (jobs/events.py) of each job submitted, started and ended, with
the class of a failure; an observer that raises changes nothing about the job."""

from __future__ import annotations

import asyncio

import pytest

from acestep_api.jobs.events import EventFanout, Outcome
from acestep_api.jobs.models import JobStatus
from acestep_api.jobs.queue import JobQueue
from acestep_api.jobs.store import JobStore
from tests.jobs import make_request, make_result


class Recorder:
    def __init__(self):
        self.events: list[tuple] = []

    def job_submitted(self, job):
        self.events.append(("submitted", job.id))

    def job_started(self, job):
        self.events.append(("started", job.id))

    def job_ended(self, job, outcome):
        self.events.append(("ended", job.id, outcome))


class Broken:
    def __getattr__(self, name):
        def fail(*args):
            raise RuntimeError(f"{name} is broken")
        return fail


@pytest.fixture
def store(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    yield store
    store.close()


def test_each_way_a_job_ends_is_told_with_its_outcome(store):
    recorder = Recorder()
    queue = JobQueue(store, events=recorder)
    ids = [queue.submit(make_request(str(i)))[0].id for i in range(5)]
    queue.cancel(ids[4])  # waiting
    outcomes = [Outcome.SUCCEEDED, Outcome.GENERATION_ERROR, Outcome.INTERNAL, Outcome.CANCELLED]
    for expected in outcomes:
        job = asyncio.run(queue.next_job())
        if expected is Outcome.SUCCEEDED:
            queue.finish(job, make_result(["/out/a.wav"]))
        elif expected is Outcome.CANCELLED:
            queue.cancel(job.id)  # running: whatever stops it, it counts as cancelled
            queue.fail(job, "stopped", Outcome.INTERNAL)
        else:
            queue.fail(job, "no", expected)
    ended = [(event[1], event[2]) for event in recorder.events if event[0] == "ended"]
    assert ended == [(ids[4], Outcome.CANCELLED), *zip(ids[:4], outcomes)]
    assert [event[1] for event in recorder.events if event[0] == "submitted"] == ids
    assert [event[1] for event in recorder.events if event[0] == "started"] == ids[:4]


def test_a_job_failed_at_recovery_is_told_as_crashed(store):
    job = JobQueue(store).submit(make_request())[0]
    job.status, job.attempts = JobStatus.RUNNING, 2
    store.save(job)
    recorder = Recorder()
    JobQueue(store, events=recorder)
    assert recorder.events == [("ended", job.id, Outcome.CRASHED)]


def test_an_observer_that_raises_changes_nothing(store):
    queue = JobQueue(store, events=Broken())
    job, position = queue.submit(make_request())
    assert position == 1
    taken = asyncio.run(queue.next_job())
    queue.finish(taken, make_result(["/out/a.wav"]))
    assert store.get(job.id).status is JobStatus.SUCCEEDED


def test_a_fanout_tells_every_observer_even_past_a_broken_one(store):
    first, second = Recorder(), Recorder()
    queue = JobQueue(store, events=EventFanout(first, Broken(), second))
    job, _ = queue.submit(make_request("x"))
    queue.cancel(job.id)
    expected = [("submitted", job.id), ("ended", job.id, Outcome.CANCELLED)]
    assert first.events == expected and second.events == expected
    assert store.get(job.id).status is JobStatus.FAILED
