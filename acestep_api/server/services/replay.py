"""Replaying a finished song: its stored `resolved` request (seeds, length, the LM's text and
codes settled) queued again, so the same audio comes back without the LM running."""

from __future__ import annotations

import os

from fastapi import HTTPException

from acestep_api.admission.audio_paths import AUDIO_PATH_FIELDS
from acestep_api.dialects.coercion import to_choice
from acestep_api.engine.request import AUDIO_FORMATS, GenerationRequest, GenerationResult
from acestep_api.jobs.models import JobStatus
from acestep_api.jobs.backend import JobBackend
from acestep_api.server.bodies import RequestBody
from acestep_api.server.services.task_lookup import client_job

JOB_NOT_FOUND = "Job not found"


def replay_request(queue: JobBackend, job_id: str, audio_format=None) -> GenerationRequest:
    """The request that replays `job_id`, in `audio_format` if given (else the job's own).
    404 for an unknown job; 409 for one that did not succeed, made no audio, or read input
    audio that is gone (uploads are deleted when their job ends)."""
    job = client_job(queue, job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=JOB_NOT_FOUND)
    result = job.result
    if job.status is not JobStatus.SUCCEEDED or not isinstance(result, GenerationResult):
        raise HTTPException(status_code=409, detail=f"Only a succeeded job can be replayed; this one is {job.status.value}")
    if result.resolved is None:
        raise HTTPException(status_code=409, detail="This job stored nothing to replay (an analysis, or a job "
                                                    "finished by an earlier version of the server)")
    resolved = result.resolved
    for field in AUDIO_PATH_FIELDS:
        path = getattr(resolved, field)
        if path and not os.path.isfile(path):
            raise HTTPException(status_code=409, detail=f"This job's {field} is no longer on the server "
                                                        "(uploads are deleted when their job ends)")
    fmt = to_choice("audio_format", audio_format, resolved.audio_format, AUDIO_FORMATS)
    return resolved.model_copy(update={"audio_format": fmt, "replay_of": job.id})


def replay_from_body(body: RequestBody, queue: JobBackend) -> GenerationRequest | None:
    """A submission body's `replay_of` (a succeeded job's id) as the replay to queue, in the
    body's `audio_format` if it names one; None without the field. Nothing else of the body
    applies, and any upload it brought is not needed."""
    replay_of = body.fields.get("replay_of")
    if replay_of in (None, ""):
        return None
    generation = replay_request(queue, str(replay_of), body.fields.get("audio_format"))
    body.discard_uploads()
    return generation
