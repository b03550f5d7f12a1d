"""The worker's encoding pool: the engine thread takes the next job while files are encoded, the
backlog is bounded, and a failed or cancelled encode ends its own job only."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from acestep_api.engine import encoding
from acestep_api.engine.encoding import EncodePlan, Rendered
from acestep_api.engine.request import Timings
from acestep_api.jobs.models import JobStatus
from acestep_api.jobs.queue import JobQueue
from acestep_api.jobs.store import JobStore
from acestep_api.jobs.worker import JobWorker
from tests.jobs import make_request, make_result


class RenderingEngine:
    """Renders a short tone per batch item; the worker writes the files (`fmt`, `sample_rate`)."""

    def __init__(self, out_dir, fmt: str = "wav", sample_rate: int = 48000):
        self.out_dir = out_dir
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.fmt, self.sample_rate = fmt, sample_rate
        self.calls: list[str] = []

    def render(self, request, progress) -> Rendered:
        self.calls.append(request.prompt)
        progress(0.5, "diffusion step 1/2")
        targets = tuple(self.out_dir / f"{request.prompt}-{i}.{self.fmt}" for i in range(request.batch_size))
        t = np.arange(self.sample_rate // 5) / self.sample_rate
        wave = np.stack([0.2 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
        result = make_result([str(p) for p in targets], timings=Timings(diffusion=0.05, total=0.1))
        return Rendered(result, EncodePlan(self.fmt, self.sample_rate, targets, (wave,) * len(targets)))

    def generate(self, request, progress):
        return self.render(request, progress).write(progress=progress)

    def run_lm_task(self, request):
        raise AssertionError("no LM jobs here")


@pytest.fixture
def store(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    yield store
    store.close()


@pytest.fixture
def gate(monkeypatch):
    """While the gate is closed, every encode piece waits for it."""
    opened = threading.Event()
    real = encoding.encode_bytes

    def gated(*args):
        assert opened.wait(10)
        return real(*args)

    monkeypatch.setattr(encoding, "encode_bytes", gated)
    return opened


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def test_the_next_job_renders_while_the_previous_one_encodes(store, tmp_path, gate):
    engine = RenderingEngine(tmp_path / "audio")
    queue = JobQueue(store)

    async def scenario():
        first, _ = queue.submit(make_request("first"))
        second, _ = queue.submit(make_request("second"))
        worker = JobWorker(queue, engine, encode_workers=2, encode_backlog=1)
        worker.start()
        try:
            await until(lambda: engine.calls == ["first", "second"])
            encoding_now = store.get(first.id)
            gate.set()
            await until(lambda: all(queue.get(j.id).status.ended for j in (first, second)))
            return encoding_now, store.get(first.id), store.get(second.id)
        finally:
            await worker.stop()

    encoding_now, first, second = asyncio.run(scenario())
    # Not succeeded before its files exist: the job shows the encoding stage meanwhile.
    assert (encoding_now.status, encoding_now.stage) == (JobStatus.RUNNING, "encoding")
    for job in (first, second):
        assert job.status is JobStatus.SUCCEEDED
        assert sf.info(job.result.audio_paths[0]).frames == 48000 // 5
        assert job.result.timings.encoding is not None and job.result.timings.encoding > 0
        assert job.result.timings.total >= job.result.timings.encoding


def test_a_full_backlog_holds_the_next_job_back(store, tmp_path, gate):
    engine = RenderingEngine(tmp_path / "audio")
    queue = JobQueue(store)

    async def scenario():
        ids = [queue.submit(make_request(name))[0].id for name in ("a", "b", "c")]
        worker = JobWorker(queue, engine, encode_workers=1, encode_backlog=1)
        worker.start()
        try:
            await until(lambda: engine.calls == ["a", "b"])
            await asyncio.sleep(0.3)
            held_back = (list(engine.calls), queue.get(ids[2]).status)
            gate.set()
            await until(lambda: all(queue.get(i).status.ended for i in ids))
            return held_back, [store.get(i).status for i in ids]
        finally:
            await worker.stop()

    (calls, third), statuses = asyncio.run(scenario())
    # "a" encodes, "b" waits for the pool: "c" is not taken until "a" is written.
    assert calls == ["a", "b"] and third is JobStatus.QUEUED
    assert statuses == [JobStatus.SUCCEEDED] * 3


def test_a_failed_encode_fails_its_job_only(store, tmp_path, caplog):
    # libsndfile's Opus encoder refuses 44.1 kHz: a real failure inside the encoder.
    broken = RenderingEngine(tmp_path / "audio", fmt="opus", sample_rate=44100)
    queue = JobQueue(store)

    class SometimesBroken(RenderingEngine):
        def render(self, request, progress):
            engine = broken if request.prompt == "broken" else super()
            return engine.render(request, progress)

    engine = SometimesBroken(tmp_path / "audio")

    async def scenario():
        bad, _ = queue.submit(make_request("broken", batch_size=2))
        good, _ = queue.submit(make_request("fine", batch_size=1))
        worker = JobWorker(queue, engine, encode_workers=2)
        worker.start()
        try:
            await until(lambda: all(queue.get(j.id).status.ended for j in (bad, good)))
            return store.get(bad.id), store.get(good.id)
        finally:
            await worker.stop()

    with caplog.at_level("ERROR", logger="acestep_api.jobs.worker"):
        bad, good = asyncio.run(scenario())
    assert bad.status is JobStatus.FAILED
    assert bad.error == f"Generation failed: an internal error occurred; the server log has the details (job {bad.id})"
    assert "Traceback" in caplog.text
    assert good.status is JobStatus.SUCCEEDED
    assert sorted(os.listdir(tmp_path / "audio")) == ["fine-0.wav"]  # nothing of the failed job


def test_a_job_cancelled_while_encoding_ends_cancelled_without_files(store, tmp_path, gate):
    engine = RenderingEngine(tmp_path / "audio")
    queue = JobQueue(store)

    async def scenario():
        job, _ = queue.submit(make_request("cancelled", batch_size=3))
        after, _ = queue.submit(make_request("after", batch_size=1))
        worker = JobWorker(queue, engine, encode_workers=1)
        worker.start()
        try:
            await until(lambda: queue.get(job.id).stage == "encoding")
            queue.cancel(job.id)
            gate.set()
            cancelled = await queue.wait_finished(job.id, timeout=10)
            finished = await queue.wait_finished(after.id, timeout=10)
            return cancelled, finished
        finally:
            await worker.stop()

    cancelled, finished = asyncio.run(scenario())
    assert (cancelled.status, cancelled.stage, cancelled.error) == (JobStatus.FAILED, "cancelled", "Cancelled by request")
    assert finished.status is JobStatus.SUCCEEDED
    assert sorted(os.listdir(tmp_path / "audio")) == ["after-0.wav"]


def test_stop_while_encoding_leaves_the_job_running_for_the_restart(store, tmp_path, gate):
    engine = RenderingEngine(tmp_path / "audio")
    queue = JobQueue(store)

    async def scenario():
        job, _ = queue.submit(make_request("cut"))
        worker = JobWorker(queue, engine, encode_workers=1)
        worker.start()
        await until(lambda: store.get(job.id).stage == "encoding")
        await worker.stop()
        gate.set()
        return job

    job = asyncio.run(scenario())
    time.sleep(0.3)  # the encode still in its thread must record nothing
    stored = store.get(job.id)
    assert stored.status is JobStatus.RUNNING and stored.stage == "encoding"
    assert not (tmp_path / "audio" / "cut-0.wav").exists()
