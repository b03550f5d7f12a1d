"""The job backend: the one set of operations the routes, the dialects and the worker see,
whichever implementation holds the jobs.

Two implementations: the embedded one (`jobs/queue.py: JobQueue` over `jobs/store.py`, SQLite,
one process) and the distributed one (`jobs/distributed/backend.py: PostgresJobBackend`,
PostgreSQL + procrastinate, any number of API replicas and GPU workers). Every method here is
safe to call from the event loop and from the engine thread; reads are cheap (one indexed
query at most), so a request handler calls them directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

from acestep_api.jobs.events import Outcome
from acestep_api.jobs.models import Job, JobApi, JobRequest, JobResult


class BackendUnavailable(Exception):
    """The job state cannot be reached right now (the database is down or restarting): the
    HTTP layer answers 503 with this message, and the caller may retry."""


class JobRecords(Protocol):
    """The stored jobs behind a backend (`backend.store`): what retention, the key quotas and
    the per-key figures of /v1/stats read."""

    upload_dir: Path

    def key_usage(self, key_name: str, since: float): ...

    def key_counts(self, since: float) -> dict: ...

    def purge_finished_before(self, cutoff: float) -> list[Job]: ...


@runtime_checkable
class JobBackend(Protocol):
    # The name /health reports: "embedded" or "distributed".
    mode: str
    maxsize: int
    store: JobRecords

    # --- reading (any replica) -------------------------------------------------------
    @property
    def size(self) -> int:
        """How many jobs wait (not yet started)."""

    @property
    def avg_job_seconds(self) -> float:
        """The average run time of recent generation jobs (the configured default at first)."""

    @property
    def running_count(self) -> int: ...

    def get(self, job_id: str) -> Job | None: ...

    def position(self, job_id: str) -> int | None:
        """1-based place among all waiting jobs; None once the job started or ended."""

    def eta_seconds(self, job_id: str) -> float | None:
        """When a waiting job should start, from its position, the average run time and the
        number of workers serving it."""

    def oldest_waiting_since(self) -> float | None: ...

    def cancel_requested(self, job_id: str) -> bool: ...

    def stats(self) -> dict: ...

    def workers(self) -> dict:
        """What /health says of the workers: {"alive": n, ...}."""

    # --- writing (any replica) -------------------------------------------------------
    def submit(self, request: JobRequest, api: JobApi = JobApi.RELEASE_TASK, temp_files: Sequence[str] = (),
               key_name: str | None = None, audio_seconds: float = 0.0,
               webhook_url: str | None = None) -> tuple[Job, int]:
        """Store the job and queue it in one step, charged to `key_name`, with its checked
        callback URL; (job, 1-based position). Raises QueueFullError when `maxsize` jobs wait."""

    def key_guard(self, key_name: str | None) -> AbstractContextManager:
        """Held from a key's quota check to its job's insert (server/services/sync_jobs.py):
        no other submitter, in this process or another, checks or charges that key meanwhile."""

    def cancel(self, job_id: str) -> Job | None:
        """A waiting job ends at once and never runs; a running one is asked to stop at its
        next progress report, on whichever worker holds it."""

    async def wait_finished(self, job_id: str, timeout: float | None = None) -> Job | None: ...

    # --- the worker's side -----------------------------------------------------------
    def report_progress(self, job: Job, fraction: float, stage: str) -> None:
        """Record progress (throttled); raises JobCancelled once a cancel was asked for."""

    def finish(self, job: Job, result: JobResult) -> None: ...

    def fail(self, job: Job, error: str, outcome: Outcome = Outcome.INTERNAL) -> None: ...
