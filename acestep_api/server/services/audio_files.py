"""Audio files a synchronous answer points to: the absolute URL and facts of a finished job's
file, and cutting a clip shorter than the model's shortest song."""

from __future__ import annotations

import os

import soundfile
from fastapi import Request

from acestep_api.atomic_files import atomic_path
from acestep_api.audio_formats import mime_type
from acestep_api.dialects.fal import FalFile
from acestep_api.dialects.official import audio_url
from acestep_api.server.public_url import absolute_url
from acestep_api.settings import Settings


def served_file(request: Request, settings: Settings, path: str) -> FalFile:
    """The file as fal describes one: its absolute download URL, type, name and size."""
    return FalFile(
        url=absolute_url(request, settings, audio_url(path)),
        content_type=mime_type(path, "application/octet-stream"),
        file_name=os.path.basename(path),
        file_size=os.path.getsize(path),
    )


def cut_wav(path: str, seconds: float) -> None:
    """Keep the first `seconds` of a WAV file, in place (atomically: a client may be reading it)."""
    data, rate = soundfile.read(path, dtype="int16", always_2d=True)
    subtype = soundfile.info(path).subtype
    with atomic_path(path) as temp:
        soundfile.write(temp, data[: int(round(seconds * rate))], rate, subtype=subtype, format="WAV")
