"""The two input dialects a RunPod serverless job may speak: how each becomes a
GenerationRequest (`parse`) and what a finished job answers in it (`render_release_task`,
`render_v1`). Free of any transport: the worker in `acestep_api/serverless/` calls them.

- The ACE-Step 1.5 dialect (the ACE-Step 1.5 RunPod template): `caption` (required), `lyrics`, `duration`,
  `batch_size`, `timeout_seconds`, `poll_interval`, `return_audio_base64`,
  `max_base64_bytes`, plus every /release_task field and alias. Its answer carries the same
  result elements as /query_result (built by `succeeded_elements`, so both stay one shape)
  and, on request, the files as base64.
- The v1 dialect (the ACE-Step v1 RunPod endpoint): `prompt` (required), `duration`, `guidance_scale`,
  `num_inference_steps`, `seed`, and `lyrics`. Its answer is one 16-bit WAV as base64, cut to
  the length asked for.

Which one a job speaks is decided by its fields alone (`detect_dialect`): v1 when the input has
`prompt`, has no `caption`, and names no field outside the v1 set; the 1.5 dialect otherwise.
So a v1 client is answered in its own shape, and adding any 1.5 field (or writing
`caption`) selects the 1.5 dialect.
"""

from __future__ import annotations

import base64
import enum
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from acestep_api.audio_formats import mime_type
from acestep_api.dialects.coercion import InvalidField, show, to_bool, to_float, to_int, to_text
from acestep_api.dialects.official import ReleaseTaskFields, invalid_field_from, parse_release_task, succeeded_elements
from acestep_api.engine.request import DURATION_MIN, SEED_MAX, GenerationRequest, GenerationResult
from acestep_api.jobs.models import Job, JobApi, JobStatus
from acestep_api.settings import Settings

CAPTION_REQUIRED = "Input 'caption' is required"
PROMPT_REQUIRED = "Prompt is required"

V1_FIELDS = frozenset({"prompt", "lyrics", "duration", "guidance_scale", "num_inference_steps", "seed"})
V1_DURATION = (1.0, 240.0)
V1_GUIDANCE_SCALE = (1.0, 20.0)
V1_INFERENCE_STEPS = (10, 100)
V1_DEFAULTS = {"duration": 30.0, "guidance_scale": 8.0, "num_inference_steps": 20}

RELEASE_TASK_BATCH_SIZE = 1  # the serverless template's default (/release_task's is 2)
MAX_BASE64_BYTES = 8_000_000
FILE_TOO_LARGE = "file_too_large"
DEFAULT_CONTENT_TYPE = "audio/mpeg"


class Dialect(str, enum.Enum):
    ACE_STEP_15 = "ace-step-1.5"
    V1 = "v1"


class JobDefaults(Protocol):
    """What a job that names none gets (the worker's ServerlessSettings)."""

    default_duration: float  # song length (s) of a 1.5-dialect job
    job_timeout: float  # seconds a job may generate


def detect_dialect(fields: dict) -> Dialect:
    if "prompt" in fields and "caption" not in fields and set(fields) <= V1_FIELDS:
        return Dialect.V1
    return Dialect.ACE_STEP_15


@dataclass(frozen=True)
class ReleaseTaskInput:
    """A 1.5-dialect job: the request, and how the handler should run and answer it."""

    request: GenerationRequest
    timeout_seconds: float
    return_audio_base64: bool
    max_base64_bytes: int


@dataclass(frozen=True)
class V1Input:
    """A v1-dialect job. `duration` is the length asked for (1-240 s); the request asks the
    engine for at least its 10 s minimum, and the answer is cut to `duration`."""

    request: GenerationRequest
    prompt: str
    duration: float
    timeout_seconds: float


# --- parse: the 1.5 dialect ------------------------------------------------------------------


def _caption_given(lookup: ReleaseTaskFields) -> bool:
    caption = to_text("caption", lookup.raw("prompt"), "")
    # In sample mode the LM writes the caption from a description.
    asks_lm = to_bool(lookup.raw("sample_mode"), False) or to_text("sample_query", lookup.raw("sample_query"), "").strip()
    return bool(caption.strip() or asks_lm)


def parse_release_task_input(fields: dict, settings: Settings, options: JobDefaults) -> ReleaseTaskInput:
    """Raises InvalidField, whose message is the job's error."""
    lookup = ReleaseTaskFields(fields)
    if not _caption_given(lookup):
        raise InvalidField("caption", CAPTION_REQUIRED)
    body = dict(fields)
    # The template's defaults where the job names no value under any alias.
    if lookup.raw("audio_duration") is None:
        body["duration"] = options.default_duration
    if lookup.raw("batch_size") is None:
        body["batch_size"] = RELEASE_TASK_BATCH_SIZE
    request = parse_release_task(body, settings)
    request = request.model_copy(update={"prompt": request.prompt.strip()})
    return ReleaseTaskInput(
        request=request,
        timeout_seconds=to_float("timeout_seconds", fields.get("timeout_seconds"), options.job_timeout,
                                 minimum=0.0, exclusive_minimum=True),
        return_audio_base64=to_bool(fields.get("return_audio_base64"), False),
        max_base64_bytes=to_int("max_base64_bytes", fields.get("max_base64_bytes"), MAX_BASE64_BYTES, minimum=0),
        # `poll_interval` paced the template's polling of an HTTP server; in-process there is
        # nothing to poll, so it is accepted and not used.
    )


