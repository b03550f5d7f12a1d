"""The older ACE-Step API (docs/wire-contract.md#the-older-api): POST /v1/music/generate, POST /v1/music/random,
GET /v1/jobs/{job_id} and POST /v1/jobs/{job_id}/cancel.

Its bodies are /release_task's (`parse_generate` is the official parser); its answers are
unwrapped (no `data` envelope) and statuses are strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from acestep_api.dialects.coercion import to_bool
from acestep_api.dialects.official import (
    META_KEYS,
    NOT_AVAILABLE,
    QueueView,
    analysis_answer,
    audio_url,
    generation_info,
    parse_release_task,
    seed_value,
    shown_dit_model,
    shown_metas,
)
from acestep_api.engine.request import GenerationRequest
from acestep_api.jobs.models import Job, JobStatus
from acestep_api.settings import Settings

JOB_NOT_FOUND = "Job not found"
STATUS_SUCCESS = "✅ Generation completed successfully!"  # the result's status_message (as the Hugging Face Space API doc shows it)

parse_generate = parse_release_task  # same bodies, fields and checks; only the answer differs


def parse_random(options: Mapping[str, Any], settings: Settings) -> GenerationRequest:
    """POST /v1/music/random: a sample-mode job, the LM invents caption, lyrics and metadata.
    `thinking` (or `Thinking`) defaults to true: the LM writes the audio codes too."""
    thinking = options.get("thinking", options.get("Thinking"))
    return parse_release_task({"sample_mode": True, "thinking": to_bool(thinking, True)}, settings)


class LegacyQueueView(QueueView, Protocol):
    @property
    def avg_job_seconds(self) -> float: ...


def queued(job: Job, position: int) -> dict:
    return {"job_id": job.id, "status": "queued", "queue_position": position}


def job_view(job: Job, queue: LegacyQueueView) -> dict:
    """GET /v1/jobs/{id}: every field always present; a waiting job shows its live 1-based
    position and an ETA of position x the average job time."""
    position = (queue.position(job.id) or 0) if job.status is JobStatus.QUEUED else 0
    average = queue.avg_job_seconds
    return {
        "job_id": job.id,
        "status": job.status.value,
        "created_at": float(job.created_at),
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "queue_position": position,
        "eta_seconds": position * average if position else None,
        "avg_job_seconds": float(average),
        "result": _result(job),
        "error": job.error,
    }


def cancelled_view(job: Job, queue: LegacyQueueView, stopped: bool) -> dict:
    """The job as GET /v1/jobs shows it once the cancel took effect, plus `stopped`: false
    while a running job has not yet reached the step where it stops."""
    return {**job_view(job, queue), "stopped": stopped}


def _result(job: Job) -> dict | None:
    result = job.result
    if job.status is not JobStatus.SUCCEEDED or result is None:
        return None
    urls = [audio_url(path) for path in result.audio_paths]
    metas = shown_metas(result.metas)
    # As the official legacy server did, the caption and lyrics used sit in `metas` too.
    metas.update({key: value for key, value in (("caption", result.prompt), ("lyrics", result.lyrics)) if value})
    view = {
        "first_audio_path": urls[0] if urls else None,
        "second_audio_path": urls[1] if len(urls) > 1 else None,
        "audio_paths": urls,
        "generation_info": generation_info(result),
        "status_message": STATUS_SUCCESS,
        "seed_value": seed_value(result.seeds),
        "metas": metas,
        **_typed_metas(result.metas.model_dump()),
        "lm_model": result.lm_model,
        "dit_model": shown_dit_model(result),
    }
    answer = analysis_answer(result)
    if answer is None:
        return view
    # Source analyses: their own dict, with the standard fields filled from it where it has them.
    own_metas = answer.get("metas") if isinstance(answer.get("metas"), dict) else {}
    own = {**own_metas, **{key: answer[key] for key in META_KEYS if key in answer}}
    return {
        **answer,
        **view,
        "status_message": answer.get("status_message", view["status_message"]),
        "metas": own_metas,
        **_typed_metas(own),
    }


def _typed_metas(metas: dict) -> dict:
    """The legacy API's typed copies of the metadata: null where unknown."""
    bpm, duration = metas.get("bpm"), metas.get("duration")
    return {
        "bpm": bpm if isinstance(bpm, int) and not isinstance(bpm, bool) else None,
        "duration": float(duration) if isinstance(duration, (int, float)) and not isinstance(duration, bool) else None,
        **{key: _known_text(metas.get(key)) for key in ("genres", "keyscale", "timesignature")},
    }


def _known_text(value) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return None if text in ("", NOT_AVAILABLE) else text
