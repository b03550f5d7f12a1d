"""Cancelling jobs, for POST /cancel_task and POST /v1/jobs/{id}/cancel.

A waiting job ends at once; a running one is asked to stop and ends at its next progress
report (between diffusion steps), so a cancel waits briefly for that and then answers with
the job as it is, saying whether it has stopped yet.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from acestep_api.jobs.models import Job, JobStatus
from acestep_api.jobs.backend import JobBackend
from acestep_api.server.services.task_lookup import client_job
from acestep_api.jobs.store import CANCELLED_STAGE

# How long a cancel request waits for a running job to reach its next step and stop.
CANCEL_WAIT_SECONDS = 3.0
NOT_FOUND = "not found"


@dataclass
class CancelOutcome:
    """What became of one cancel request. `refusal` is None when the cancel was accepted;
    otherwise "not found" or the status the job had already ended with."""

    job_id: str
    job: Job | None
    refusal: str | None = None

    @property
    def stopped(self) -> bool:
        return self.job is not None and self.job.status.ended


def _was_cancelled(job: Job) -> bool:
    return job.status is JobStatus.FAILED and job.stage == CANCELLED_STAGE


def request_cancel(queue: JobBackend, job_id: str) -> CancelOutcome:
    """Cancel without waiting: a waiting job has ended when this returns, a running one is
    asked to stop. A job that had already ended is refused, and left as it is."""
    before = client_job(queue, job_id)
    if before is None:
        return CancelOutcome(job_id, None, refusal=NOT_FOUND)
    if before.status.ended:
        return CancelOutcome(job_id, before, refusal=before.status.value)
    job = queue.cancel(job_id)
    if job is None:  # removed by retention in between
        return CancelOutcome(job_id, None, refusal=NOT_FOUND)
    if job.status.ended and not _was_cancelled(job):
        # It ended on its own between the look and the cancel.
        return CancelOutcome(job_id, job, refusal=job.status.value)
    return CancelOutcome(job_id, job)


async def settle(queue: JobBackend, outcome: CancelOutcome) -> CancelOutcome:
    """Give an accepted cancel of a running job a short while to take effect."""
    if outcome.refusal is not None or outcome.stopped:
        return outcome
    job = await queue.wait_finished(outcome.job_id, CANCEL_WAIT_SECONDS)
    return CancelOutcome(outcome.job_id, job if job is not None else outcome.job)


async def cancel_job(queue: JobBackend, job_id: str) -> CancelOutcome:
    return await settle(queue, request_cancel(queue, job_id))


async def cancel_jobs(queue: JobBackend, job_ids: list[str]) -> list[CancelOutcome]:
    """Every cancel is asked for first, then the running ones are waited for together."""
    requested = [request_cancel(queue, job_id) for job_id in job_ids]
    return list(await asyncio.gather(*(settle(queue, outcome) for outcome in requested)))
