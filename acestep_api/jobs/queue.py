"""The FIFO of waiting jobs: submission, positions, ETA, and job state transitions.

The store is the record; this queue holds the live `Job` objects of waiting and running jobs,
so that the HTTP layer reads current progress without a database round trip. `submit`,
`report_progress` and `cancel` may be called from any thread; `next_job` is awaited by the one
worker, `wait_finished` by any request handler that answers only once its job has ended.
An observer (`events`, jobs/events.py) hears of each job submitted, started and ended (the
metrics and the webhooks listen there).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Sequence

from acestep_api.wakeup import set_from_any_thread
from acestep_api.engine.request import GenerationError
from acestep_api.jobs.crash_evidence import CrashEvidence
from acestep_api.jobs.events import JobEvents, Outcome, tell
from acestep_api.jobs.models import Job, JobApi, JobKind, JobRequest, JobResult, JobStatus
from acestep_api.jobs.retention import remove_orphan_uploads, remove_uploads
from acestep_api.jobs.store import CANCELLED_STAGE, JobStore

log = logging.getLogger(__name__)

# Progress writes to the store are throttled: a write happens when the fraction moved by at
# least this much, the stage changed, or this many seconds passed since the last write.
PROGRESS_MIN_STEP = 0.01
PROGRESS_MIN_INTERVAL = 0.5


CANCELLED_ERROR = "Cancelled by request"


class QueueFullError(Exception):
    """`maxsize` jobs are already waiting."""


class JobCancelled(GenerationError):
    """Raised from a running job's progress report once a cancel was asked for, so the engine
    stops at its next step (between diffusion steps) and the worker ends the job."""

    def __init__(self) -> None:
        super().__init__(CANCELLED_ERROR)


class JobQueue:
    """The embedded job backend (jobs/backend.py): one process, SQLite, the worker in-process."""

    mode = "embedded"

    def __init__(
        self,
        store: JobStore,
        maxsize: int = 200,
        avg_job_seconds: float = 5.0,
        avg_window: int = 50,
        crash_evidence: CrashEvidence | None = None,
        events: JobEvents | None = None,
    ):
        self.store = store
        self.events = events
        # None (tests of the queue itself): every job found running counts as interrupted.
        self.crash_evidence = crash_evidence
        self.maxsize = maxsize
        self.default_job_seconds = avg_job_seconds
        self._lock = threading.RLock()
        # One process serves the queue, so any job still marked running was interrupted by
        # the previous server; recovery is idempotent if the caller already ran it.
        judge = crash_evidence.verdict if crash_evidence is not None else None
        for job in store.recover_interrupted(crashed=judge):
            if job.status is JobStatus.FAILED:
                remove_uploads(job.temp_files, store.upload_dir)
                log.warning("Job %s failed: %s", job.id, job.error)
                self._tell("job_ended", job, Outcome.CRASHED)
            else:
                log.info("Job %s was interrupted by a restart and is queued again", job.id)
        self._waiting: collections.deque[Job] = collections.deque(store.waiting())
        # Only waiting jobs still need their uploads; anything else there was left by a stop
        # mid-upload or mid-cleanup.
        orphans = remove_orphan_uploads(store.upload_dir, [p for job in self._waiting for p in job.temp_files])
        if orphans:
            log.info("Removed %d uploaded files no job owns", len(orphans))
        self._running: dict[str, Job] = {}
        durations = store.recent_durations(avg_window)
        self._durations: collections.deque[float] = collections.deque(reversed(durations), maxlen=avg_window)
        # job id -> (fraction, stage, monotonic time) of its last progress write
        self._last_write: dict[str, tuple[float, str, float]] = {}
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Running jobs asked to stop; job id -> futures of wait_finished callers.
        self._cancelling: set[str] = set()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future]]] = {}

    # --- reading ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self._waiting)

    @property
    def avg_job_seconds(self) -> float:
        with self._lock:
            if not self._durations:
                return self.default_job_seconds
            return sum(self._durations) / len(self._durations)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            live = self._running.get(job_id) or next((j for j in self._waiting if j.id == job_id), None)
        return live if live is not None else self.store.get(job_id)

    def position(self, job_id: str) -> int | None:
        with self._lock:
            for index, job in enumerate(self._waiting):
                if job.id == job_id:
                    return index + 1
        return None

    def eta_seconds(self, job_id: str) -> float | None:
        position = self.position(job_id)
        return None if position is None else position * self.avg_job_seconds

    @property
    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    def oldest_waiting_since(self) -> float | None:
        """When the job first in line was submitted (epoch seconds); None when none waits."""
        with self._lock:
            return self._waiting[0].created_at if self._waiting else None

    def cancel_requested(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancelling

    def workers(self) -> dict:
        """The one worker of this process."""
        return {"alive": 1}

    def stats(self) -> dict:
        return {
            "jobs": self.store.counts(),
            "queue_size": self.size,
            "queue_maxsize": self.maxsize,
            "avg_job_seconds": self.avg_job_seconds,
        }

    # --- submitting and taking -------------------------------------------------------

    def submit(
        self,
        request: JobRequest,
        api: JobApi = JobApi.RELEASE_TASK,
        temp_files: Sequence[str] = (),
        key_name: str | None = None,
        audio_seconds: float = 0.0,
        webhook_url: str | None = None,
    ) -> tuple[Job, int]:
        job = Job(
            id=str(uuid.uuid4()),
            request=request,
            api=api,
            created_at=time.time(),
            temp_files=list(temp_files),
            key_name=key_name,
            audio_seconds=audio_seconds,
            webhook_url=webhook_url,
        )
        with self._lock:
            if len(self._waiting) >= self.maxsize:
                raise QueueFullError("Server busy: queue is full")
            self.store.add(job)  # stored first: a job the client was told about is never lost
            self._waiting.append(job)
            position = len(self._waiting)
        self._tell("job_submitted", job)
        self._wake_worker()
        return job, position

    def key_guard(self, key_name: str | None) -> contextlib.AbstractContextManager:
        """Nothing to hold: one process stores every job, and a key's quota check and its job's
        insert run with no await between them."""
        return contextlib.nullcontext()

    def _wake_worker(self) -> None:
        set_from_any_thread(self._loop, self._wakeup)

    async def next_job(self) -> Job:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._wakeup = loop, asyncio.Event()
        while True:
            with self._lock:
                if self._waiting:
                    job = self._waiting.popleft()
                    self._mark_running(job)
                    return job
                self._wakeup.clear()
            await self._wakeup.wait()

    def claim_batch(
        self, key_of: Callable[[Job], Hashable | None], items_of: Callable[[Job], int], max_items: int
    ) -> list[Job]:
        """Claim the job first in line plus the waiting jobs that may share its run.

        Contract: returns [] when no job waits. Otherwise the head always comes first (the
        oldest job never waits for company). When ``key_of(head)`` is not None, the jobs behind
        it follow in queue order whose ``key_of`` equals the head's, each taken only while the
        sum of ``items_of`` over the claimed jobs stays within ``max_items`` (a job too large
        for the room left is passed over; a smaller one behind it may still join). The scan
        stops at an adapter job (``JobKind.ADAPTER``): it changes the engine's default adapter
        for the jobs behind it, so none of them may run before it. Every claimed job leaves the
        line and is marked running, atomically; the jobs passed over keep their places.
        ``key_of`` and ``items_of`` depend on the job's request alone (and the engine's state,
        which only an adapter job changes), so a store may compute them once, at submission.
        """
        with self._lock:
            if not self._waiting:
                return []
            head = self._waiting[0]
            claimed, key = [head], key_of(head)
            room = max_items - items_of(head)
            if key is not None:
                for job in list(self._waiting)[1:]:
                    if room <= 0 or job.kind is JobKind.ADAPTER:
                        break
                    if job.kind is head.kind and items_of(job) <= room and key_of(job) == key:
                        claimed.append(job)
                        room -= items_of(job)
            for job in claimed:
                self._waiting.remove(job)
                self._mark_running(job)
        if key is not None:
            self._tell_batch(claimed, max_items - room)
        return claimed

    async def next_batch(
        self, key_of: Callable[[Job], Hashable | None], items_of: Callable[[Job], int], max_items: int
    ) -> list[Job]:
        """Wait until a job waits, then ``claim_batch``."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._wakeup = loop, asyncio.Event()
        while True:
            with self._lock:
                claimed = self.claim_batch(key_of, items_of, max_items)
                if claimed:
                    return claimed
                self._wakeup.clear()
            await self._wakeup.wait()

    def _mark_running(self, job: Job) -> None:
        job.status = JobStatus.RUNNING
        job.attempts += 1
        job.started_at = time.time()
        job.finished_at = None
        job.stage = "running"
        job.progress = 0.01
        job.error = None
        # Saved with the job before the engine touches it: if the process dies now, the
        # next start compares this with what it finds (see jobs/crash_evidence.py).
        job.run_marker = self.crash_evidence.marker() if self.crash_evidence is not None else None
        self._running[job.id] = job
        self._last_write[job.id] = (job.progress, job.stage, time.monotonic())
        self.store.save(job)
        self._tell("job_started", job)

    # --- cancelling and waiting ------------------------------------------------------

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a job: a waiting one ends at once; a running one is asked to stop and ends
        at its next progress report (the worker records it). A finished job is returned
        unchanged, an unknown id gives None."""
        with self._lock:
            waiting = next((job for job in self._waiting if job.id == job_id), None)
            if waiting is not None:
                self._waiting.remove(waiting)
                waiting.error = CANCELLED_ERROR
                self._end(waiting, JobStatus.FAILED, Outcome.CANCELLED, stage=CANCELLED_STAGE)
                return waiting
            running = self._running.get(job_id)
            if running is not None:
                self._cancelling.add(job_id)
                return running
        return self.store.get(job_id)

    async def wait_finished(self, job_id: str, timeout: float | None = None) -> Job | None:
        """The job once it has ended, or as it is when `timeout` seconds have passed (None for
        an unknown id)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        with self._lock:
            job = self.get(job_id)
            if job is None or job.status.ended:
                return job
            self._waiters.setdefault(job_id, []).append((loop, future))
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return self.get(job_id)
        finally:
            with self._lock:
                waiters = self._waiters.get(job_id, [])
                if (loop, future) in waiters:
                    waiters.remove((loop, future))
                if not waiters:
                    self._waiters.pop(job_id, None)

    # --- state changes while and after running ---------------------------------------

    def report_progress(self, job: Job, fraction: float, stage: str) -> None:
        """Record a running job's progress; raises JobCancelled once it was asked to stop."""
        fraction = min(1.0, max(0.0, float(fraction)))
        now = time.monotonic()
        with self._lock:
            if job.status is not JobStatus.RUNNING:
                return  # a late callback after the job ended must not undo its final state
            if job.id in self._cancelling:
                raise JobCancelled()
            job.progress, job.stage = fraction, stage
            last_fraction, last_stage, last_time = self._last_write.get(job.id, (-1.0, "", 0.0))
            if (
                abs(fraction - last_fraction) >= PROGRESS_MIN_STEP
                or stage != last_stage
                or now - last_time >= PROGRESS_MIN_INTERVAL
            ):
                self._last_write[job.id] = (fraction, stage, now)
                self.store.save(job)

    def finish(self, job: Job, result: JobResult) -> None:
        with self._lock:
            job.result = result
            job.error = None
            job.progress = 1.0
            self._end(job, JobStatus.SUCCEEDED, Outcome.SUCCEEDED)

    def fail(self, job: Job, error: str, outcome: Outcome = Outcome.INTERNAL) -> None:
        """End a running job as failed; `outcome` is the class of its failure, for the observer
        (a job asked to stop counts as cancelled whatever stopped it)."""
        with self._lock:
            cancelled = job.id in self._cancelling
            job.error = CANCELLED_ERROR if cancelled else error
            self._end(job, JobStatus.FAILED, Outcome.CANCELLED if cancelled else outcome,
                      stage=CANCELLED_STAGE if cancelled else None)

    def _end(self, job: Job, status: JobStatus, outcome: Outcome, stage: str | None = None) -> None:
        """Every way a job ends passes here, so its uploads go and its waiters wake whatever
        the outcome."""
        job.status = status
        job.stage = stage or status.value
        job.finished_at = time.time()
        # A cancelled job's run time says nothing about how long jobs take, nor an LM-only
        # job's (seconds) about how long a song takes.
        if job.started_at is not None and stage != CANCELLED_STAGE and job.kind is JobKind.GENERATION:
            self._durations.append(max(0.0, job.finished_at - job.started_at))
        self._running.pop(job.id, None)
        self._last_write.pop(job.id, None)
        self._cancelling.discard(job.id)
        try:
            self.store.save(job)
        finally:
            remove_uploads(job.temp_files, self.store.upload_dir)
            for loop, future in self._waiters.pop(job.id, []):
                if not loop.is_closed():
                    loop.call_soon_threadsafe(_resolve, future, job)
            self._tell("job_ended", job, outcome)

    def _tell_batch(self, jobs: list[Job], items: int) -> None:
        """A batch that may share one run was claimed (observers that count batches hear of it)."""
        heard = getattr(self.events, "batch_claimed", None)
        if heard is None:
            return
        try:
            heard(jobs, items)
        except Exception:  # noqa: BLE001 - an observer's fault must not change a job's fate
            log.exception("Reporting a batch of %d jobs failed", len(jobs))

    def _tell(self, event: str, job: Job, *args) -> None:
        tell(self.events, event, job, *args)


def _resolve(future: asyncio.Future, job: Job) -> None:
    if not future.done():
        future.set_result(job)
