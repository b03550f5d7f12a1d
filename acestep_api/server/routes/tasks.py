"""POST /release_task and POST /query_result: the official API's job submission and polling."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request

from acestep_api.jobs.models import JobApi, JobStatus
from acestep_api.jobs.queue import JobQueue, QueueFullError
from acestep_api.jobs.results import query_result_item
from acestep_api.server.auth import authorized_fields, verify_body_token
from acestep_api.server.bodies import read_request_body
from acestep_api.server.coercion import InvalidField
from acestep_api.server.dependencies import get_queue, get_settings
from acestep_api.server.envelope import wrap
from acestep_api.server.release_task_parser import parse_release_task
from acestep_api.settings import Settings

router = APIRouter(tags=["tasks"])

QUEUE_FULL = "Server busy: queue is full"


@router.post("/release_task")
async def release_task(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    queue: Annotated[JobQueue, Depends(get_queue)],
) -> dict:
    body = await read_request_body(request, strict=True)
    try:
        verify_body_token(body.fields, request, settings)
        try:
            generation = parse_release_task(body.fields, settings)
        except InvalidField as error:
            raise HTTPException(status_code=400, detail=str(error)) from None
        try:
            job, position = queue.submit(generation, api=JobApi.RELEASE_TASK, temp_files=body.temp_files)
        except QueueFullError:
            raise HTTPException(status_code=429, detail=QUEUE_FULL) from None
    except BaseException:
        body.discard_uploads()  # no job owns them
        raise
    return wrap({"task_id": job.id, "status": "queued", "queue_position": position})


def task_ids(value: Any) -> list[str]:
    """`task_id_list` as a list, or a string holding a JSON list; anything else is none."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return []
    if not isinstance(value, list):
        return []
    return [str(item) for item in value if isinstance(item, (str, int)) and not isinstance(item, bool)]


@router.post("/query_result")
async def query_result(
    fields: Annotated[dict, Depends(authorized_fields)],
    queue: Annotated[JobQueue, Depends(get_queue)],
) -> dict:
    items = []
    for task_id in task_ids(fields.get("task_id_list")):
        job = queue.get(task_id)
        # Our own job's stage, not a server-wide log line: nothing leaks between clients.
        active = job is not None and job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        items.append(query_result_item(task_id, job, queue, progress_text=job.stage if active else ""))
    return wrap(items)
