"""What a finished serverless job answers, in each dialect.

The 1.5 answer carries the same result elements as /query_result (built by
`succeeded_elements`, so both stay one shape) and, on request, the files as base64. The v1
answer is one 16-bit WAV as base64, cut to the length asked for.
"""

from __future__ import annotations

import base64
import os
import time

import soundfile as sf

from acestep_api.atomic_files import atomic_path
from acestep_api.engine.request import GenerationRequest, GenerationResult
from acestep_api.jobs.models import Job, JobApi, JobStatus
from acestep_api.jobs.results import succeeded_elements
from acestep_api.serverless.dialects import ReleaseTaskInput, V1Input
from acestep_api.server.routes.audio import MEDIA_TYPES

FILE_TOO_LARGE = "file_too_large"


def result_elements(task_id: str, request: GenerationRequest, result: GenerationResult, started_at: float) -> list[dict]:
    """The elements /query_result would list for this job once it succeeded."""
    job = Job(id=task_id, request=request, api=JobApi.RELEASE_TASK, status=JobStatus.SUCCEEDED,
              created_at=started_at, started_at=started_at, finished_at=time.time(),
              progress=1.0, stage="succeeded", result=result)
    return succeeded_elements(job)


def _whole(value):
    """30.0 -> 30 (the template reports the duration as it was sent, an integer)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def audio_entries(elements: list[dict], paths: list[str], max_bytes: int) -> list[dict]:
    """One entry per element with a file: its bytes as base64, or why they were left out."""
    entries = []
    for index, (element, path) in enumerate(zip(elements, paths)):
        if not element.get("file"):
            continue
        size = os.path.getsize(path)
        entry = {"index": index, "file": element["file"]}
        if size > max_bytes:
            entries.append({**entry, "skipped": True, "reason": FILE_TOO_LARGE, "bytes": size})
            continue
        with open(path, "rb") as handle:
            encoded = base64.b64encode(handle.read()).decode("ascii")
        content_type = MEDIA_TYPES.get(os.path.splitext(path)[1].lower(), "audio/mpeg")
        entries.append({**entry, "content_type": content_type, "base64": encoded})
    return entries


def release_task_output(task_id: str, job: ReleaseTaskInput, result: GenerationResult, started_at: float) -> dict:
    request = job.request
    elements = result_elements(task_id, request, result, started_at)
    duration = request.audio_duration if request.audio_duration is not None else result.metas.get("duration")
    output = {
        "task_id": task_id,
        "status": "completed",
        "duration": _whole(duration),
        "batch_size": request.batch_size,
        "results": elements,
    }
    if job.return_audio_base64:
        output["audio"] = audio_entries(elements, result.audio_paths, job.max_base64_bytes)
    return output


def v1_wav(path: str, seconds: float) -> bytes:
    """The engine's 16-bit WAV cut to `seconds` (the engine makes 10 s at least); the file on
    disk is cut too, so it holds what the client received."""
    info = sf.info(path)
    wanted = round(seconds * info.samplerate)
    if info.frames > wanted:
        frames, rate = sf.read(path, frames=wanted, dtype="int16", always_2d=True)
        with atomic_path(path) as temp:  # never a truncated file under the engine's name
            sf.write(temp, frames, rate, format="WAV", subtype="PCM_16")
    with open(path, "rb") as handle:
        return handle.read()


def v1_output(job: V1Input, result: GenerationResult, generation_time: float) -> dict:
    audio = v1_wav(result.audio_paths[0], job.duration)
    return {
        "audio_base64": base64.b64encode(audio).decode("ascii"),
        "generation_time": round(generation_time, 2),
        "prompt": job.prompt,
        "duration": job.duration,
        "seed": result.seeds[0],
        "sample_rate": result.sample_rate,
        "success": True,
    }
