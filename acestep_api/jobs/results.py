"""How a job looks to clients of each API generation.

`query_result_item` is one entry of POST /query_result (api-contract.md 3.3): `result` is a
JSON *string* of a list, because the official clients `json.loads` it. `legacy_job_view` is
the body of GET /v1/jobs/{id} (3.11).
"""

from __future__ import annotations

import json
import os
import urllib.parse

from acestep_api.jobs.models import Job, JobStatus
from acestep_api.jobs.queue import JobQueue

ENV = "development"  # the official server reports this constant in every element
META_KEYS = ("bpm", "duration", "genres", "keyscale", "timesignature")
NOT_AVAILABLE = "N/A"
STATUS_SUCCESS = "✅ Generation completed successfully!"  # the legacy result's status_message (as the Hugging Face Space API doc shows it)


def audio_url(path: str) -> str:
    """Root-relative download URL; the whole absolute path is percent-encoded, slashes too."""
    if path.startswith(("http://", "https://")):
        return path
    return "/v1/audio?path=" + urllib.parse.quote(os.path.abspath(path), safe="")


def query_result_item(task_id: str, job: Job | None, queue: JobQueue, progress_text: str = "") -> dict:
    if job is None:
        # Unknown ids are "not yet known", not an error, and carry no progress_text.
        return {"task_id": task_id, "result": "[]", "status": 0}
    return {
        "task_id": task_id,
        "result": json.dumps(_result_elements(job, queue), ensure_ascii=False),
        "status": job.status.code,
        "progress_text": progress_text,
    }


def _common(job: Job) -> dict:
    return {"file": "", "wave": "", "status": job.status.code, "create_time": int(job.created_at), "env": ENV}


def _result_elements(job: Job, queue: JobQueue) -> list[dict]:
    common = _common(job)
    if job.status is JobStatus.SUCCEEDED and job.result is not None:
        return _succeeded_elements(job, common)
    if job.status is JobStatus.FAILED:
        return [{**common, "progress": 0.0, "stage": "failed", "error": job.error}]
    waiting = job.status is JobStatus.QUEUED
    return [{
        **common,
        "prompt": "",
        "lyrics": "",
        "metas": {},
        "progress": 0.0 if waiting else float(job.progress),
        "stage": "queued" if waiting else job.stage,
        "error": None,
        "queue_position": (queue.position(job.id) or 0) if waiting else 0,
        "eta_seconds": queue.eta_seconds(job.id) if waiting else None,
    }]


def succeeded_elements(job: Job) -> list[dict]:
    """The result elements of a succeeded job (they need no queue: nothing is waiting)."""
    return _succeeded_elements(job, _common(job))


def _succeeded_elements(job: Job, common: dict) -> list[dict]:
    result = job.result
    if result.raw is not None:
        return [result.raw]  # analysis modes: their own dict, verbatim (api-contract.md 3.3)
    shared = {
        "prompt": result.prompt,
        "lyrics": result.lyrics,
        "metas": {
            **{key: result.metas.get(key, NOT_AVAILABLE) for key in META_KEYS},
            "prompt": job.request.prompt,
            "lyrics": job.request.lyrics,
        },
        "generation_info": result.generation_info,
        "seed_value": ",".join(str(seed) for seed in result.seeds),
        "lm_model": result.lm_model,
        "dit_model": result.dit_model,
        "progress": 1.0,
        "stage": "succeeded",
    }
    # A success without audio (analysis modes) is still one element, with an empty file.
    files = [audio_url(path) for path in result.audio_paths] or [""]
    return [{**common, "file": file, **shared} for file in files]


def legacy_job_view(job: Job, queue: JobQueue) -> dict:
    """GET /v1/jobs/{id} (api-contract 3.11): every field always present; a waiting job shows
    its live 1-based position and an ETA of position x the average job time."""
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
        "result": _legacy_result(job),
        "error": job.error,
    }


def _legacy_result(job: Job) -> dict | None:
    result = job.result
    if job.status is not JobStatus.SUCCEEDED or result is None:
        return None
    urls = [audio_url(path) for path in result.audio_paths]
    metas = {key: NOT_AVAILABLE for key in META_KEYS}
    metas.update({key: value for key, value in result.metas.items() if value not in (None, "")})
    # As the official legacy server did, the caption and lyrics used sit in `metas` too.
    metas.update({key: value for key, value in (("caption", result.prompt), ("lyrics", result.lyrics)) if value})
    view = {
        "first_audio_path": urls[0] if urls else None,
        "second_audio_path": urls[1] if len(urls) > 1 else None,
        "audio_paths": urls,
        "generation_info": result.generation_info,
        "status_message": STATUS_SUCCESS,
        "seed_value": ",".join(str(seed) for seed in result.seeds),
        "metas": metas,
        **_typed_metas(metas),
        "lm_model": result.lm_model,
        "dit_model": result.dit_model,
    }
    if result.raw is None:
        return view
    # Analysis modes: their own dict, with the standard fields filled from it where it has them.
    raw_metas = result.raw.get("metas") if isinstance(result.raw.get("metas"), dict) else {}
    own = {**raw_metas, **{key: result.raw[key] for key in META_KEYS if key in result.raw}}
    return {
        **result.raw,
        **view,
        "status_message": result.raw.get("status_message", view["status_message"]),
        "metas": raw_metas,
        **_typed_metas(own),
    }


def _typed_metas(metas: dict) -> dict:
    """The legacy API's typed copies of the metadata: null where unknown ("N/A")."""
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
