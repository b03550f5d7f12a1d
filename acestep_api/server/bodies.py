"""Reading a request body whatever its encoding (docs/wire-contract.md#request-bodies).

JSON (`application/json` or any `+json` type), multipart and urlencoded forms are read as
declared; anything else is sniffed, because `curl -d` and hand-written clients often send
the wrong type. Malformed input is a 400 with a message, never a server error. Multipart
bodies are streamed, their audio uploads written to the upload folder (see uploads.py).
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request

from acestep_api.jobs.retention import remove_files
from acestep_api.server.api_key import header_key, key_ring
from acestep_api.server.key_limits import admit
from acestep_api.server.uploads import SavedUpload, read_multipart
from acestep_api.settings import Settings

MALFORMED_JSON = "Malformed JSON payload"
NOT_AN_OBJECT = "JSON payload must be an object"
SNIFFED_JSON_INVALID = "Invalid JSON body (hint: set 'Content-Type: application/json')"
UNSUPPORTED_TYPE = (
    "Unsupported Content-Type: {}; use application/json, application/x-www-form-urlencoded, "
    "or multipart/form-data"
)


@dataclass
class RequestBody:
    fields: dict[str, Any]
    # Audio files saved from this request; whoever ends up owning them deletes them.
    uploads: list[SavedUpload] = field(default_factory=list)

    @property
    def temp_files(self) -> list[str]:
        return [upload.path for upload in self.uploads]

    def discard_uploads(self) -> None:
        remove_files(self.temp_files)
        self.uploads = []


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _json_object(raw: bytes, malformed_message: str) -> dict:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        raise HTTPException(status_code=400, detail=malformed_message) from None
    if not isinstance(value, dict):
        raise HTTPException(status_code=400, detail=NOT_AN_OBJECT)
    return value


def _query_string(raw: bytes, *, collapse_repeats: bool = False) -> dict:
    """Fields of an urlencoded body: the first value per key, or with `collapse_repeats`
    (a declared form) repeated keys as a list, e.g. several track_classes."""
    pairs = urllib.parse.parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
    if collapse_repeats:
        return {key: values[0] if len(values) == 1 else values for key, values in pairs.items()}
    return {key: values[0] for key, values in pairs.items()}


async def _read_multipart(request: Request, body: RequestBody) -> None:
    settings: Settings = request.app.state.settings
    ring = key_ring(request.scope)

    def token_is_a_key(token: str) -> bool:
        key = ring.identify(token)
        if key is not None:
            admit(request.scope, key)  # its routes and rate, before any file is written
        return key is not None

    # Without the right header, files wait for the body's own ai_token (uploads.py).
    needs_token = ring.enabled and header_key(request.headers, ring) is None
    body.fields, body.uploads = await read_multipart(
        request, settings.upload_dir, settings.max_upload_mb, token_check=token_is_a_key if needs_token else None,
        max_text_kb=settings.max_body_kb,
    )
    for upload in body.uploads:
        body.fields[upload.path_field] = upload.path  # an upload overrides the path field


async def read_request_body(request: Request, *, strict: bool = True) -> RequestBody:
    """The body's fields as a dict, with audio uploads saved in the upload folder.

    `strict` (POST /release_task) answers 415 for an unrecognised body; the other routes
    read such a body as empty, like the official server's form fallback.
    """
    content_type = request.headers.get("content-type", "")
    media_type = _media_type(content_type)
    body = RequestBody(fields={})
    if media_type.startswith("application/json") or media_type.endswith("+json"):
        body.fields = _json_object(await request.body(), MALFORMED_JSON)
        return body
    if media_type == "application/x-www-form-urlencoded":
        raw = await request.body()
        if raw.lstrip()[:1] == b"{":
            # `curl -d '{...}'` labels JSON as a form; read as a form it would silently lose
            # every field, so it is read as the JSON it is.
            body.fields = _json_object(raw, SNIFFED_JSON_INVALID)
        else:
            body.fields = _query_string(raw, collapse_repeats=True)
        return body
    if media_type == "multipart/form-data":
        await _read_multipart(request, body)
        return body
    raw = await request.body()
    stripped = raw.lstrip()
    if stripped[:1] in (b"{", b"["):
        body.fields = _json_object(raw, SNIFFED_JSON_INVALID)
    elif stripped and b"=" in raw:
        body.fields = _query_string(raw)
    elif strict:
        raise HTTPException(status_code=415, detail=UNSUPPORTED_TYPE.format(content_type.lower() or "(missing)"))
    return body
