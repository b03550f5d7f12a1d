"""The older ACE-Step API (docs/wire-contract.md#the-older-api): POST /v1/music/generate, POST /v1/music/random,
GET /v1/jobs/{job_id}, and POST /v1/jobs/{job_id}/cancel (dialects/legacy.py words them).

Jobs go onto the same queue as /release_task, so either API can follow a job the other
submitted. The official legacy routes had no auth; these follow ACESTEP_API_KEY like the rest
of the server, since an open submit route would let anyone past the key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from acestep_api.dialects import legacy
from acestep_api.jobs.models import JobApi
from acestep_api.engine.served import ServedModels
from acestep_api.jobs.backend import JobBackend
from acestep_api.server.auth import authorized_fields, require_api_key, verify_body_token
from acestep_api.server.bodies import read_request_body
from acestep_api.server.dependencies import get_deliveries, get_outputs, get_served, get_queue, get_settings
from acestep_api.server.services.cancel import NOT_FOUND, cancel_job
from acestep_api.server.services.task_lookup import client_job
from acestep_api.server.services.generation import accept_generation, submit_generation
from acestep_api.server.services.key_quotas import key_quota
from acestep_api.server.services.lm import require_lm
from acestep_api.server.services.replay import replay_from_body, replay_request
from acestep_api.server.services.sync_jobs import submit
from acestep_api.server.services.uploads import discarded_on_failure
from acestep_api.server.services.webhooks import accepted_webhook
from acestep_api.webhooks.deliveries import DeliveryStore, delivery_view
from acestep_api.settings import Settings
from acestep_api.storage import OutputStore
from acestep_api.server.openapi.answers import LegacyCancelled, LegacyJob, LegacyQueued
from acestep_api.server.openapi.request_bodies import AuthOnlyBody, MusicRandomBody, ReplayBody, ReleaseTaskForm, ReleaseTaskJson, ReleaseTaskMultipart
from acestep_api.server.openapi.route_docs import THINKING_QUERY, answers, body, key_required, merged

router = APIRouter(tags=["legacy"])

# A queued job can be followed and cancelled by its id (the links schemathesis follows).
LEGACY_LINKS = {
    "get_job": {"operationId": "get_job", "parameters": {"path.job_id": "$response.body#/job_id"}},
    "cancel": {"operationId": "cancel", "parameters": {"path.job_id": "$response.body#/job_id"}},
}


@router.post(
    "/v1/music/generate", response_model=None, summary="Submit a generation job (the older API)",
    responses=answers(LegacyQueued, 400, 401, 403, 404, 409, 413, 415, 429, links=LEGACY_LINKS),
    openapi_extra=merged(body(ReleaseTaskJson, ReleaseTaskForm, ReleaseTaskMultipart, aliases=True),
                         key_required(body_token=True)),
)
async def generate(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    queue: Annotated[JobBackend, Depends(get_queue)],
    served: Annotated[ServedModels, Depends(get_served)],
    outputs: Annotated[OutputStore, Depends(get_outputs)],
) -> dict:
    """Same bodies, fields and checks as /release_task; only the answer's shape differs."""
    body = await read_request_body(request, strict=True)
    with discarded_on_failure(body):
        verify_body_token(body.fields, request, settings)
        webhook = await accepted_webhook(body.fields, request, settings)
        replay = replay_from_body(body, queue)
        if replay is not None:
            job, position = submit(queue, replay, JobApi.LEGACY, quota=key_quota(request), webhook_url=webhook)
            return legacy.queued(job, position)
        generation = legacy.parse_generate(body.fields, settings)
    generation = await accept_generation(generation, body, settings, queue, served, outputs)
    job, position = submit_generation(queue, generation, body, JobApi.LEGACY, key_quota(request), webhook)
    return legacy.queued(job, position)


@router.post(
    "/v1/music/random", response_model=None, summary="Submit a job the LM invents (the older API)",
    responses=answers(LegacyQueued, 400, 401, 413, 429, 500, 503, links=LEGACY_LINKS),
    openapi_extra=merged(body(MusicRandomBody), THINKING_QUERY, key_required(body_token=True)),
)
async def random_song(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    queue: Annotated[JobBackend, Depends(get_queue)],
    served: Annotated[ServedModels, Depends(get_served)],
) -> dict:
    """A sample-mode job: the LM invents caption, lyrics and metadata. `thinking` (or
    `Thinking`; body or query string) defaults to true: the LM writes the audio codes too."""
    body = await read_request_body(request, strict=False)
    body.discard_uploads()
    verify_body_token(body.fields, request, settings)
    # Without the LM the job could only fail: say so now, as the other LM routes do.
    require_lm(served)
    options = body.fields or dict(request.query_params)
    generation = legacy.parse_random(options, settings)
    webhook = await accepted_webhook(options, request, settings)
    job, position = submit_generation(queue, generation, body, JobApi.LEGACY, key_quota(request), webhook)
    return legacy.queued(job, position)


@router.get("/v1/jobs/{job_id}", dependencies=[Depends(require_api_key)], response_model=None,
            summary="A job (the older API)", responses=answers(LegacyJob, 401, 404),
            openapi_extra=key_required())
async def get_job(job_id: str, queue: Annotated[JobBackend, Depends(get_queue)],
                  deliveries: Annotated[DeliveryStore, Depends(get_deliveries)]) -> dict:
    job = client_job(queue, job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=legacy.JOB_NOT_FOUND)
    view = legacy.job_view(job, queue)
    delivery = deliveries.get(job.id)
    if delivery is not None:
        view["webhook"] = delivery_view(delivery)  # only for a job submitted with a callback URL
    return view


@router.post("/v1/jobs/{job_id}/cancel", dependencies=[Depends(authorized_fields)], response_model=None,
             summary="Cancel a job (the older API)",
             responses=answers(LegacyCancelled, 400, 401, 404, 409, 413),
             openapi_extra=merged(body(AuthOnlyBody), key_required(body_token=True)))
async def cancel(job_id: str, queue: Annotated[JobBackend, Depends(get_queue)]) -> dict:
    """The job as GET /v1/jobs shows it once the cancel took effect, plus `stopped`: false
    while a running job has not yet reached the step where it stops."""
    outcome = await cancel_job(queue, job_id)
    if outcome.refusal == NOT_FOUND:
        raise HTTPException(status_code=404, detail=legacy.JOB_NOT_FOUND)
    if outcome.refusal is not None:
        raise HTTPException(status_code=409, detail=f"Job already {outcome.refusal}")
    return legacy.cancelled_view(outcome.job, queue, outcome.stopped)


@router.post("/v1/jobs/{job_id}/replay", response_model=None,
             summary="Queue a finished song again: the same audio, without the LM",
             responses=answers(LegacyQueued, 400, 401, 404, 409, 413, 429),
             openapi_extra=merged(body(ReplayBody), key_required(body_token=True)))
async def replay(job_id: str, request: Request, fields: Annotated[dict, Depends(authorized_fields)],
                 settings: Annotated[Settings, Depends(get_settings)],
                 queue: Annotated[JobBackend, Depends(get_queue)]) -> dict:
    """A new job that runs the stored, fully resolved request of `job_id` (its seeds, length,
    caption, lyrics and audio codes as they were settled), optionally in another
    `audio_format`. On the same device and versions its files are bit-identical."""
    generation = replay_request(queue, job_id, fields.get("audio_format"))
    webhook = await accepted_webhook(fields, request, settings)
    job, position = submit(queue, generation, JobApi.LEGACY, quota=key_quota(request), webhook_url=webhook)
    return legacy.queued(job, position)
