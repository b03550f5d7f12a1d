"""Accepting a generation request and putting it on the queue: what POST /release_task and
POST /v1/music/generate share (the RunPod worker and chat use the checks too).

A request's uploads are refused with it; once accepted they belong to the caller until the
submitted job owns them, and a refused submission deletes them.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.concurrency import run_in_threadpool

from acestep_api.dialects.coercion import InvalidField
from acestep_api.engine.request import DURATION_MAX, SOURCE_TASK_TYPES, GenerationRequest
from acestep_api.jobs.models import Job, JobApi
from acestep_api.jobs.queue import JobQueue
from acestep_api.server.audio_paths import AUDIO_PATH_FIELDS
from acestep_api.server.bodies import RequestBody
from acestep_api.server.services.uploads import discarded_on_failure, resolve_own_audio
from acestep_api.server.services.sync_jobs import refuse_if_full, submit
from acestep_api.settings import Settings


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


async def accept_generation(generation: GenerationRequest, body: RequestBody, settings: Settings,
                            queue: JobQueue, engine) -> GenerationRequest:
    """Check a parsed request against the models, its audio and the queue: the request with
    its audio paths resolved, or an InvalidField (or a 429). Refused, its uploads go."""
    with discarded_on_failure(body):
        check_task(generation, engine)
        generation = resolve_own_audio(generation, body, settings)
        refuse_if_full(queue)
        await check_audio_inputs(generation, body, settings)
    return generation


def submit_generation(queue: JobQueue, generation: GenerationRequest, body: RequestBody, api: JobApi) -> tuple[Job, int]:
    """Queue an accepted request (the job owns its uploads from now on); on a full queue its
    uploads go and the answer is 429."""
    return submit(queue, generation, api, body.temp_files)