# --- parse: the v1 dialect -------------------------------------------------------------------


def _v1_seed(value: Any) -> int | None:
    """None (random) for a missing, blank or -1 seed."""
    allowed = f"seed must be an integer between 0 and {SEED_MAX}, or -1 for random (got {show(value)})"
    try:
        seed = to_int("seed", value, None)
    except InvalidField:
        raise InvalidField("seed", allowed) from None
    if seed is None or seed == -1:
        return None
    if not 0 <= seed <= SEED_MAX:
        raise InvalidField("seed", allowed)
    return seed


def engine_duration(duration: float) -> float:
    """What the engine is asked for: the engine's minimum at least, rounded up to the 0.1 s it
    works in, so the output is never shorter than asked."""
    return max(DURATION_MIN, math.ceil(round(duration * 10, 6)) / 10)


def parse_v1_input(fields: dict, options: JobDefaults) -> V1Input:
    """Raises InvalidField, whose message is the job's error."""
    prompt = to_text("prompt", fields.get("prompt"), "")
    if not prompt.strip():
        raise InvalidField("prompt", PROMPT_REQUIRED)
    duration = to_float("duration", fields.get("duration"), V1_DEFAULTS["duration"],
                        minimum=V1_DURATION[0], maximum=V1_DURATION[1])
    guidance_scale = to_float("guidance_scale", fields.get("guidance_scale"), V1_DEFAULTS["guidance_scale"],
                              minimum=V1_GUIDANCE_SCALE[0], maximum=V1_GUIDANCE_SCALE[1])
    steps = to_int("num_inference_steps", fields.get("num_inference_steps"), V1_DEFAULTS["num_inference_steps"],
                   minimum=V1_INFERENCE_STEPS[0], maximum=V1_INFERENCE_STEPS[1])
    seed = _v1_seed(fields.get("seed"))
    try:
        request = GenerationRequest(
            prompt=prompt.strip(),
            lyrics=to_text("lyrics", fields.get("lyrics"), ""),
            audio_duration=engine_duration(duration),
            batch_size=1,
            inference_steps=steps,
            guidance_scale=guidance_scale,
            use_random_seed=seed is None,
            seeds=[] if seed is None else [seed],
            audio_format="wav",  # the v1 endpoint answers 16-bit WAV
        )
    except ValidationError as error:
        raise invalid_field_from(error) from None
    return V1Input(request=request, prompt=prompt, duration=duration, timeout_seconds=options.job_timeout)


def parse(fields: dict, settings: Settings, options: JobDefaults) -> ReleaseTaskInput | V1Input:
    """A job's `input`, in whichever dialect its fields speak. Raises InvalidField, whose
    message is the job's error."""
    if detect_dialect(fields) is Dialect.V1:
        return parse_v1_input(fields, options)
    return parse_release_task_input(fields, settings, options)


# --- render ----------------------------------------------------------------------------------


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
    """One entry per element with a file: its bytes as base64, or why they were left out.
    Reads the files."""
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
        entries.append({**entry, "content_type": mime_type(path, DEFAULT_CONTENT_TYPE), "base64": encoded})
    return entries


def render_release_task(task_id: str, job: ReleaseTaskInput, result: GenerationResult, started_at: float) -> dict:
    """The answer to a 1.5-dialect job that succeeded."""
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


def render_v1(job: V1Input, audio: bytes, result: GenerationResult, generation_time: float) -> dict:
    """The answer to a v1 job that succeeded; `audio` is its WAV, already cut to `job.duration`."""
    return {
        "audio_base64": base64.b64encode(audio).decode("ascii"),
        "generation_time": round(generation_time, 2),
        "prompt": job.prompt,
        "duration": job.duration,
        "seed": result.seeds[0],
        "sample_rate": result.sample_rate,
        "success": True,
    }


def render_v1_failure(message: str, generation_time: float) -> dict:
    """The answer to a v1 job that failed: the v1 endpoint's own error shape."""
    return {"error": message, "generation_time": round(generation_time, 2), "success": False}


def render_failure(message: str) -> dict:
    """A refused or failed job (the runpod SDK reports `{"error": ...}` as a failed job)."""
    return {"error": message}
