"""Audio files a synchronous answer points to or carries: the absolute URL and facts of a
finished job's file, its bytes as a data URL, and cutting a clip shorter than the model's
shortest song. Files may live in a bucket (acestep_api/storage): each function is blocking
(call it in a worker thread) and brings a local copy first where it needs the bytes."""

from __future__ import annotations

import os

import soundfile
from fastapi import Request

from acestep_api.atomic_files import atomic_path
from acestep_api.audio_formats import mime_type
from acestep_api.dialects import chat as chat_dialect
from acestep_api.dialects.fal import FalFile
from acestep_api.dialects.official import audio_url
from acestep_api.jobs.models import Job
from acestep_api.server.public_url import absolute_url
from acestep_api.settings import Settings
from acestep_api.storage import OutputStore, OutputStoreError


def served_file(request: Request, settings: Settings, outputs: OutputStore, path: str) -> FalFile:
    """The file as fal describes one: its absolute download URL, type, name and size."""
    size = outputs.size(path)
    if size is None:
        raise OutputStoreError("the generated file is gone from the output store")
    return FalFile(
        url=absolute_url(request, settings, audio_url(path)),
        content_type=mime_type(path, "application/octet-stream"),
        file_name=os.path.basename(path),
        file_size=size,
    )


def cut_wav(outputs: OutputStore, path: str, seconds: float) -> None:
    """Keep the first `seconds` of a WAV file, in place (atomically: a client may be reading it)."""
    local = outputs.fetch(path)
    if local is None:
        raise OutputStoreError("the generated file is gone from the output store")
    data, rate = soundfile.read(local, dtype="int16", always_2d=True)
    subtype = soundfile.info(local).subtype
    with atomic_path(local) as temp:
        soundfile.write(temp, data[: int(round(seconds * rate))], rate, subtype=subtype, format="WAV")
    outputs.publish([local])


def first_audio(outputs: OutputStore, job: Job):
    """Chat's first audio file as a data URL (chat_dialect.first_audio), from a local copy."""
    if job.result is not None and job.result.audio_paths:
        outputs.fetch(job.result.audio_paths[0])
    return chat_dialect.first_audio(job)
