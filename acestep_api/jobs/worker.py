"""The one worker that owns the accelerator: takes jobs in order and runs the engine on them.

The engine blocks for seconds to minutes, so it runs on a dedicated single thread (the same
thread for every job, which suits GPU contexts) while the event loop keeps serving HTTP. An
engine with ``render`` stops there once the audio is decoded: its files are encoded on a CPU
pool (``encode_workers`` threads) while the engine thread takes the next job; the job succeeds
once its files are written, and shows the stage "encoding" until then. At most
``encode_backlog`` jobs wait for or are in encoding while the next one renders; with the
backlog full the worker waits before it takes another job, so decoded audio held in memory is
bounded (docs/architecture.md#the-encoding-pool). With ``batch_max_items`` above 1 and an
engine that has ``render_batch``, the worker claims the job first in line together with waiting
jobs that may share its DiT call, up to that many batch items, and renders them at once; each
job still reports, is cancelled, fails and is encoded on its own
(docs/architecture.md#batching-jobs). When retention is set, a second task purges expired jobs
at start and then hourly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
from typing import Callable, Protocol

from acestep_api.engine.encoding import PROGRESS_ENCODING, Rendered, default_workers
from acestep_api.engine.adapter_tasks import AdapterAnswer, AdapterTask
from acestep_api.engine.lm_tasks import LMRequest, LMTaskResult
from acestep_api.engine.model_requests import ModelRequest, ModelResult
from acestep_api.engine.request import GenerationError, GenerationRequest, GenerationResult
from acestep_api.jobs.events import Outcome
from acestep_api.jobs.models import Job, JobKind, JobResult
from acestep_api.jobs.backend import JobBackend
from acestep_api.jobs.retention import purge_expired
from acestep_api.storage import LocalOutputs, OutputStore

log = logging.getLogger(__name__)

PURGE_INTERVAL_SECONDS = 3600.0
DEFAULT_ENCODE_BACKLOG = 1


class Engine(Protocol):
    def generate(
        self, request: GenerationRequest, progress: Callable[[float, str], None]
    ) -> GenerationResult: ...

    def run_lm_task(self, request: LMRequest) -> LMTaskResult: ...

    def run_adapter_task(self, request: AdapterTask) -> AdapterAnswer: ...
    def run_model_task(self, request: ModelRequest) -> ModelResult: ...

    # Optional, defined by the class (MusicEngine has it): generate up to the decoded audio,
    # the worker writes the files. def render(self, request, progress) -> Rendered: ...


class _Stopped(Exception):
    """Raised into an encoding still running when the worker stops: its files go, nothing is recorded."""


# What the engine must hand back for each kind of job.
_RESULT_TYPES = {JobKind.GENERATION: GenerationResult, JobKind.FORMAT: LMTaskResult, JobKind.SAMPLE: LMTaskResult,
                 JobKind.ADAPTER: AdapterAnswer, JobKind.MODELS: ModelResult}


INTERNAL_FAILURE = "an internal error occurred; the server log has the details"
# Two or more absolute path segments: "/srv/out/uploads/x.wav" (not "2/4" or "ogg/opus").
_SERVER_PATH = re.compile(r"(?<![\w.:/])(?:/[^\s'\"/:,;()]+){2,}")


def without_paths(message: str) -> str:
    """``message`` with each absolute path replaced by its file name: a path tells a client where
    the server keeps things."""
    return _SERVER_PATH.sub(lambda match: os.path.basename(match.group(0)), message)


def describe_failure(error: BaseException, job_id: str | None = None) -> str:
    """The reason a client reads for a failure: a GenerationError's own message (written for
    users), else a sentence that names no exception class, message or path; the caller logs
    the details. ``job_id`` points the operator to the log lines."""
    if isinstance(error, GenerationError):
        return without_paths(str(error)) or "Generation failed"
    return INTERNAL_FAILURE + (f" (job {job_id})" if job_id else "")


def job_failure(error: BaseException, job_id: str) -> str:
    """A failed job's error: a sentence for the user (GenerationError's message, as it is)."""
    if isinstance(error, GenerationError):
        return describe_failure(error)
    return f"Generation failed: {describe_failure(error, job_id)}"


def _defined_by(cls: type, name: str) -> type | None:
    """The class in ``cls``'s MRO whose body defines ``name`` (None: none does)."""
    return next((klass for klass in cls.__mro__ if name in vars(klass)), None)


