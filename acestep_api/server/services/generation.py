"""Accepting a generation request and putting it on the queue: what POST /release_task and
POST /v1/music/generate share (the checks themselves are in acestep_api/admission/, which the
RunPod worker and chat use too).

A request's uploads are refused with it; once accepted they belong to the caller until the
submitted job owns them, and a refused submission deletes them.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from acestep_api.admission.audio_check import check_audio_files
from acestep_api.admission.lm_check import fit_lm_guidance
from acestep_api.admission.task_check import check_models_named, check_task
from acestep_api.engine.request import GenerationRequest
from acestep_api.engine.served import ServedModels
from acestep_api.jobs.models import Job, JobApi
from acestep_api.jobs.backend import JobBackend
from acestep_api.server.bodies import RequestBody
from acestep_api.server.services.key_quotas import KeyQuota
from acestep_api.server.services.uploads import discarded_on_failure, resolve_own_audio
from acestep_api.server.services.sync_jobs import refuse_if_full, submit
from acestep_api.settings import Settings
from acestep_api.storage import OutputStore


async def check_audio_inputs(generation: GenerationRequest, body: RequestBody, settings: Settings) -> None:
    """check_audio_files in a worker thread, naming an uploaded file by its upload field."""
    upload_fields = {upload.path_field: upload.field for upload in body.uploads}
    await run_in_threadpool(check_audio_files, generation, settings.max_decoded_audio_mb, upload_fields)


async def accept_generation(generation: GenerationRequest, body: RequestBody, settings: Settings,
                            queue: JobBackend, served: ServedModels,
                            outputs: OutputStore | None = None) -> GenerationRequest:
    """Check a parsed request against the models, its audio and the queue: the request with
    its audio paths resolved, or an InvalidField (or a 429). Refused, its uploads go.
    Accepted, its uploads are put where the worker that runs it reads them (`outputs`)."""
    with discarded_on_failure(body):
        check_models_named(generation, served)
        check_task(generation, served)
        generation = fit_lm_guidance(generation, served)
        generation = resolve_own_audio(generation, body, settings)
        refuse_if_full(queue)
        await check_audio_inputs(generation, body, settings)
        if outputs is not None and body.temp_files:
            await run_in_threadpool(publish_uploads, outputs, body.temp_files)
    return generation


def publish_uploads(outputs: OutputStore, paths) -> None:
    """Each upload where every worker can read it (blocking)."""
    for path in paths:
        outputs.publish_upload(path)


def submit_generation(queue: JobBackend, generation: GenerationRequest, body: RequestBody, api: JobApi,
                      quota: KeyQuota | None = None, webhook_url: str | None = None) -> tuple[Job, int]:
    """Queue an accepted request (the job owns its uploads from now on), charged to `quota`'s
    key, with its checked callback URL if any; on a full queue or a key over its limits its
    uploads go and the answer is 429 (403 for a model the key may not use)."""
    return submit(queue, generation, api, body.temp_files, quota, webhook_url)
