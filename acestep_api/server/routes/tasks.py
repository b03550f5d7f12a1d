"""POST /release_task and POST /query_result: the official API's job submission and polling."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from acestep_api.dialects import official
from acestep_api.jobs.models import JobApi, JobStatus
from acestep_api.engine.served import ServedModels
from acestep_api.jobs.backend import JobBackend
from acestep_api.server.auth import authorized_fields, verify_body_token
from acestep_api.server.bodies import read_request_body
from acestep_api.server.dependencies import get_deliveries, get_outputs, get_served, get_queue, get_settings
from acestep_api.server.services.task_lookup import client_job
from acestep_api.server.services.generation import accept_generation, submit_generation
from acestep_api.server.services.key_quotas import key_quota
from acestep_api.server.services.replay import replay_from_body
from acestep_api.server.services.sync_jobs import submit
from acestep_api.server.services.uploads import discarded_on_failure
from acestep_api.server.services.webhooks import accepted_webhook
from acestep_api.webhooks.deliveries import DeliveryStore, delivery_view
from acestep_api.settings import Settings
from acestep_api.storage import OutputStore
from acestep_api.server.openapi.answers import Envelope, QueryResultItem, Queued
from acestep_api.server.openapi.request_bodies import QueryResultBody, ReleaseTaskForm, ReleaseTaskJson, ReleaseTaskMultipart
from acestep_api.server.openapi.route_docs import answers, body, key_required, merged

router = APIRouter(tags=["tasks"])


@router.post(
    "/release_task", response_model=None, summary="Submit a generation job",
    responses=answers(Envelope[Queued], 400, 401, 403, 404, 409, 413, 415, 429, links={
        "query_result": {"operationId": "query_result",
                         "requestBody": {"task_id_list": ["$response.body#/data/task_id"]}},
        "cancel_task": {"operationId": "cancel_task", "requestBody": {"task_id": "$response.body#/data/task_id"}},
    }),
    openapi_extra=merged(body(ReleaseTaskJson, ReleaseTaskForm, ReleaseTaskMultipart, aliases=True),
                         key_required(body_token=True)),
)
async def release_task(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    queue: Annotated[JobBackend, Depends(get_queue)],
    served: Annotated[ServedModels, Depends(get_served)],
    outputs: Annotated[OutputStore, Depends(get_outputs)],
) -> dict:
    body = await read_request_body(request, strict=True)
    with discarded_on_failure(body):
        verify_body_token(body.fields, request, settings)
        webhook = await accepted_webhook(body.fields, request, settings)
        replay = replay_from_body(body, queue)
        if replay is not None:
            job, position = submit(queue, replay, JobApi.RELEASE_TASK, quota=key_quota(request), webhook_url=webhook)
            return official.queued(job, position)
        generation = official.parse_release_task(body.fields, settings)
    generation = await accept_generation(generation, body, settings, queue, served, outputs)
    job, position = submit_generation(queue, generation, body, JobApi.RELEASE_TASK, key_quota(request), webhook)
    return official.queued(job, position)


@router.post("/query_result", response_model=None, summary="The state and results of jobs",
             responses=answers(Envelope[list[QueryResultItem]], 400, 401, 413),
             openapi_extra=merged(body(QueryResultBody), key_required(body_token=True)))
async def query_result(
    fields: Annotated[dict, Depends(authorized_fields)],
    queue: Annotated[JobBackend, Depends(get_queue)],
    deliveries: Annotated[DeliveryStore, Depends(get_deliveries)],
) -> dict:
    items = []
    for task_id in official.task_ids(fields.get("task_id_list")):
        job = client_job(queue, task_id)
        # Our own job's stage, not a server-wide log line: nothing leaks between clients.
        active = job is not None and job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        item = official.query_result_item(task_id, job, queue, progress_text=job.stage if active else "")
        delivery = deliveries.get(job.id) if job is not None else None
        if delivery is not None:
            item["webhook"] = delivery_view(delivery)  # only for a job submitted with a callback URL
        items.append(item)
    return official.wrap(items)
