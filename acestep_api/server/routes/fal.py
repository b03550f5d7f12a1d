"""POST /fal-ai/ace-step/prompt-to-audio: fal.ai's prompt-to-audio, served by ACE-Step 1.5
(dialects/fal.py). One job on the queue; the route answers when it has ended, with an absolute
download URL. docs/fal.md says how each fal field is served and why."""

from __future__ import annotations

import random
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from acestep_api.dialects import fal as fal_dialect
from acestep_api.dialects.fal import RANDOM_SEED, FalPromptInput, FalPromptOutput
from acestep_api.engine.request import SEED_MAX
from acestep_api.admission.lm_check import fit_lm_guidance
from acestep_api.engine.served import ServedModels
from acestep_api.jobs.models import JobApi, JobStatus
from acestep_api.jobs.backend import JobBackend
from acestep_api.server.auth import require_api_key
from acestep_api.server.dependencies import get_outputs, get_queue, get_served, get_settings
from acestep_api.server.openapi.route_docs import FAL_WEBHOOK_QUERY, answers, key_required, merged
from acestep_api.server.services.audio_files import cut_wav, served_file
from acestep_api.server.services.key_quotas import key_quota
from acestep_api.server.services.sync_jobs import refuse_if_full, run_to_end
from acestep_api.server.services.webhooks import FAL_WEBHOOK_FIELD, accepted_webhook
from acestep_api.settings import Settings
from acestep_api.storage import OutputStore

router = APIRouter(tags=["fal"])

PATH = "/fal-ai/ace-step/prompt-to-audio"


@router.post(PATH, response_model=FalPromptOutput, dependencies=[Depends(require_api_key)],
             summary="fal.ai prompt-to-audio: a song from a prompt, answered when it is made",
             responses=answers(None, 400, 401, 413, 429, 500, 504),
             openapi_extra=merged(FAL_WEBHOOK_QUERY, key_required()))
async def prompt_to_audio(
    fal: FalPromptInput,
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    queue: Annotated[JobBackend, Depends(get_queue)],
    served: Annotated[ServedModels, Depends(get_served)],
    outputs: Annotated[OutputStore, Depends(get_outputs)],
) -> FalPromptOutput:
    refuse_if_full(queue)
    # fal's platform takes a callback URL as the `fal_webhook` query parameter.
    webhook = await accepted_webhook(request.query_params, request, settings, names=(FAL_WEBHOOK_FIELD,))
    seed = random.randint(0, SEED_MAX) if fal.seed in (None, RANDOM_SEED) else fal.seed
    generation = fit_lm_guidance(fal_dialect.parse(fal, seed, lm_available=served.lm_available), served)
    job = await run_to_end(queue, generation, JobApi.FAL, settings.generation_timeout, connection=request,
                           quota=key_quota(request), webhook_url=webhook)
    if job.status is not JobStatus.SUCCEEDED or job.result is None or not job.result.audio_paths:
        raise HTTPException(status_code=500, detail=job.error or "Generation failed")
    path = job.result.audio_paths[0]
    if fal_dialect.needs_cut(fal):
        await run_in_threadpool(cut_wav, outputs, path, fal.duration)
    return fal_dialect.render(job.result, await run_in_threadpool(served_file, request, settings, outputs, path))
