"""POST /release_task and POST /query_result: the official API's job submission and polling."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from acestep_api.engine.request import DURATION_MAX, SOURCE_TASK_TYPES, GenerationRequest
from acestep_api.jobs.models import Job, JobApi, JobStatus
from acestep_api.jobs.queue import JobQueue
from acestep_api.jobs.results import query_result_item
from acestep_api.server.audio_paths import AUDIO_PATH_FIELDS, resolve_request_audio
from acestep_api.server.auth import authorized_fields, verify_body_token
from acestep_api.server.bodies import RequestBody, read_request_body
from acestep_api.dialects.coercion import InvalidField
from acestep_api.server.dependencies import get_engine, get_queue, get_settings
from acestep_api.server.envelope import wrap
from acestep_api.dialects.official import parse_release_task
from acestep_api.server.sync_jobs import refuse_if_full, submit
from acestep_api.settings import Settings
from acestep_api.server.openapi.answers import Envelope, QueryResultItem, Queued
from acestep_api.server.openapi.request_bodies import QueryResultBody, ReleaseTaskForm, ReleaseTaskJson, ReleaseTaskMultipart
from acestep_api.server.openapi.route_docs import answers, body, key_required, merged

router = APIRouter(tags=["tasks"])


def check_model_supports(generation: GenerationRequest, engine) -> None:
    """Refuse at once a task the chosen model cannot run, naming the models that can."""
    task = generation.task_type
    model = engine.select_model(generation.model)
    if task not in model.supported_task_types:
        able = [entry["name"] for entry in engine.model_inventory() if task in entry["supported_task_types"]]
        where = f"models that support it: {', '.join(able)}" if able else "no model on this server supports it"
        raise InvalidField("task_type", f"task_type {task!r} is not supported by model {model.name!r}; {where}")


def check_task(generation: GenerationRequest, engine) -> None:
    """Refuse at once what the chosen model cannot run, or what lacks its source audio."""
    check_model_supports(generation, engine)
    task = generation.task_type
    # A cover without a source falls back to text2music (official); the others cannot run.
    if task in SOURCE_TASK_TYPES and not generation.src_audio_path:
        raise InvalidField("src_audio",
                           f"task_type {task!r} needs source audio: upload src_audio or set src_audio_path")
    for mode in ("extract_codes_only", "full_analysis_only"):
        if getattr(generation, mode) and not generation.src_audio_path:
            raise InvalidField("src_audio", f"{mode} needs source audio: upload src_audio or set src_audio_path")


def check_audio_files(generation: GenerationRequest, max_decoded_mb: float,
                      upload_fields: Mapping[str, str] | None = None) -> None:
    """Check each audio input once so empty, silent, undecodable, non-finite or out-of-bounds
    audio (a decompression bomb, a header's absurd sample rate) is refused now rather than
    failing the job later. `upload_fields` maps a path field to the upload field that filled
    it: an upload is named by that field, never by its server-chosen file name.
    Blocking: call it off the event loop."""
    # Imported here: decoding pulls in the numeric audio stack, needed only when audio comes.
    from acestep_api.engine.audio_input import AudioInputError, check_audio

    upload_fields = upload_fields or {}
    for path_field in AUDIO_PATH_FIELDS:
        path = getattr(generation, path_field)
        if not path:
            continue
        field = upload_fields.get(path_field, path_field)
        label = "audio file" if path_field in upload_fields else None  # None: the client's own file name
        try:
            check_audio(path, max_seconds=DURATION_MAX, label=label, max_decoded_mb=max_decoded_mb)
        except AudioInputError as error:
            raise InvalidField(field, f"{field}: {error}") from None


async def check_audio_inputs(generation: GenerationRequest, body: RequestBody, settings: Settings) -> None:
    """check_audio_files in a worker thread, naming an uploaded file by its upload field."""
    upload_fields = {upload.path_field: upload.field for upload in body.uploads}
    await run_in_threadpool(check_audio_files, generation, settings.max_decoded_audio_mb, upload_fields)


async def accept_generation(request: Request, settings: Settings, queue: JobQueue, engine) -> tuple[GenerationRequest, RequestBody]:
    """Read, authorise, parse and check a generation request (the fields and checks of
    /release_task, shared by the routes that submit one). Refused requests lose their uploads;
    an accepted one's uploads belong to the caller until a job owns them."""
    body = await read_request_body(request, strict=True)
    try:
        verify_body_token(body.fields, request, settings)
        try:
            generation = parse_release_task(body.fields, settings)
            check_task(generation, engine)
            # Only this request's own uploads may be named in the upload folder.
            own_uploads = {upload.path_field: upload.path for upload in body.uploads}
            generation = resolve_request_audio(generation, settings.upload_dir, settings.input_dir, own_uploads)
            refuse_if_full(queue)
            await check_audio_inputs(generation, body, settings)
        except InvalidField as error:
            raise HTTPException(status_code=getattr(error, "status_code", 400), detail=str(error)) from None
    except BaseException:
        body.discard_uploads()  # refused (or cut short): no job owns them
        raise
    return generation, body


def submit_generation(queue: JobQueue, generation: GenerationRequest, body: RequestBody, api: JobApi) -> tuple[Job, int]:
    """Queue an accepted request; on a full queue its uploads go and the answer is 429."""
    return submit(queue, generation, api, body.temp_files)


@router.post(
    "/release_task", response_model=None, summary="Submit a generation job",
    responses=answers(Envelope[Queued], 400, 401, 403, 413, 415, 429, links={
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
    queue: Annotated[JobQueue, Depends(get_queue)],
    engine: Annotated[Any, Depends(get_engine)],
) -> dict:
    generation, body = await accept_generation(request, settings, queue, engine)
    job, position = submit_generation(queue, generation, body, JobApi.RELEASE_TASK)
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


@router.post("/query_result", response_model=None, summary="The state and results of jobs",
             responses=answers(Envelope[list[QueryResultItem]], 400, 401, 413),
             openapi_extra=merged(body(QueryResultBody), key_required(body_token=True)))
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
