"""Batching through the queue and the worker on the tiny checkpoints: compatible waiting jobs
share one DiT call and each gets its own result, equal to its audio alone; one cancelled
mid-batch or failing on its own input ends alone; incompatible jobs run one by one; with
batch_max_items 1 nothing is batched."""

from __future__ import annotations

import asyncio
import copy
import time

import numpy as np
import pytest
import soundfile as sf

from acestep_api.engine.request import GenerationRequest
from acestep_api.jobs.models import JobStatus
from acestep_api.jobs.queue import CANCELLED_ERROR, JobQueue
from acestep_api.jobs.store import JobStore
from acestep_api.jobs.worker import JobWorker

TOLERANCE = 1e-5  # float32 sums in another order; tests/engine/test_render_batch.py says why


class Claims:
    """A queue observer that records the batches claimed (and ignores the other events)."""

    def __init__(self):
        self.batches: list[tuple[list[str], int]] = []

    def batch_claimed(self, jobs, items):
        self.batches.append(([job.request.prompt for job in jobs], items))

    def job_submitted(self, job): ...

    def job_started(self, job): ...

    def job_ended(self, job, outcome): ...


@pytest.fixture
def store(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    yield store
    store.close()


@pytest.fixture
def engine(tiny_engine, tmp_path):
    engine = copy.copy(tiny_engine)
    engine.output_dir = tmp_path / "audio"
    return engine


def song(prompt: str, seeds: list[int], duration: float = 10.0, **fields) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, lyrics=f"[verse]\n{prompt} " * (len(seeds) * 2), audio_duration=duration,
                             use_random_seed=False, seeds=seeds, batch_size=len(seeds), audio_format="wav32", **fields)


def run(queue: JobQueue, engine, requests, batch_max_items: int = 8, timeout: float = 120.0):
    """Submit every request while the worker is stopped, then run it until all have ended."""

    async def scenario():
        ids = [queue.submit(request)[0].id for request in requests]
        worker = JobWorker(queue, engine, batch_max_items=batch_max_items)
        worker.start()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                jobs = [queue.get(i) for i in ids]
                if all(job.status.ended for job in jobs):
                    return jobs
                await asyncio.sleep(0.02)
            raise AssertionError("the jobs did not end in time")
        finally:
            await worker.stop()

    return asyncio.run(scenario())


def assert_audio_as_alone(engine, job) -> None:
    alone = engine.render(job.request)
    assert job.result.seeds == alone.result.seeds
    assert len(job.result.audio_paths) == len(alone.plan.waves)
    for path, wave in zip(job.result.audio_paths, alone.plan.waves):
        written, rate = sf.read(path, dtype="float32", always_2d=True)
        assert rate == engine.sample_rate
        assert written.T.shape == wave.shape
        assert np.abs(wave).max() > 0.1
        assert np.abs(written.T - wave).max() < TOLERANCE


def test_compatible_jobs_share_one_call_and_each_gets_its_own_result(store, engine):
    claims = Claims()
    queue = JobQueue(store, events=claims)
    requests = [song("first", [1]), song("second song, longer caption", [2, 3]), song("third", [4], bpm=120)]
    jobs = run(queue, engine, requests)

    assert claims.batches == [(["first", "second song, longer caption", "third"], 4)]
    for job, request in zip(jobs, requests):
        stored = store.get(job.id)
        assert stored.status is JobStatus.SUCCEEDED, stored.error
        assert stored.attempts == 1 and stored.progress == 1.0
        assert stored.result.prompt == request.prompt and stored.result.seeds == request.seeds
        assert_audio_as_alone(engine, stored)
    assert stored.result.metas.bpm == 120
    paths = [p for job in jobs for p in store.get(job.id).result.audio_paths]
    assert len(set(paths)) == 4


class CancellingQueue(JobQueue):
    """Cancels the job whose prompt is `victim` once it reports diffusion step 3, as a client's
    cancel arriving mid-batch would; and keeps every job's stages."""

    victim = "cancel me"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stages: dict[str, list[str]] = {}

    def report_progress(self, job, fraction, stage):
        self.stages.setdefault(job.request.prompt, []).append(stage)
        if job.request.prompt == self.victim and stage == "diffusion step 3/8":
            self.cancel(job.id)
        super().report_progress(job, fraction, stage)


def test_a_job_cancelled_mid_batch_or_failing_on_its_input_ends_alone(store, engine):
    claims = Claims()
    queue = CancellingQueue(store, events=claims)
    requests = [song("keeps going", [1]), song("cancel me", [2, 3]),
                song("thinks", [4], thinking=True),  # this server has no 5 Hz LM
                song("goes on too", [5])]
    kept, cancelled, refused, other = run(queue, engine, requests)

    assert claims.batches == [(["keeps going", "cancel me", "thinks", "goes on too"], 5)]
    assert cancelled.status is JobStatus.FAILED and cancelled.error == CANCELLED_ERROR
    assert cancelled.result is None and queue.stages["cancel me"][-1] == "diffusion step 3/8"
    assert refused.status is JobStatus.FAILED and "5Hz LM" in refused.error
    for job in (kept, other):
        stored = store.get(job.id)
        assert stored.status is JobStatus.SUCCEEDED, stored.error
        assert "diffusion step 8/8" in queue.stages[job.request.prompt]
        assert_audio_as_alone(engine, stored)
    assert queue.stats()["jobs"]["succeeded"] == 2 and queue.stats()["jobs"]["failed"] == 2


def test_incompatible_jobs_run_one_by_one_in_order(store, engine):
    claims = Claims()
    queue = JobQueue(store, events=claims)
    requests = [song("ten seconds", [1]), song("twenty seconds", [2], duration=20.0),
                song("base model", [3], model="acestep-v15-base", inference_steps=2),
                song("random length", [4]).model_copy(update={"audio_duration": None})]
    jobs = run(queue, engine, requests)

    assert all(store.get(job.id).status is JobStatus.SUCCEEDED for job in jobs)
    # each claimed alone; the one with no duration cannot be batched and is not counted
    assert claims.batches == [(["ten seconds"], 1), (["twenty seconds"], 1), (["base model"], 1)]
    starts = [store.get(job.id).started_at for job in jobs]
    assert starts == sorted(starts)


def test_batch_max_items_one_turns_batching_off(store, engine):
    claims = Claims()
    queue = JobQueue(store, events=claims)
    jobs = run(queue, engine, [song("a", [1]), song("b", [2])], batch_max_items=1)
    assert all(store.get(job.id).status is JobStatus.SUCCEEDED for job in jobs)
    assert claims.batches == []
