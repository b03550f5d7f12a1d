"""The checks every request body passes before a route sees it (docs/security.md, "Request
bodies and the API key"):

- With a key set, a POST/PUT/PATCH whose Authorization header is wrong is a 401 at once,
  before a byte of its body is read; a right one is held to its key's routes (403) and
  requests_per_minute (429) just as early (key_limits.py).
- A body has a size limit by kind: JSON, form and other bodies ACESTEP_MAX_BODY_KB; chat
  completions, whose JSON carries base64 audio, that plus two parts at ACESTEP_MAX_UPLOAD_MB;
  multipart ACESTEP_MAX_REQUEST_MB in all. A Content-Length past it is a 413 without reading;
  a body that grows past it while arriving stops there with a 413.
- A small body holding a lone surrogate ("\\ud800" in JSON) is a 400 naming the field.

Starlette's own RequestBodyLimitMiddleware has one limit per app or route and answers a bare
"Content Too Large"; here the limit follows the body's kind and the answer names the setting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from acestep_api.server.answer_started import WatchedSend
from acestep_api.server.api_key import INVALID_API_KEY, header_key, key_ring
from acestep_api.dialects.chat import max_body_bytes as chat_max_body_bytes
from acestep_api.server.key_limits import admit
from acestep_api.server.text_validity import invalid_unicode, may_hold_surrogates
from acestep_api.settings import Settings

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Routes whose JSON legitimately carries base64 audio.
AUDIO_JSON_PATHS = frozenset({"/v1/chat/completions"})
MIB = 1 << 20


@dataclass(frozen=True)
class BodyLimit:
    max_bytes: int
    message: str  # the 413's detail


def _media_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _rounded_size(byte_count: int) -> str:
    return f"{byte_count / MIB:.0f} MB" if byte_count >= MIB else f"{byte_count / 1024:.0f} KB"


def chat_body_limit(settings: Settings) -> BodyLimit:
    limit = chat_max_body_bytes(settings, settings.max_body_bytes)
    return BodyLimit(limit, f"request body is larger than {_rounded_size(limit)}; input audio is limited to "
                            f"{settings.max_upload_mb:g} MB per part (ACESTEP_MAX_UPLOAD_MB) and the rest "
                            f"of the body to {settings.max_body_kb} KB (ACESTEP_MAX_BODY_KB)")


def body_limit(settings: Settings, path: str, media_type: str) -> BodyLimit:
    if path in AUDIO_JSON_PATHS:
        return chat_body_limit(settings)
    if media_type == "multipart/form-data":
        limit = settings.max_request_bytes
        return BodyLimit(limit, f"request body is larger than the {limit / MIB:.4g} MB limit of a multipart "
                                f"request (ACESTEP_MAX_REQUEST_MB; each file at most {settings.max_upload_mb:g} MB, "
                                "ACESTEP_MAX_UPLOAD_MB)")
    return BodyLimit(settings.max_body_bytes, f"request body is larger than the {settings.max_body_kb} KB limit "
                                              "(ACESTEP_MAX_BODY_KB)")


class BodyRefused(HTTPException):
    """Raised from `receive` inside a route: FastAPI's exception handling answers it, and the
    guard does if anything swallowed it."""


def _content_length(headers: Headers) -> int | None:
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None


async def _answer(scope: Scope, receive: Receive, send: Send, status_code: int, detail: str,
                  headers: dict[str, str] | None = None) -> None:
    await JSONResponse({"detail": detail}, status_code=status_code, headers=headers)(scope, receive, send)


class _GuardedReceive:
    """Counts the body as it arrives; keeps a copy of a small non-multipart body so its text
    can be checked once it is whole, before the route gets its last chunk."""

    def __init__(self, receive: Receive, limit: BodyLimit, keep_bytes: int):
        self.receive = receive
        self.limit = limit
        self.keep_bytes = keep_bytes
        self.size = 0
        self.copy: bytearray | None = bytearray() if keep_bytes > 0 else None

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] != "http.request":
            return message
        chunk = message.get("body", b"")
        self.size += len(chunk)
        if self.size > self.limit.max_bytes:
            raise BodyRefused(status_code=413, detail=self.limit.message)
        if self.copy is not None:
            if self.size > self.keep_bytes:
                self.copy = None  # a large chat body: the route checks its text itself
            else:
                self.copy += chunk
        if not message.get("more_body", False) and self.copy:
            self._check_text(bytes(self.copy))
        return message

    @staticmethod
    def _check_text(raw: bytes) -> None:
        if not may_hold_surrogates(raw):
            return
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            return  # not JSON: the route answers for it
        problem = invalid_unicode(value)
        if problem:
            raise BodyRefused(status_code=400, detail=problem)


class RequestGuard:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Read per request: the app's settings, as the routes see them.
        settings: Settings = scope["app"].state.settings
        headers = Headers(scope=scope)
        ring = key_ring(scope)
        if ring.enabled and scope["method"] in BODY_METHODS and headers.get("authorization"):
            key = header_key(headers, ring)
            if key is None:
                await _answer(scope, receive, send, 401, INVALID_API_KEY)
                return
            try:
                admit(scope, key)  # its routes and requests_per_minute, before the body is read
            except HTTPException as refusal:
                await _answer(scope, receive, send, refusal.status_code, refusal.detail, refusal.headers)
                return
        media_type = _media_type(headers)
        limit = body_limit(settings, scope["path"], media_type)
        length = _content_length(headers)
        if length is not None and length > limit.max_bytes:
            await _answer(scope, receive, send, 413, limit.message)
            return
        # Multipart text is decoded with replacement characters: it cannot hold a surrogate.
        keep = 0 if media_type == "multipart/form-data" else settings.max_body_bytes
        guarded = _GuardedReceive(receive, limit, keep)
        watched_send = WatchedSend(send)
        try:
            await self.app(scope, guarded, watched_send)
        except BodyRefused as refusal:
            if watched_send.started:
                raise
            await _answer(scope, receive, send, refusal.status_code, refusal.detail)
