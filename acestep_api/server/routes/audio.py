"""GET /v1/audio: download a generated file, only from inside the audio folder."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse

from acestep_api.audio_formats import mime_type
from acestep_api.admission.audio_paths import OUTSIDE
from acestep_api.server.auth import require_api_key
from acestep_api.server.dependencies import get_settings
from acestep_api.settings import Settings
from acestep_api.server.openapi.route_docs import AUDIO_FILE, answers, key_required

router = APIRouter(tags=["audio"], dependencies=[Depends(require_api_key)])

ACCESS_DENIED = OUTSIDE  # the official message, shared with the audio-input path checks


def resolve_audio_path(path: str, audio_dir: os.PathLike) -> str:
    """The real path of `path` if it lies in `audio_dir` (symlinks resolved), else 403."""
    try:
        base = os.path.realpath(audio_dir)
        real = os.path.realpath(path)
    except (ValueError, OSError):  # e.g. an embedded NUL byte
        raise HTTPException(status_code=403, detail=ACCESS_DENIED) from None
    if real != base and not real.startswith(base + os.sep):
        raise HTTPException(status_code=403, detail=ACCESS_DENIED)
    return real


@router.get("/v1/audio", response_class=FileResponse, summary="Download a generated audio file",
            responses={**answers(None, 401, 403, 404), 200: AUDIO_FILE}, openapi_extra=key_required())
async def get_audio(
    path: Annotated[str, Query()],
    settings: Annotated[Settings, Depends(get_settings)],
) -> FileResponse:
    real = resolve_audio_path(path, settings.audio_dir)
    if not os.path.isfile(real):
        raise HTTPException(status_code=404, detail="Audio file not found")
    media_type = mime_type(real, default="audio/mpeg")
    return FileResponse(real, media_type=media_type)
