"""GET /v1/audio: download a generated file, only from inside the audio folder."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from acestep_api.audio_formats import mime_type
from acestep_api.admission.audio_paths import OUTSIDE
from acestep_api.server.auth import require_api_key
from acestep_api.server.dependencies import get_outputs, get_settings
from acestep_api.settings import Settings
from acestep_api.storage import OutputStore
from acestep_api.storage.output_store import inside
from acestep_api.server.openapi.route_docs import AUDIO_FILE, answers, key_required

router = APIRouter(tags=["audio"], dependencies=[Depends(require_api_key)])

ACCESS_DENIED = OUTSIDE  # the official message, shared with the audio-input path checks


@router.get("/v1/audio", response_class=FileResponse, summary="Download a generated audio file",
            responses={**answers(None, 401, 403, 404), 200: AUDIO_FILE}, openapi_extra=key_required())
async def get_audio(
    path: Annotated[str, Query()],
    settings: Annotated[Settings, Depends(get_settings)],
    outputs: Annotated[OutputStore, Depends(get_outputs)],
) -> Response:
    """The file from the output store: the audio folder, or the bucket (streamed, or a 307 to a
    presigned URL when ACESTEP_OUTPUT_REDIRECT is set). Only paths inside the audio folder."""
    if inside(path, settings.audio_dir) is None:
        raise HTTPException(status_code=403, detail=ACCESS_DENIED)
    try:
        answer = await run_in_threadpool(outputs.response, path, mime_type(path, default="audio/mpeg"))
    except PermissionError:  # a link in the folder that leads out of it
        raise HTTPException(status_code=403, detail=ACCESS_DENIED) from None
    if answer is None:
        raise HTTPException(status_code=404, detail="Audio file not found")
    return answer