class JobWorker:
    def __init__(
        self,
        queue: JobBackend,
        engine: Engine,
        retention_seconds: float | None = None,
        purge_interval: float = PURGE_INTERVAL_SECONDS,
        encode_workers: int | None = None,
        encode_backlog: int = DEFAULT_ENCODE_BACKLOG,
        outputs: OutputStore | None = None,
        batch_max_items: int = 1,
    ):
        self.queue = queue
        self.engine = engine
        self.retention_seconds = retention_seconds
        self.purge_interval = purge_interval
        self.encode_workers = encode_workers or default_workers()
        self.encode_backlog = max(0, encode_backlog)
        # Where the files go once written (a bucket, or nowhere else: the audio folder).
        self.outputs = outputs if outputs is not None else LocalOutputs(queue.store.path.parent, queue.store.upload_dir)
        self.batch_max_items = max(1, batch_max_items)
        self._tasks: list[asyncio.Task] = []
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        # The encoding pool: pieces run on _encoder; each job's encoding waits for its pieces on
        # a _coordinator thread (never on a pool thread, so a job never waits on its own pool).
        self._encoder: concurrent.futures.ThreadPoolExecutor | None = None
        self._coordinator: concurrent.futures.ThreadPoolExecutor | None = None
        # One slot per render (a job, or the jobs of one batch) whose decoded audio the worker
        # holds: the one rendering, and the backlog.
        self._slots: asyncio.Semaphore | None = None
        self._encodings: set[asyncio.Task] = set()
        # Set by stop(): a generate call still finishing in its thread must not write any more.
        self._stopped = False

    def start(self, take_jobs: bool = True) -> None:
        """Start the engine thread and the encoding pool, and with `take_jobs` the loop taking
        jobs from the queue (the distributed worker hands jobs to `run_job` itself)."""
        if self._tasks or self._executor is not None:
            return
        self._stopped = False
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="acestep-engine")
        self._encoder = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.encode_workers, thread_name_prefix="acestep-encode")
        self._coordinator = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.encode_backlog + 1, thread_name_prefix="acestep-encode-job")
        self._slots = asyncio.Semaphore(self.encode_backlog + 1)
        if take_jobs:
            self._tasks.append(asyncio.create_task(self._run_jobs(), name="acestep-job-worker"))
        if self.retention_seconds:
            self._tasks.append(asyncio.create_task(self._purge_periodically(), name="acestep-job-purge"))

    async def stop(self) -> None:
        """Stop taking jobs. A job cut short stays 'running' in the store and is retried by
        the next server start (see JobStore.recover_interrupted)."""
        self._stopped = True
        tasks, self._tasks = self._tasks, []
        tasks += list(self._encodings)  # jobs in encoding stay 'running' too
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Do not wait for a generate call or an encode in progress; the threads end with them.
        for pool in (self._executor, self._encoder, self._coordinator):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._executor = self._encoder = self._coordinator = None

    async def _run_jobs(self) -> None:
        while True:
            # Back-pressure: a free slot before the next render, so the audio held stays bounded.
            await self._slots.acquire()
            try:
                if self._batches():
                    jobs = await self.queue.next_batch(self._batch_key, self._batch_items, self.batch_max_items)
                else:
                    jobs = [await self.queue.next_job()]
                if len(jobs) == 1:
                    encodings = [task for task in [await self._start(jobs[0])] if task is not None]
                else:
                    encodings = await self._start_batch(jobs)
            except BaseException:
                self._slots.release()
                raise
            if not encodings:
                self._slots.release()
                continue
            # The render's slot is free once every one of its jobs is encoded.
            pending = set(encodings)

            def encoding_done(task: asyncio.Task, pending: set = pending) -> None:
                self._encodings.discard(task)
                pending.discard(task)
                if not pending:
                    self._slots.release()

            for task in encodings:
                self._encodings.add(task)
                task.add_done_callback(encoding_done)

    def _batches(self) -> bool:
        """Whether jobs are claimed in batches: more than one item allowed, and an engine that
        renders and whose class defines ``render_batch`` (with ``batch_key`` and ``batch_items``)
        where it defines ``render``: a wrapper or subclass that changes ``render`` alone must
        have its ``render`` called, job by job."""
        if self.batch_max_items <= 1 or not self._renders():
            return False
        cls = type(self.engine)
        owner = _defined_by(cls, "render")
        return all(_defined_by(cls, name) is owner for name in ("render_batch", "batch_key", "batch_items"))

    def _batch_key(self, job: Job):
        """The engine's batch key of a generation job; None (run alone) for every other kind, and
        for a request the key cannot be worked out for (its run will say what is wrong)."""
        if job.kind is not JobKind.GENERATION:
            return None
        try:
            return self.engine.batch_key(job.request)
        except Exception:  # noqa: BLE001 - never stop the worker over one job's key
            log.exception("Job %s: no batch key, it runs alone", job.id)
            return None

    def _batch_items(self, job: Job) -> int:
        return self.engine.batch_items(job.request) if job.kind is JobKind.GENERATION else 1

    async def run_job(self, job: Job) -> None:
        """Run one job to its end, its files written; never raises except on cancellation."""
        encoding = await self._start(job)
        if encoding is not None:
            await encoding

    async def _start(self, job: Job) -> asyncio.Task | None:
        """Run the engine on ``job``. A job that ends there is recorded; one with files to
        write comes back as the task that encodes them (and records the job)."""
        log.info("Job %s started (attempt %d)", job.id, job.attempts)
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(self._executor, self._generate, job)
        except asyncio.CancelledError:
            raise  # the job stays 'running' and keeps its uploads for the retry
        except Exception as error:  # noqa: BLE001 - any failure ends this job, not the worker
            self._failed(job, error)
            return None
        if isinstance(outcome, Rendered):
            return asyncio.create_task(self._encode(job, outcome), name=f"acestep-encode-{job.id}")
        self._end(job, result=outcome)
        return None

    async def _start_batch(self, jobs: list[Job]) -> list[asyncio.Task]:
        """Render ``jobs`` in one engine call; each ends or is encoded on its own. Returns the
        tasks encoding those that rendered."""
        log.info("Jobs %s started as one batch", ", ".join(job.id for job in jobs))
        loop = asyncio.get_running_loop()
        try:
            outcomes = await loop.run_in_executor(self._executor, self._render_batch, jobs)
        except asyncio.CancelledError:
            raise  # the jobs stay 'running' and keep their uploads for the retry
        except Exception as error:  # noqa: BLE001 - a failure of the shared call ends these jobs, not the worker
            outcomes = [error] * len(jobs)
        encodings = []
        for job, outcome in zip(jobs, outcomes):
            if isinstance(outcome, Exception):
                self._failed(job, outcome)
            elif isinstance(outcome, Rendered):
                encodings.append(asyncio.create_task(self._encode(job, outcome), name=f"acestep-encode-{job.id}"))
            else:
                self._end(job, result=outcome)
        return encodings

    def _render_batch(self, jobs: list[Job]) -> list[Rendered | JobResult | Exception]:
        """On the engine thread: one ``render_batch`` call, each job's outcome checked as ``_generate`` does."""
        def progress_of(job: Job) -> Callable[[float, str], None]:
            def progress(fraction: float, stage: str) -> None:
                if not self._stopped:
                    self.queue.report_progress(job, fraction, stage)
            return progress

        for job in jobs:
            for path in job.temp_files:  # uploads another machine received (a bucket's copies)
                self.outputs.fetch_upload(path)
        outcomes = self.engine.render_batch([job.request for job in jobs], [progress_of(job) for job in jobs])
        checked: list[Rendered | JobResult | Exception] = []
        for job, outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, Exception):
                checked.append(outcome)
            elif not isinstance(outcome, Rendered):
                checked.append(TypeError(f"engine rendered {type(outcome).__name__}, not Rendered"))
            elif outcome.plan is None:
                try:
                    checked.append(self._published(outcome.write(progress=progress_of(job))))
                except Exception as error:  # noqa: BLE001
                    checked.append(error)
            else:
                try:  # recorded before the engine thread moves on, as for a job alone
                    progress_of(job)(PROGRESS_ENCODING, "encoding")
                    checked.append(outcome)
                except Exception as error:  # noqa: BLE001 - a cancel just now
                    checked.append(error)
        return checked

    async def _encode(self, job: Job, rendered: Rendered) -> None:
        """Write a rendered job's files on the encoding pool, then record the job."""
        def progress(fraction: float, stage: str) -> None:
            if self._stopped:
                raise _Stopped()
            self.queue.report_progress(job, fraction, stage)  # raises JobCancelled on a cancel

        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                self._coordinator, lambda: self._published(rendered.write(self._encoder, progress, self.encode_workers)))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a failed encode ends this job, not the worker
            self._failed(job, error)
        else:
            self._end(job, result=result)

    def _failed(self, job: Job, error: Exception) -> None:
        if isinstance(error, GenerationError):
            log.warning("Job %s failed: %s", job.id, error)
            outcome = Outcome.GENERATION_ERROR
        else:
            log.exception("Job %s failed", job.id)
            outcome = Outcome.INTERNAL
        self._end(job, error=job_failure(error, job.id), outcome=outcome)

    def _renders(self) -> bool:
        """Whether the engine renders and leaves the files to the pool. `render` is looked up on
        the class, and a `generate` set on the instance wins: a wrapper that forwards attributes
        and overrides generate, or an engine whose generate was replaced (a test's fault, a
        profiler), must have its generate called."""
        return getattr(type(self.engine), "render", None) is not None and "generate" not in vars(self.engine)

    def _generate(self, job: Job) -> JobResult | Rendered:
        def progress(fraction: float, stage: str) -> None:
            if not self._stopped:
                self.queue.report_progress(job, fraction, stage)

        for path in job.temp_files:  # uploads another machine received (a bucket's copies)
            self.outputs.fetch_upload(path)
        kind = job.kind
        if kind is JobKind.GENERATION and self._renders():
            rendered = self.engine.render(job.request, progress)
            if not isinstance(rendered, Rendered):
                raise TypeError(f"engine rendered {type(rendered).__name__}, not Rendered")
            if rendered.plan is None:  # nothing to write (the analysis modes): the result is final
                return rendered.write(progress=progress)
            progress(PROGRESS_ENCODING, "encoding")  # recorded before the engine thread moves on
            return rendered
        if kind is JobKind.GENERATION:
            result = self._published(self.engine.generate(job.request, progress))
        elif kind is JobKind.ADAPTER:
            progress(0.1, f"adapter: {job.request.op}")  # a cancel asked for while it waited ends it here
            result = self.engine.run_adapter_task(job.request)
        elif kind is JobKind.MODELS:
            progress(0.1, "loading models")  # a cancel asked for while it waited ends it here
            result = self.engine.run_model_task(job.request)
        else:
            # One LM call: no steps to report between; a cancel asked for while it waited
            # in line ends it here, before the LM starts.
            progress(0.1, "LM: formatting caption and lyrics" if kind is JobKind.FORMAT
                     else "LM: writing a song from the description")
            result = self.engine.run_lm_task(job.request)
        expected = _RESULT_TYPES[kind]
        if not isinstance(result, expected):
            raise TypeError(f"engine returned {type(result).__name__}, not {expected.__name__}")
        return result

    def _published(self, result: JobResult) -> JobResult:
        """`result` once its files are in the output store (blocking: an engine or pool thread)."""
        if isinstance(result, GenerationResult) and result.audio_paths:
            self.outputs.publish(result.audio_paths)
        return result

    def _end(self, job: Job, result: JobResult | None = None, error: str | None = None,
             outcome: Outcome = Outcome.INTERNAL) -> None:
        if job.temp_files:
            # The bucket's copies of the job's uploads; the local ones go with the queue's end.
            asyncio.get_running_loop().run_in_executor(None, self.outputs.remove_uploads, list(job.temp_files))
        try:
            if result is not None:
                self.queue.finish(job, result)
                files = len(result.audio_paths) if isinstance(result, GenerationResult) else 0
                log.info("Job %s (%s) succeeded: %d audio files", job.id, job.kind.value, files)
            else:
                self.queue.fail(job, error or "Generation failed", outcome)
        except Exception:  # noqa: BLE001 - e.g. the store could not be written; keep serving
            # The queue removed the job's uploads even so: its _end deletes them in a finally.
            log.exception("Could not record the end of job %s", job.id)

    async def _purge_periodically(self) -> None:
        while True:
            try:
                await asyncio.to_thread(purge_expired, self.queue.store, self.retention_seconds, outputs=self.outputs)
            except Exception:  # noqa: BLE001 - a failed purge is retried at the next interval
                log.exception("Purging expired jobs failed")
            await asyncio.sleep(self.purge_interval)
