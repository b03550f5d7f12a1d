"""The optional API key (docs/wire-contract.md#authentication): body `ai_token` or the Authorization header
(`Bearer <key>`, fal's `Key <key>`, or the raw key).

`settings.api_key` None means no auth; an empty string is a key like any other. A POST's
Authorization header is checked before its body is read (request_guard.py), and a multipart
body's files wait for a valid ai_token (uploads.py); these dependencies decide the rest.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from acestep_api.server.api_key import INVALID_AI_TOKEN, INVALID_API_KEY, header_token, matches
from acestep_api.server.bodies import read_request_body
from acestep_api.server.dependencies import get_settings
from acestep_api.settings import Settings


def verify_body_token(fields: dict[str, Any], request: Request, settings: Settings) -> None:
    """For routes with a body; call it after the body is parsed, as the official server does."""
    key = settings.api_key
    if key is None:
        return
    token = fields.get("ai_token")
    if token:
        if not isinstance(token, str) or not matches(token, key):
            raise HTTPException(status_code=401, detail=INVALID_AI_TOKEN)
        return
    if request.headers.get("authorization"):
        if not matches(header_token(request.headers), key):
            raise HTTPException(status_code=401, detail=INVALID_API_KEY)
        return
    raise HTTPException(status_code=401, detail="Missing ai_token or Authorization header")


def require_api_key(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> None:
    """Dependency for routes that only accept the header."""
    key = settings.api_key
    if key is None:
        return
    if not request.headers.get("authorization"):
        raise HTTPException(status_code=401, detail="Missing Authorization header")
    if not matches(header_token(request.headers), key):
        raise HTTPException(status_code=401, detail=INVALID_API_KEY)


def require_metrics_key(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> None:
    """GET /metrics: the header key, unless ACESTEP_PROTECT_METRICS is false."""
    if settings.protect_metrics:
        require_api_key(request, settings)


async def authorized_fields(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> dict[str, Any]:
    """Dependency for body routes that keep no uploads: the parsed fields, once the caller is
    authorised (body errors are answered before auth errors, as the official server does)."""
    body = await read_request_body(request, strict=False)
    body.discard_uploads()
    verify_body_token(body.fields, request, settings)
    return body.fields
