"""POST /v1/chat/completions: music in the OpenAI / OpenRouter chat shape (docs/wire-contract.md#chat-completions).

The body is read here; `dialects/chat.py` parses it and words the answer. The job goes
through the one queue like any other. Without `stream` the answer comes when the job has
ended; with `stream` it is server-sent events, a heartbeat while the job runs. A client that
goes away cancels its job.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from acestep_api.dialects import chat as dialect
from acestep_api.dialects.chat import ChatCompletion, ChatCompletionRequest
from acestep_api.dialects.coercion import InvalidField
from acestep_api.jobs.models import Job, JobApi, JobStatus
from acestep_api.engine.served import ServedModels
from acestep_api.jobs.backend import JobBackend
from acestep_api.server.auth import require_api_key
from acestep_api.server.dependencies import get_outputs, get_served, get_queue, get_settings
from acestep_api.server.services.audio_files import first_audio
from acestep_api.storage import OutputStore
from acestep_api.server.openapi.route_docs import EVENT_STREAM, answers, json_body, key_required, merged
from acestep_api.server.request_guard import chat_body_limit
from acestep_api.server.services.chat_audio import save_audio
from acestep_api.server.services.generation import publish_uploads
from acestep_api.server.services.key_quotas import key_quota
from acestep_api.admission.adapter_check import check_adapter
from acestep_api.admission.lm_check import fit_lm_guidance
from acestep_api.admission.task_check import check_model_supports
from acestep_api.server.services.sync_jobs import GENERATION_TIMEOUT, refuse_if_full, run_to_end, submit
from acestep_api.server.text_validity import invalid_unicode
from acestep_api.settings import Settings

router = APIRouter(tags=["chat"])

# Seconds between the "." deltas a stream sends while its job runs (keeps proxies from
# closing an idle connection, and shows the client that work goes on).
HEARTBEAT_SECONDS = 2.0


async def read_body(request: Request, settings: Settings) -> bytes:
    # The request guard enforces the same limit while the body arrives; kept here so the
    # route stays bounded on its own.
    limit = chat_body_limit(settings)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit.max_bytes:
            raise HTTPException(status_code=413, detail=limit.message)
    return bytes(raw)


def parse_body(raw: bytes) -> ChatCompletionRequest:
    """The JSON body (whatever its declared type, as official) as a ChatCompletionRequest."""
    body = dialect.load_body(raw)
    # The guard checks small bodies; a body with audio is too large for it to keep a copy.
    problem = invalid_unicode(body)
    if problem:
        raise InvalidField("", problem)
    return dialect.read_request(body)


async def stream_completion(queue: JobBackend, outputs: OutputStore, job_id: str, model: str,
                            timeout: float) -> AsyncIterator[str]:
    """Server-sent events for one job; the job is cancelled if the stream stops before it ends."""
    writer = dialect.ChunkWriter(model)
    job: Job | None = None
    timed_out = False
    try:
        yield writer.start()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            job = await queue.wait_finished(job_id, min(HEARTBEAT_SECONDS, remaining))
            if job is None or job.status.ended:
                break
            yield writer.heartbeat()
        if job is not None and job.status is JobStatus.SUCCEEDED:
            yield writer.details(job)
            audio = await run_in_threadpool(first_audio, outputs, job)
            if audio is not None:
                yield writer.audio(audio)
            codes = writer.codes(job)
            if codes is not None:
                yield codes
            yield writer.finish()
        else:
            for event in writer.failure(GENERATION_TIMEOUT if timed_out else dialect.failure_reason(job)):
                yield event
        yield writer.DONE
    finally:
        # Timed out, or the client went away (the stream is cancelled or closed): free the worker.
        if job is None or not job.status.ended:
            queue.cancel(job_id)


@router.post(
    "/v1/chat/completions", dependencies=[Depends(require_api_key)], response_model=None,
    summary="Music in the OpenAI chat-completions shape (JSON, or SSE with stream)",
    responses=answers(ChatCompletion, 400, 401, 413, 429, 500, 503, 504, more_content=EVENT_STREAM),
    openapi_extra=merged(json_body(ChatCompletionRequest), key_required()),
)
async def chat_completions(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    queue: Annotated[JobBackend, Depends(get_queue)],
    served: Annotated[ServedModels, Depends(get_served)],
    outputs: Annotated[OutputStore, Depends(get_outputs)],
):
    # An InvalidField raised on the way is a 400 naming the field (or the status it carries).
    raw = await read_body(request, settings)
    # A body with audio can be hundreds of MB: parsed off the event loop.
    chat = await run_in_threadpool(parse_body, raw)
    call = dialect.parse(chat, settings)
    need = dialect.lm_need(call.generation)
    if need and not served.lm_available:
        raise HTTPException(status_code=503, detail=dialect.lm_missing_message(need, served.lm_error))
    check_model_supports(call.generation, served)
    check_adapter(call.generation, served)
    call = dataclasses.replace(call, generation=fit_lm_guidance(call.generation, served))
    dialect.check_source_audio(call.found, call.generation)
    refuse_if_full(queue)
    targets = dialect.audio_targets(call)
    paths = await run_in_threadpool(save_audio, targets, settings)
    await run_in_threadpool(publish_uploads, outputs, paths.values())
    # Should a saved part vanish before the job runs, the engine names it by its part, not its file.
    parts = {path_field: f"{attachment.field}.data" for path_field, attachment in targets}
    generation = call.generation.model_copy(update={**paths, "upload_fields": parts} if paths else paths)
    temp_files = list(paths.values())

    if chat.stream:
        job, _ = submit(queue, generation, JobApi.CHAT, temp_files, key_quota(request))
        return StreamingResponse(
            stream_completion(queue, outputs, job.id, chat.model, settings.generation_timeout),
            media_type="text/event-stream",
            # Proxies must pass each event on at once, not buffer the stream.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    ended = await run_to_end(queue, generation, JobApi.CHAT, settings.generation_timeout, temp_files=temp_files,
                             connection=request, quota=key_quota(request))
    if ended.status is not JobStatus.SUCCEEDED:
        raise HTTPException(status_code=500, detail=dialect.failure_reason(ended))
    audio = await run_in_threadpool(first_audio, outputs, ended)
    return JSONResponse(dialect.render(ended, chat.model, audio))
