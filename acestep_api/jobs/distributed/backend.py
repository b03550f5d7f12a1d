"""The distributed job backend: every job a row of `acestep_jobs` and, in the same transaction,
a procrastinate job in the queue of the model it names. Any API replica submits, reads,
cancels; a GPU worker (jobs/distributed/runner.py) claims, reports progress and ends jobs
through the same object.

- A queue position is one count over all waiting rows; the ETA divides it by the number of
  live workers.
- Cancelling a waiting job ends it at once and cancels its procrastinate job; a worker that
  fetched it at that moment finds the row no longer queued and skips it, so it never runs.
  A running job gets procrastinate's abort (LISTEN/NOTIFY), which its worker sees in the next
  progress report, between diffusion steps.
- Reads are plain indexed queries on the caller's thread; the few aggregate figures (average
  run time, live workers) are cached for a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psycopg_pool
from procrastinate import App, SyncPsycopgConnector
from procrastinate import jobs as procrastinate_jobs
from procrastinate import sql

from acestep_api.engine.served import ServedModel, ServedModels
from acestep_api.jobs.backend import BackendUnavailable
from acestep_api.jobs.events import JobEvents, Outcome, tell
from acestep_api.jobs.models import Job, JobApi, JobKind, JobRequest, JobResult, JobStatus
from acestep_api.jobs.queue import (
    CANCELLED_ERROR, PROGRESS_MIN_INTERVAL, PROGRESS_MIN_STEP, JobCancelled, QueueFullError,
)
from acestep_api.jobs.retention import remove_uploads
from acestep_api.jobs.store import CANCELLED_STAGE, interrupted_error
from acestep_api.jobs.distributed.deliveries import PostgresDeliveryStore, register_in
from acestep_api.jobs.distributed.store import PostgresJobStore

log = logging.getLogger(__name__)

TASK_NAME = "acestep.run_job"
LM_QUEUE = "lm"
# A worker unseen this long is dead: its jobs are handed to another worker (runner.py).
DEFAULT_STALL_SECONDS = 10.0
CACHE_SECONDS = 1.0
WAIT_POLL_SECONDS = 0.2
MAX_ATTEMPTS = 2
# The advisory locks' constants: any, the same in every process.
SUBMIT_LOCK = 7_215_513_002
KEY_LOCK_CLASS = 7_215_513  # with a key name's hash: one lock per key
END_RETRY_SECONDS = 60.0


def queue_for_model(model: str, lm: bool = False) -> str:
    """The procrastinate queue of a DiT model (`lm`: for jobs that also need the 5 Hz LM).
    PostgreSQL channel names (procrastinate notifies on one per queue) stop at 63 bytes, so a
    long name is shortened by a hash."""
    prefix = "dit+lm:" if lm else "dit:"
    if len(model) <= 24:
        return prefix + model
    return f"{prefix}{model[:16]}:{hashlib.sha1(model.encode()).hexdigest()[:10]}"


def model_of_queue(queue: str) -> tuple[str, bool]:
    """The model a DiT queue names (shortened names stay shortened) and whether it needs the LM."""
    lm = queue.startswith("dit+lm:")
    return queue.split(":", 1)[1], lm


def served_to_json(served: ServedModels) -> str:
    return json.dumps(dataclasses.asdict(served), default=str)  # paths as text


def served_from_json(text: str) -> ServedModels:
    data = json.loads(text)

    def model_list(items) -> tuple[ServedModel, ...]:
        return tuple(ServedModel(m["name"], m["is_turbo"], tuple(m["supported_task_types"])) for m in items)

    known = {field.name for field in dataclasses.fields(ServedModels)}
    values = {key: value for key, value in data.items() if key in known}
    # JSON has lists only: the dataclass holds tuples (and compares equal only so).
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
    for key in ("models", "dit_on_disk"):
        if key in data:
            values[key] = model_list(data[key])
    if values.get("lora_dir") is not None:
        values["lora_dir"] = Path(values["lora_dir"])
    return ServedModels(**values)


@dataclasses.dataclass(frozen=True)
class LiveWorker:
    name: str
    served: ServedModels
    queues: tuple[str, ...]
    alive: bool


class _Cached:
    """A value recomputed at most once a `seconds`."""

    def __init__(self, compute: Callable, seconds: float = CACHE_SECONDS):
        self.compute, self.seconds = compute, seconds
        self._value, self._at = None, -1e9
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if time.monotonic() - self._at > self.seconds:
                self._value, self._at = self.compute(), time.monotonic()
            return self._value

    def clear(self) -> None:
        with self._lock:
            self._at = -1e9


class PostgresJobBackend:
    mode = "distributed"

    def __init__(
        self,
        pool: psycopg_pool.ConnectionPool,
        upload_dir: Path,
        *,
        maxsize: int = 200,
        avg_job_seconds: float = 5.0,
        avg_window: int = 50,
        primary_model: str = "",
        fallback_served: ServedModels | None = None,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        events: JobEvents | None = None,
    ):
        self.store = PostgresJobStore(pool, upload_dir)
        # The jobs' webhook deliveries, in the same database: a job's is written with it.
        self.deliveries = PostgresDeliveryStore(self.store)
        self.maxsize = maxsize
        self.default_job_seconds = avg_job_seconds
        self.avg_window = avg_window
        self.primary_model = primary_model
        self.fallback_served = fallback_served
        self.stall_seconds = stall_seconds
        # This process's observers (its /metrics, its webhooks; assignable after the start):
        # a replica hears of the jobs it accepted and cancelled while waiting, a worker of the
        # jobs it started and ended, and of those it failed for a dead worker.
        self.events = events
        # Procrastinate writes its queue entries on our connections, inside our transactions.
        self.procrastinate = App(connector=SyncPsycopgConnector())
        self.procrastinate.open(pool)
        self._durations = _Cached(lambda: self.store.recent_durations(self.avg_window))
        self._workers = _Cached(self._read_workers)
        self._lock = threading.Lock()
        # Worker side: job id -> (fraction, stage, time) of the last progress write, and the
        # abort checks of the jobs this process runs (procrastinate's context.should_abort).
        self._last_write: dict[str, tuple[float, str, float]] = {}
        self._abort_checks: dict[str, Callable[[], bool]] = {}
        self._cancelling: set[str] = set()

    # --- workers and what they serve --------------------------------------------------

    def _read_workers(self) -> list[LiveWorker]:
        with self.store.connection() as conn:
            rows = conn.execute(
                "SELECT name, served, queues, last_seen > now() - make_interval(secs => %s) "
                "FROM acestep_workers ORDER BY started_at", (self.stall_seconds,)).fetchall()
        return [LiveWorker(name, served_from_json(served), tuple(queues), alive) for name, served, queues, alive in rows]

    def live_workers(self) -> list[LiveWorker]:
        return [worker for worker in self._workers.get() if worker.alive]

    def workers(self) -> dict:
        live = self.live_workers()
        return {
            "alive": len(live),
            "models": sorted({name for worker in live for name in worker.served.model_names}),
            "lm": any(worker.served.lm_available for worker in live),
        }

    def served(self) -> ServedModels | None:
        """What the deployment serves: the union of its workers' models (live ones first, then
        those seen before, so a job for a model whose workers are all down still queues and
        waits), else what the settings name."""
        known = sorted(self._workers.get(), key=lambda worker: not worker.alive)
        if not known:
            return self.fallback_served
        models: dict[str, ServedModel] = {}
        configured = self.fallback_served.models if self.fallback_served is not None else ()
        for model in [*(model for worker in known for model in worker.served.models), *configured]:
            models.setdefault(model.name, model)
        ordered = sorted(models.values(), key=lambda model: model.name != self.primary_model)
        first = known[0].served
        live = [worker for worker in known if worker.alive]
        return dataclasses.replace(
            first, models=tuple(ordered),
            lm_available=any(worker.served.lm_available for worker in live) or (
                not live and any(worker.served.lm_available for worker in known)),
        )

    def queue_for(self, request: JobRequest) -> str:
        kind = JobKind.of(request)
        if kind is JobKind.ADAPTER:
            # A change of the default adapters runs on one worker, the first free one serving
            # the primary model (docs/deploy.md); a song's own lora_name works on every worker.
            return queue_for_model(self.primary_model)
        if kind is not JobKind.GENERATION:
            return LM_QUEUE
        served = self.served()
        requested = getattr(request, "model", None)
        needs_lm = bool(getattr(request, "needs_lm", False))
        if served is not None:
            return queue_for_model(served.select(requested).name, needs_lm)
        return queue_for_model(Path(requested).name if requested else self.primary_model, needs_lm)

    # --- reading ----------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.store.waiting_count()

    @property
    def avg_job_seconds(self) -> float:
        durations = self._durations.get()
        return sum(durations) / len(durations) if durations else self.default_job_seconds

    @property
    def running_count(self) -> int:
        return self.store.counts()[JobStatus.RUNNING.value]

    def get(self, job_id: str) -> Job | None:
        found = self.store.get_with_queue(job_id)
        if found is None:
            return None
        job, queue = found
        if job.status is JobStatus.QUEUED:
            job.stage = self._waiting_stage(queue)
        return job

    def _waiting_stage(self, queue: str) -> str:
        """A waiting job's stage: "queued", or why no worker can take it."""
        if any(queue in worker.queues for worker in self.live_workers()):
            return "queued"
        if queue == LM_QUEUE:
            return "queued: no live worker has the 5 Hz LM"
        model, lm = model_of_queue(queue)
        return f"queued: no live worker serves model {model}" + (" with the 5 Hz LM" if lm else "")

    def position(self, job_id: str) -> int | None:
        return self.store.position(job_id)

    def eta_seconds(self, job_id: str) -> float | None:
        position = self.position(job_id)
        if position is None:
            return None
        return position * self.avg_job_seconds / max(1, len(self.live_workers()))

    def oldest_waiting_since(self) -> float | None:
        return self.store.oldest_waiting_since()

    def cancel_requested(self, job_id: str) -> bool:
        with self.store.connection() as conn:
            row = conn.execute("SELECT cancel_requested AND status = %s FROM acestep_jobs WHERE id = %s",
                               (JobStatus.RUNNING.value, job_id)).fetchone()
        return bool(row and row[0])

    def stats(self) -> dict:
        return {
            "jobs": self.store.counts(),
            "queue_size": self.size,
            "queue_maxsize": self.maxsize,
            "avg_job_seconds": self.avg_job_seconds,
            "workers": self.workers()["alive"],
        }

    # --- submitting and cancelling ----------------------------------------------------

    def submit(self, request: JobRequest, api: JobApi = JobApi.RELEASE_TASK, temp_files: Sequence[str] = (),
               key_name: str | None = None, audio_seconds: float = 0.0,
               webhook_url: str | None = None) -> tuple[Job, int]:
        job = Job(id=str(uuid.uuid4()), request=request, api=api, created_at=time.time(),
                  temp_files=list(temp_files), key_name=key_name, audio_seconds=audio_seconds,
                  webhook_url=webhook_url)
        queue = self.queue_for(request)
        with self.store.connection() as conn, conn.transaction():
            # One submitter at a time checks the bound, so `maxsize` holds across replicas.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SUBMIT_LOCK,))
            waiting = conn.execute("SELECT count(*) FROM acestep_jobs WHERE status = %s",
                                   (JobStatus.QUEUED.value,)).fetchone()[0]
            if waiting >= self.maxsize:
                raise QueueFullError("Server busy: queue is full")
            self.store.add(job, conn, queue)
            if webhook_url is not None:
                register_in(conn, job.id, webhook_url, job.created_at)
            deferred = self.procrastinate.job_manager.defer_job(
                procrastinate_jobs.Job(id=None, queue=queue, lock=None, queueing_lock=None,
                                       task_name=TASK_NAME, task_kwargs={"job_id": job.id}),
                connection=conn,
            )
            conn.execute("UPDATE acestep_jobs SET procrastinate_id = %s WHERE id = %s", (deferred.id, job.id))
        self._tell("job_submitted", job)
        return job, waiting + 1

    @contextlib.contextmanager
    def key_guard(self, key_name: str | None) -> Iterator[None]:
        """A key's quota check and its job's insert as one step over every replica: a session
        advisory lock on the key's name, held on a connection of its own (a process that dies
        holding it releases it with its session)."""
        if key_name is None:
            yield
            return
        with self.store.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (KEY_LOCK_CLASS, key_name))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (KEY_LOCK_CLASS, key_name))

    def cancel(self, job_id: str) -> Job | None:
        ended = None
        with self.store.connection() as conn, conn.transaction():
            row = conn.execute("SELECT status, procrastinate_id FROM acestep_jobs WHERE id = %s FOR UPDATE",
                               (job_id,)).fetchone()
            if row is None:
                return None
            status, procrastinate_id = JobStatus(row[0]), row[1]
            if status is JobStatus.QUEUED:
                conn.execute(
                    "UPDATE acestep_jobs SET status = %s, stage = %s, error = %s, finished_at = %s, "
                    "cancel_requested = TRUE WHERE id = %s",
                    (JobStatus.FAILED.value, CANCELLED_STAGE, CANCELLED_ERROR, time.time(), job_id))
                if procrastinate_id is not None:
                    self.procrastinate.job_manager.cancel_job_by_id(procrastinate_id, connection=conn)
                ended = True
            elif status is JobStatus.RUNNING:
                conn.execute("UPDATE acestep_jobs SET cancel_requested = TRUE WHERE id = %s", (job_id,))
                if procrastinate_id is not None:
                    self.procrastinate.job_manager.cancel_job_by_id(procrastinate_id, abort=True, connection=conn)
        job = self.store.get(job_id)
        if ended and job is not None:
            remove_uploads(job.temp_files, self.store.upload_dir)
            self._tell("job_ended", job, Outcome.CANCELLED)
        return job

    async def wait_finished(self, job_id: str, timeout: float | None = None) -> Job | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await asyncio.to_thread(self.get, job_id)
            if job is None or job.status.ended:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                return job
            left = WAIT_POLL_SECONDS if deadline is None else min(WAIT_POLL_SECONDS, deadline - time.monotonic())
            await asyncio.sleep(max(0.0, left))

    # --- the worker's side ------------------------------------------------------------

    def claim(self, job_id: str, worker: str, abort_check: Callable[[], bool] | None = None) -> Job | None:
        """Mark a job running for `worker`; None when it is no longer waiting (cancelled, or
        already taken), so it does not run."""
        with self.store.connection() as conn:
            row = conn.execute(
                "UPDATE acestep_jobs SET status = %s, attempts = attempts + 1, started_at = %s, "
                "finished_at = NULL, stage = 'running', progress = 0.01, error = NULL, worker = %s "
                "WHERE id = %s AND status = %s RETURNING id",
                (JobStatus.RUNNING.value, time.time(), worker, job_id, JobStatus.QUEUED.value)).fetchone()
        if row is None:
            return None
        job = self.store.get(job_id)
        with self._lock:
            self._last_write[job_id] = (job.progress, job.stage, time.monotonic())
            if abort_check is not None:
                self._abort_checks[job_id] = abort_check
        self._tell("job_started", job)
        return job

    def request_stop(self, job_id: str) -> None:
        """This process's running job is to stop at its next progress report."""
        with self._lock:
            self._cancelling.add(job_id)

    def _stop_asked(self, job_id: str) -> bool:
        with self._lock:
            check = self._abort_checks.get(job_id)
            return job_id in self._cancelling or bool(check is not None and check())

    def report_progress(self, job: Job, fraction: float, stage: str) -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        if job.status is not JobStatus.RUNNING:
            return
        if self._stop_asked(job.id):
            raise JobCancelled()
        job.progress, job.stage = fraction, stage
        now = time.monotonic()
        with self._lock:
            last_fraction, last_stage, last_time = self._last_write.get(job.id, (-1.0, "", 0.0))
            due = (abs(fraction - last_fraction) >= PROGRESS_MIN_STEP or stage != last_stage
                   or now - last_time >= PROGRESS_MIN_INTERVAL)
            if due:
                self._last_write[job.id] = (fraction, stage, now)
        if due:
            try:
                self.store.write_progress(job.id, fraction, stage)
            except BackendUnavailable:
                log.warning("Progress of job %s not recorded: the database cannot be reached", job.id)

    def finish(self, job: Job, result: JobResult) -> None:
        job.result, job.error, job.progress = result, None, 1.0
        self._end(job, JobStatus.SUCCEEDED, outcome=Outcome.SUCCEEDED)

    def fail(self, job: Job, error: str, outcome: Outcome = Outcome.INTERNAL) -> None:
        try:
            cancelled = self._stop_asked(job.id) or self.cancel_requested(job.id)
        except BackendUnavailable:
            cancelled = False
        job.error = CANCELLED_ERROR if cancelled else error
        self._end(job, JobStatus.FAILED, stage=CANCELLED_STAGE if cancelled else None,
                  outcome=Outcome.CANCELLED if cancelled else outcome)

    def _end(self, job: Job, status: JobStatus, stage: str | None = None,
             outcome: Outcome = Outcome.INTERNAL) -> None:
        job.status = status
        job.stage = stage or status.value
        job.finished_at = time.time()
        with self._lock:
            self._last_write.pop(job.id, None)
            self._abort_checks.pop(job.id, None)
            self._cancelling.discard(job.id)
        recorded = False
        try:
            recorded = self._save_end(job)
            if not recorded:
                log.warning("Job %s was handed to another worker meanwhile; this run's end is not recorded", job.id)
        finally:
            remove_uploads(job.temp_files, self.store.upload_dir)
            self._durations.clear()
            if recorded:
                self._tell("job_ended", job, outcome)

    def _tell(self, event: str, job: Job, *args) -> None:
        tell(self.events, event, job, *args)

    def _save_end(self, job: Job) -> bool:
        """Record a job's end, waiting out a database restart (up to END_RETRY_SECONDS): a lost
        end would leave the job running for ever, its worker alive."""
        deadline = time.monotonic() + END_RETRY_SECONDS
        while True:
            try:
                return self.store.save(job, only_if_running_attempt=job.attempts)
            except BackendUnavailable:
                if time.monotonic() >= deadline:
                    raise
                log.warning("Job %s ended but the database cannot be reached; retrying", job.id)
                time.sleep(1.0)

    # --- faults: jobs whose worker died -----------------------------------------------

    def recover_stalled(self, procrastinate_id: int) -> JobStatus | None:
        """The procrastinate job of a dead worker (no heartbeat for the stall timeout): its job
        is queued again, keeping its place in line, while it has attempts left, else failed
        with the reason; a job that had already ended only has its queue entry closed. One
        transaction holds both rows, so of several workers recovering at once one acts.
        Returns the job's new status, or None when there was nothing to do."""
        with self.store.connection() as conn, conn.transaction():
            entry = conn.execute("SELECT status, args->>'job_id' FROM procrastinate_jobs WHERE id = %s FOR UPDATE",
                                 (procrastinate_id,)).fetchone()
            if entry is None or entry[0] != "doing":
                return None
            row = conn.execute("SELECT status, attempts, temp_files FROM acestep_jobs WHERE id = %s FOR UPDATE",
                               (entry[1],)).fetchone()
            status = JobStatus(row[0]) if row is not None else None
            if status is JobStatus.RUNNING and row[1] < MAX_ATTEMPTS:
                conn.execute("UPDATE acestep_jobs SET status = %s, stage = 'queued', progress = 0, "
                             "started_at = NULL, worker = NULL WHERE id = %s", (JobStatus.QUEUED.value, entry[1]))
                conn.execute(sql.queries["retry_job"], {"job_id": procrastinate_id, "retry_at": None,
                                                        "new_priority": None, "new_queue_name": None,
                                                        "new_lock": None})
                return JobStatus.QUEUED
            failed_now = status is JobStatus.RUNNING
            if failed_now:
                conn.execute("UPDATE acestep_jobs SET status = %s, stage = 'failed', finished_at = %s, error = %s, "
                             "interrupted = TRUE WHERE id = %s",
                             (JobStatus.FAILED.value, time.time(), interrupted_error(row[1], MAX_ATTEMPTS), entry[1]))
                status = JobStatus.FAILED
            end = "succeeded" if status is JobStatus.SUCCEEDED else "failed"
            conn.execute(sql.queries["finish_job"], {"job_id": procrastinate_id, "status": end, "delete_job": False})
        if status is JobStatus.FAILED and row is not None:
            remove_uploads(json.loads(row[2]), self.store.upload_dir)
        if failed_now:
            # Its worker is gone: this process tells of its end (its webhook is sent).
            job = self.store.get(entry[1])
            if job is not None:
                self._tell("job_ended", job, Outcome.CRASHED)
        return status

    def close(self) -> None:
        self.store.close()
