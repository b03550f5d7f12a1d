"""POST /v1/chat/completions: music in the OpenAI / OpenRouter chat shape (api-contract 3.9).

The job goes through the one queue like any other. Without `stream` the answer comes when
the job has ended: the song's details as markdown and the first audio file as a data URL.
With `stream` the answer is server-sent events: a first delta, a heartbeat "." while the job
runs, then the details, the audio, and the finish. A client that goes away cancels its job.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from acestep_api.jobs.models import Job, JobApi, JobStatus
from acestep_api.jobs.queue import JobQueue
from acestep_api.jobs.results import NOT_AVAILABLE
from acestep_api.server.auth import require_api_key
from acestep_api.server.chat_messages import (
    audio_targets,
    check_task,
    lm_need,
    message_input,
    save_audio,
    to_generation_request,
)
from acestep_api.dialects.coercion import InvalidField
from acestep_api.server.dependencies import get_engine, get_queue, get_settings
from acestep_api.server.protocol.chat import (
    UNION_TAGS,
    AssistantMessage,
    AudioOutput,
    AudioUrl,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
)
from acestep_api.server.request_guard import chat_body_limit
from acestep_api.server.sync_jobs import GENERATION_TIMEOUT, refuse_if_full, run_to_end, submit
from acestep_api.server.text_validity import invalid_unicode
from acestep_api.settings import Settings
from acestep_api.server.openapi.route_docs import EVENT_STREAM, answers, json_body, key_required, merged

router = APIRouter(tags=["chat"])

# Seconds between the "." deltas a stream sends while its job runs (keeps proxies from
# closing an idle connection, and shows the client that work goes on).
HEARTBEAT_SECONDS = 2.0
FIRST_DELTA = "Generating music"
NO_DETAILS = "Music generated successfully."
INVALID_REQUEST = "Invalid request format: {}"
# Output file type -> MIME type of its data URL.
AUDIO_MIME_TYPES = {
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".opus": "audio/ogg",
    ".ogg": "audio/ogg",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
}
INSTRUMENTAL_LYRICS = ("", "[inst]", "[instrumental]")
METADATA_LINES = (("BPM", "bpm", ""), ("Duration", "duration", "s"), ("Key", "keyscale", ""),
                  ("Time Signature", "timesignature", ""))


# --- reading the request ----------------------------------------------------------------


def describe_validation_error(error: ValidationError) -> str:
    """Every problem as `path: message`, the path in the client's terms
    (`messages[0].content[1].input_audio.data`)."""
    problems = []
    for problem in error.errors(include_url=False):
        path = ""
        for part in problem.get("loc", ()):
            if isinstance(part, int):
                path += f"[{part}]"
            elif part not in UNION_TAGS:
                path += f".{part}" if path else str(part)
        problems.append(f"{path}: {problem['msg']}" if path else problem["msg"])
    return "; ".join(problems)


async def read_chat_request(request: Request, settings: Settings) -> ChatCompletionRequest:
    """The JSON body (whatever its declared type, as official) as a ChatCompletionRequest."""
    # The request guard enforces the same limit while the body arrives; kept here so the
    # route stays bounded on its own.
    limit = chat_body_limit(settings)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit.max_bytes:
            raise HTTPException(status_code=413, detail=limit.message)
    # A body with audio can be hundreds of MB: parsed off the event loop.
    return await run_in_threadpool(parse_chat_request, bytes(raw))


def parse_chat_request(raw: bytes) -> ChatCompletionRequest:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise HTTPException(status_code=400, detail=INVALID_REQUEST.format(f"the body is not valid JSON ({error})"))
    if not isinstance(body, dict):
        raise HTTPException(status_code=400, detail=INVALID_REQUEST.format("the body must be a JSON object"))
    # The guard checks small bodies; a body with audio is too large for it to keep a copy.
    problem = invalid_unicode(body)
    if problem:
        raise HTTPException(status_code=400, detail=problem)
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as error:
        raise HTTPException(status_code=400, detail=INVALID_REQUEST.format(describe_validation_error(error))) from None


def lm_missing(reason: str, engine) -> HTTPException:
    why = f"the 5Hz LM failed to load ({engine.lm_error})" if engine.lm_error else "the 5Hz LM is not loaded"
    return HTTPException(
        status_code=503,
        detail=f"Model not initialized. init_error={why}; {reason} needs it. Put the description in "
               "<prompt>...</prompt> (and lyrics in <lyrics>...</lyrics>), or start the server with "
               "ACESTEP_INIT_LLM=true.",
    )


# --- the reply --------------------------------------------------------------------------


def _shown(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def describe_result(job: Job) -> str:
    """The song's details as markdown: a Metadata block (values known only) and the lyrics
    unless it is an instrumental."""
    result = job.result
    lines = []
    caption = (result.prompt or job.request.prompt).strip()
    if caption:
        lines.append(f"**Caption:** {caption}")
    for label, key, unit in METADATA_LINES:
        value = result.metas.get(key)
        if value not in (None, "", NOT_AVAILABLE):
            lines.append(f"**{label}:** {_shown(value)}{unit}")
    sections = ["## Metadata\n" + "\n".join(lines)] if lines else []
    if result.lyrics.strip().lower() not in INSTRUMENTAL_LYRICS:
        sections.append(f"## Lyrics\n{result.lyrics}")
    return "\n\n".join(sections) or NO_DETAILS


def _data_url(path: str) -> str:
    mime = AUDIO_MIME_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


async def first_audio(job: Job) -> list[AudioOutput] | None:
    """The first audio file as a data URL (only the first, as official), None without audio."""
    paths = job.result.audio_paths
    if not paths:
        return None
    url = await run_in_threadpool(_data_url, paths[0])
    return [AudioOutput(audio_url=AudioUrl(url=url))]


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


async def completion(job: Job, model: str) -> ChatCompletion:
    message = AssistantMessage(content=describe_result(job), audio=await first_audio(job))
    return ChatCompletion(id=completion_id(), created=int(time.time()), model=model,
                          choices=[Choice(message=message)])


async def stream_completion(queue: JobQueue, job_id: str, model: str, timeout: float) -> AsyncIterator[str]:
    """Server-sent events for one job; the job is cancelled if the stream stops before it ends."""
    chunk_id, created = completion_id(), int(time.time())

    def event(finish_reason: str | None = None, **delta: Any) -> str:
        chunk = ChatCompletionChunk(id=chunk_id, created=created, model=model,
                                    choices=[ChunkChoice(delta=Delta(**delta), finish_reason=finish_reason)])
        return f"data: {json.dumps(chunk.model_dump(), ensure_ascii=False)}\n\n"

    job: Job | None = None
    timed_out = False
    try:
        yield event(role="assistant", content=FIRST_DELTA)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            job = await queue.wait_finished(job_id, min(HEARTBEAT_SECONDS, remaining))
            if job is None or job.status.ended:
                break
            yield event(content=".")
        if job is not None and job.status is JobStatus.SUCCEEDED:
            yield event(content=f"\n\n{describe_result(job)}")
            audio = await first_audio(job)
            if audio is not None:
                yield event(audio=audio)
            yield event(finish_reason="stop")
        else:
            if timed_out:
                error = GENERATION_TIMEOUT
            else:
                error = (job.error or "Generation failed") if job is not None else "Job not found"
            yield event(content=f"\n\nError: {error}")
            yield event(finish_reason="error")
        yield "data: [DONE]\n\n"
    finally:
        # Timed out, or the client went away (the stream is cancelled or closed): free the worker.
        if job is None or not job.status.ended:
            queue.cancel(job_id)


# --- the route --------------------------------------------------------------------------


@router.post(
    "/v1/chat/completions", dependencies=[Depends(require_api_key)], response_model=None,
    summary="Music in the OpenAI chat-completions shape (JSON, or SSE with stream)",
    responses=answers(ChatCompletion, 400, 401, 413, 429, 500, 503, 504, more_content=EVENT_STREAM),
    openapi_extra=merged(json_body(ChatCompletionRequest), key_required()),
)
async def chat_completions(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    queue: Annotated[JobQueue, Depends(get_queue)],
    engine: Annotated[Any, Depends(get_engine)],
):
    chat = await read_chat_request(request, settings)
    try:
        found = message_input(chat)
        generation = to_generation_request(chat, found, settings)
        need = lm_need(generation)
        if need and not engine.lm_available:
            raise lm_missing(need, engine)
        check_task(generation, found, engine)
        refuse_if_full(queue)
        paths = await run_in_threadpool(save_audio, audio_targets(generation, found.audio), settings)
    except InvalidField as error:
        raise HTTPException(status_code=getattr(error, "status_code", 400), detail=str(error)) from None
    generation = generation.model_copy(update=paths)
    temp_files = list(paths.values())

    if chat.stream:
        job, _ = submit(queue, generation, JobApi.CHAT, temp_files)
        return StreamingResponse(
            stream_completion(queue, job.id, chat.model, settings.generation_timeout),
            media_type="text/event-stream",
            # Proxies must pass each event on at once, not buffer the stream.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    ended = await run_to_end(queue, generation, JobApi.CHAT, settings.generation_timeout, temp_files=temp_files)
    if ended.status is not JobStatus.SUCCEEDED:
        raise HTTPException(status_code=500, detail=ended.error or "Generation failed")
    return JSONResponse((await completion(ended, chat.model)).model_dump())
