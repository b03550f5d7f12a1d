"""POST /cancel_task: cancel jobs of the /release_task world (services/cancel.py does it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from acestep_api.dialects import official
from acestep_api.jobs.backend import JobBackend
from acestep_api.server.auth import authorized_fields
from acestep_api.server.dependencies import get_queue
from acestep_api.server.services.cancel import NOT_FOUND, CancelOutcome, cancel_job, cancel_jobs
from acestep_api.server.openapi.answers import CancelItem, Envelope
from acestep_api.server.openapi.request_bodies import CancelTaskBody
from acestep_api.server.openapi.route_docs import answers, body, key_required, merged

router = APIRouter(tags=["tasks"])


def _item(outcome: CancelOutcome) -> dict:
    return official.cancel_item(outcome.job_id, outcome.job, outcome.refusal, outcome.stopped)


@router.post("/cancel_task", response_model=None, summary="Cancel one job (task_id) or several (task_id_list)",
             responses=answers(Envelope[CancelItem | list[CancelItem]], 400, 401, 404, 409, 413),
             openapi_extra=merged(body(CancelTaskBody), key_required(body_token=True)))
async def cancel_task(
    fields: Annotated[dict, Depends(authorized_fields)],
    queue: Annotated[JobBackend, Depends(get_queue)],
) -> dict:
    """`task_id`: one job, refused with 404 / 409. `task_id_list`: several, each answered in
    the list (refusals carry a `reason`), so one finished job does not spoil the rest."""
    single, listed = official.parse_cancel_task(fields)
    if listed is not None:
        return official.wrap([_item(outcome) for outcome in await cancel_jobs(queue, listed)])
    outcome = await cancel_job(queue, single)
    if outcome.refusal == NOT_FOUND:
        raise HTTPException(status_code=404, detail=official.TASK_NOT_FOUND)
    if outcome.refusal is not None:
        raise HTTPException(status_code=409, detail=f"Task already {outcome.refusal}")
    return official.wrap(_item(outcome))
