"""The optional API keys (docs/wire-contract.md#authentication): body `ai_token` or the Authorization header
(`Bearer <key>`, fal's `Key <key>`, or the raw key), checked against ACESTEP_API_KEY and the
keys of ACESTEP_API_KEYS_FILE (key_ring.py).

With neither set there is no auth; an empty ACESTEP_API_KEY is a key like any other. A POST's
Authorization header is checked before its body is read (request_guard.py), and a multipart
body's files wait for a valid ai_token (uploads.py); these dependencies decide the rest. Once
its key is known, a request is held to that key's routes and requests_per_minute (key_limits.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from acestep_api.server.api_key import INVALID_AI_TOKEN, INVALID_API_KEY, header_key, key_ring
from acestep_api.server.bodies import read_request_body
from acestep_api.server.dependencies import get_settings
from acestep_api.server.key_limits import admit
from acestep_api.settings import Settings


def verify_body_token(fields: dict[str, Any], request: Request, settings: Settings) -> None:
    """For routes with a body; call it after the body is parsed, as the official server does."""
    ring = key_ring(request.scope)
    if not ring.enabled:
        return
    token = fields.get("ai_token")
    if token:
        key = ring.identify(token) if isinstance(token, str) else None
        if key is None:
            raise HTTPException(status_code=401, detail=INVALID_AI_TOKEN)
        admit(request.scope, key)
        return
    if request.headers.get("authorization"):
        key = header_key(request.headers, ring)
        if key is None:
            raise HTTPException(status_code=401, detail=INVALID_API_KEY)
        admit(request.scope, key)
        return
    raise HTTPException(status_code=401, detail="Missing ai_token or Authorization header")


def require_api_key(request: Request) -> None:
    """Dependency for routes that only accept the header."""
    ring = key_ring(request.scope)
    if not ring.enabled:
        return
    if not request.headers.get("authorization"):
        raise HTTPException(status_code=401, detail="Missing Authorization header")
    key = header_key(request.headers, ring)
    if key is None:
        raise HTTPException(status_code=401, detail=INVALID_API_KEY)
    admit(request.scope, key)


def require_metrics_key(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> None:
    """GET /metrics: the header key, unless ACESTEP_PROTECT_METRICS is false."""
    if settings.protect_metrics:
        require_api_key(request)


async def authorized_fields(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> dict[str, Any]:
    """Dependency for body routes that keep no uploads: the parsed fields, once the caller is
    authorised (body errors are answered before auth errors, as the official server does)."""
    body = await read_request_body(request, strict=False)
    body.discard_uploads()
    verify_body_token(body.fields, request, settings)
    return body.fields
