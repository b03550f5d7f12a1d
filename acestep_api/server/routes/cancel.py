"""Cancelling jobs: POST /cancel_task for the /release_task world, and the shared steps that
POST /v1/jobs/{id}/cancel (routes/legacy.py) uses too.

A waiting job ends at once; a running one is asked to stop and ends at its next progress
report (between diffusion steps), so the route waits briefly for that and then answers with
the job as it is, saying whether it has stopped yet.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException

from acestep_api.jobs.models import Job, JobStatus
from acestep_api.jobs.queue import JobQueue
from acestep_api.jobs.store import CANCELLED_STAGE
from acestep_api.server.auth import authorized_fields
from acestep_api.dialects.coercion import InvalidField, to_text
from acestep_api.server.dependencies import get_queue
from acestep_api.server.envelope import wrap
from acestep_api.server.routes.tasks import task_ids
from acestep_api.server.openapi.answers import CancelItem, Envelope
from acestep_api.server.openapi.request_bodies import CancelTaskBody
from acestep_api.server.openapi.route_docs import answers, body, key_required, merged

router = APIRouter(tags=["tasks"])

# How long a cancel request waits for a running job to reach its next step and stop.
CANCEL_WAIT_SECONDS = 3.0

TASK_NOT_FOUND = "Task not found"
ONE_OR_THE_OTHER = "give task_id (one id) or task_id_list (a list of ids), not both"
TASK_ID_REQUIRED = "task_id is required: the id /release_task returned (or task_id_list, a list of ids)"
TASK_ID_LIST_INVALID = "task_id_list must be a non-empty list of task ids, or a string holding a JSON list of them"


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


def request_cancel(queue: JobQueue, job_id: str) -> CancelOutcome:
    """Cancel without waiting: a waiting job has ended when this returns, a running one is
    asked to stop. A job that had already ended is refused, and left as it is."""
    before = queue.get(job_id)
    if before is None:
        return CancelOutcome(job_id, None, refusal="not found")
    if before.status.ended:
        return CancelOutcome(job_id, before, refusal=before.status.value)
    job = queue.cancel(job_id)
    if job is None:  # removed by retention in between
        return CancelOutcome(job_id, None, refusal="not found")
    if job.status.ended and not _was_cancelled(job):
        # It ended on its own between the look and the cancel.
        return CancelOutcome(job_id, job, refusal=job.status.value)
    return CancelOutcome(job_id, job)


async def settle(queue: JobQueue, outcome: CancelOutcome) -> CancelOutcome:
    """Give an accepted cancel of a running job a short while to take effect."""
    if outcome.refusal is not None or outcome.stopped:
        return outcome
    job = await queue.wait_finished(outcome.job_id, CANCEL_WAIT_SECONDS)
    return CancelOutcome(outcome.job_id, job if job is not None else outcome.job)


async def cancel_job(queue: JobQueue, job_id: str) -> CancelOutcome:
    return await settle(queue, request_cancel(queue, job_id))


def cancel_item(outcome: CancelOutcome) -> dict:
    """One job in a /cancel_task answer; `status` is the integer of /query_result."""
    job = outcome.job
    refusal = outcome.refusal
    reason = None if refusal is None else TASK_NOT_FOUND if refusal == "not found" else f"Task already {refusal}"
    return {
        "task_id": outcome.job_id,
        "cancelled": refusal is None,
        "stopped": outcome.stopped,
        "status": job.status.code if job is not None else None,
        "stage": job.stage if job is not None else None,
        "error": job.error if job is not None else None,
        "reason": reason,
    }


def _single_id(value: Any) -> str:
    try:
        task_id = to_text("task_id", value, "").strip()
    except InvalidField as error:
        raise HTTPException(status_code=400, detail=str(error)) from None
    if not task_id:
        raise HTTPException(status_code=400, detail=TASK_ID_REQUIRED)
    return task_id


@router.post("/cancel_task", response_model=None, summary="Cancel one job (task_id) or several (task_id_list)",
             responses=answers(Envelope[CancelItem | list[CancelItem]], 400, 401, 404, 409, 413),
             openapi_extra=merged(body(CancelTaskBody), key_required(body_token=True)))
async def cancel_task(
    fields: Annotated[dict, Depends(authorized_fields)],
    queue: Annotated[JobQueue, Depends(get_queue)],
) -> dict:
    """`task_id`: one job, refused with 404 / 409. `task_id_list`: several, each answered in
    the list (refusals carry a `reason`), so one finished job does not spoil the rest."""
    single, listed = fields.get("task_id"), fields.get("task_id_list")
    if single is not None and listed is not None:
        raise HTTPException(status_code=400, detail=ONE_OR_THE_OTHER)
    if listed is not None:
        ids = task_ids(listed)
        if not ids:
            raise HTTPException(status_code=400, detail=TASK_ID_LIST_INVALID)
        # Every cancel is asked for first, then the running ones are waited for together.
        requested = [request_cancel(queue, task_id) for task_id in ids]
        settled = await asyncio.gather(*(settle(queue, outcome) for outcome in requested))
        return wrap([cancel_item(outcome) for outcome in settled])
    outcome = await cancel_job(queue, _single_id(single))
    if outcome.refusal == "not found":
        raise HTTPException(status_code=404, detail=TASK_NOT_FOUND)
    if outcome.refusal is not None:
        raise HTTPException(status_code=409, detail=f"Task already {outcome.refusal}")
    return wrap(cancel_item(outcome))
