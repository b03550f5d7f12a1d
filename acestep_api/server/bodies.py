"""Reading a request body whatever its encoding (api-contract 3.2.1).

JSON (`application/json` or any `+json` type), multipart and urlencoded forms are read as
declared; anything else is sniffed, because `curl -d` and hand-written clients often send
the wrong type. Malformed input is a 400 with a message, never a server error.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

from acestep_api.jobs.retention import remove_files

MALFORMED_JSON = "Malformed JSON payload"
NOT_AN_OBJECT = "JSON payload must be an object"
SNIFFED_JSON_INVALID = "Invalid JSON body (hint: set 'Content-Type: application/json')"
UNSUPPORTED_TYPE = (
    "Unsupported Content-Type: {}; use application/json, application/x-www-form-urlencoded, "
    "or multipart/form-data"
)

# Upload field -> (path field it overrides, temp file prefix).
UPLOAD_FIELDS = {
    "ref_audio": ("reference_audio_path", "ref_audio_"),
    "reference_audio": ("reference_audio_path", "ref_audio_"),
    "ctx_audio": ("src_audio_path", "ctx_audio_"),
    "src_audio": ("src_audio_path", "ctx_audio_"),
}
CHUNK_BYTES = 1 << 20


@dataclass
class RequestBody:
    fields: dict[str, Any]
    # Paths of uploaded files saved for this request; whoever ends up owning them deletes them.
    temp_files: list[str] = field(default_factory=list)

    def discard_uploads(self) -> None:
        remove_files(self.temp_files)
        self.temp_files = []


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


def _query_string(raw: bytes) -> dict:
    pairs = urllib.parse.parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in pairs.items()}


async def _save_upload(upload: UploadFile, prefix: str) -> str:
    suffix = os.path.splitext(upload.filename or "")[1][:16]
    handle, path = tempfile.mkstemp(prefix=prefix, suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as out:
            while chunk := await upload.read(CHUNK_BYTES):
                out.write(chunk)
    except BaseException:
        remove_files([path])
        raise
    return path


async def _read_form(request: Request, body: RequestBody) -> None:
    try:
        form = await request.form()
    except HTTPException:
        raise
    except Exception:  # a broken multipart stream or a missing boundary
        raise HTTPException(status_code=400, detail="Malformed form payload") from None
    try:
        for key in form.keys():
            values = form.getlist(key)
            uploads = [value for value in values if isinstance(value, UploadFile)]
            texts = [value for value in values if not isinstance(value, UploadFile)]
            if key in UPLOAD_FIELDS:
                path_field, prefix = UPLOAD_FIELDS[key]
                upload = next((u for u in uploads if u.filename), None)
                if upload is not None:
                    path = await _save_upload(upload, prefix)
                    body.temp_files.append(path)
                    body.fields[path_field] = path  # an upload overrides the path field
                    continue
            if texts:
                # Repeated keys collapse to a list (e.g. several track_classes).
                body.fields.setdefault(key, texts[0] if len(texts) == 1 else texts)
    except BaseException:
        body.discard_uploads()
        raise
    finally:
        await form.close()


async def read_request_body(request: Request, *, strict: bool = True) -> RequestBody:
    """The body's fields as a dict, with uploads saved to temp files.

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
            return body
    if media_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        await _read_form(request, body)
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
