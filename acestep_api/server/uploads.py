"""Reading a multipart body as it arrives: audio uploads go straight to the upload folder.

Starlette's `request.form()` would spool every file part to the system temp folder first and
has no size limit per file, so a multipart body is parsed here with python-multipart's
streaming parser instead. Each chunk of a file part is written to its upload file as it
comes; a file that grows past the limit stops the reading at once (413) and is deleted, and
so is every other file of the request when anything goes wrong.

With a key set and no valid Authorization header, the body's `ai_token` field is the only
credential: a file part that comes before a valid one is a 401, so nothing an unauthorised
client sends is written to disk, and a wrong ai_token is a 401 as soon as it has arrived.
"""

from __future__ import annotations

import codecs
import os
import re
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import BinaryIO

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from acestep_api.jobs.retention import remove_files
from acestep_api.server.api_key import INVALID_AI_TOKEN

# Upload field -> (the request field it fills, file name prefix). Both official spellings.
UPLOAD_FIELDS = {
    "ref_audio": ("reference_audio_path", "ref_audio_"),
    "reference_audio": ("reference_audio_path", "ref_audio_"),
    "ctx_audio": ("src_audio_path", "ctx_audio_"),
    "src_audio": ("src_audio_path", "ctx_audio_"),
}
MAX_TEXT_FIELD_BYTES = 1 << 20  # lyrics and captions are far smaller
MAX_PARTS = 256
MALFORMED_FORM = "Malformed form payload"
TOKEN_FIELD = "ai_token"
FILE_BEFORE_TOKEN = (
    "Missing ai_token or Authorization header: a file part came before a valid ai_token field; "
    "send the Authorization header, or put the ai_token field before the files"
)
# Kept from the client's file name so the decoder can tell the format: ".wav", ".flac", ".mp3".
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")
_EXTENDED_FILENAME = re.compile(rb";\s*filename\*\s*=\s*([^;]+)", re.IGNORECASE)


@dataclass
class SavedUpload:
    field: str  # the form field it came in, e.g. "ctx_audio"
    path_field: str  # the request field it fills, e.g. "src_audio_path"
    path: str


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None  # None: a text field
    text: bytearray = field(default_factory=bytearray)
    size: int = 0
    handle: BinaryIO | None = None  # the open upload file, for saved file parts
    upload: SavedUpload | None = None


def too_large(field_name: str, max_upload_mb: float) -> HTTPException:
    return HTTPException(
        status_code=413,
        detail=f"{field_name}: the uploaded file is larger than the {max_upload_mb:g} MB limit "
               "(ACESTEP_MAX_UPLOAD_MB)",
    )


def _suffix(filename: str) -> str:
    suffix = os.path.splitext(os.path.basename(filename.replace("\\", "/")))[1]
    return suffix if _SAFE_SUFFIX.match(suffix) else ""


def _filename(disposition: bytes, options: dict[bytes, bytes], charset: str) -> str | None:
    """The part's file name, None for a text field. RFC 5987 `filename*=UTF-8''name` counts
    too (the options parser skips it): a file sent that way is still a file."""
    if b"filename" in options:
        return options[b"filename"].decode(charset, errors="replace")
    extended = _EXTENDED_FILENAME.search(disposition)
    if extended is None:
        return None
    return urllib.parse.unquote(extended.group(1).decode("latin-1").split("'", 2)[-1].strip('"'))


class MultipartReader:
    """Callbacks for python-multipart. The parser calls them synchronously, on the event
    loop; they only queue the file writes, which `read_multipart` runs in a worker thread."""

    def __init__(self, upload_dir: Path, max_upload_mb: float, charset: str, *,
                 token_check: Callable[[str], bool] | None = None, max_text_kb: int = MAX_TEXT_FIELD_BYTES // 1024):
        """`token_check`: whether an `ai_token` field holds a key, which it must before a file
        part may come (None: the caller is authorised already, or no key is set). `max_text_kb`:
        all text fields together (ACESTEP_MAX_BODY_KB)."""
        self.upload_dir = Path(upload_dir).absolute()  # jobs record absolute paths
        self.max_upload_mb = max_upload_mb
        self.max_bytes = int(max_upload_mb * 1024 * 1024)
        self.charset = charset
        self.token_check = token_check
        self.max_text_kb = max_text_kb
        self._text_bytes = 0
        self._token_seen = False
        self.fields: dict[str, list[str]] = {}
        self.uploads: list[SavedUpload] = []
        self.finished = False
        self._parts = 0
        self._part = _Part()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._pending: list[tuple[_Part, bytes | None]] = []  # (part, data); None data = close it
        self._saved_parts: list[_Part] = []

    # --- parser callbacks ----------------------------------------------------------

    def on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise HTTPException(status_code=400, detail=f"multipart body has more than {MAX_PARTS} parts")
        self._part = _Part()
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._header_name).strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise HTTPException(status_code=400, detail=f"{MALFORMED_FORM}: a part has no field name")
        part = self._part
        part.name = options[b"name"].decode(self.charset, errors="replace")
        part.filename = _filename(self._disposition, options, self.charset)
        if part.filename is not None and self.token_check is not None:
            raise HTTPException(status_code=401, detail=FILE_BEFORE_TOKEN)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        part.size += end - start
        if part.filename is None:
            if part.size > MAX_TEXT_FIELD_BYTES:
                raise HTTPException(status_code=413, detail=f"form field {part.name!r} is larger than 1 MB")
            self._text_bytes += end - start
            if self._text_bytes > self.max_text_kb * 1024:
                raise HTTPException(status_code=413, detail=f"the form's text fields are larger than "
                                                            f"{self.max_text_kb} KB together (ACESTEP_MAX_BODY_KB)")
            part.text += data[start:end]
            return
        # Every file part counts, saved or not, so no part can make the server read forever.
        if part.size > self.max_bytes:
            raise too_large(part.name, self.max_upload_mb)
        if self._saving(part):
            self._pending.append((part, data[start:end]))

    def on_part_end(self) -> None:
        part = self._part
        if part.filename is None:
            text = part.text.decode(self.charset, errors="replace")
            self.fields.setdefault(part.name, []).append(text)
            if part.name == TOKEN_FIELD:
                self._check_token(text)
        elif self._saving(part):
            self._pending.append((part, None))

    def on_end(self) -> None:
        self.finished = True

    def _check_token(self, token: str) -> None:
        """The first non-empty ai_token decides, as verify_body_token reads the fields."""
        if self._token_seen or not token:
            return
        self._token_seen = True
        if self.token_check is not None:
            if not self.token_check(token):
                raise HTTPException(status_code=401, detail=INVALID_AI_TOKEN)
            self.token_check = None  # authorised: files may come now

    def _saving(self, part: _Part) -> bool:
        """Whether this file part is saved, opening its upload file the first time it is.

        It is when it is an audio field, has a file name (browsers send an empty one for an
        empty file input) and its request field is not filled yet: the first of `src_audio` /
        `ctx_audio` in the body wins, and likewise for the reference."""
        if part.upload is not None:
            return True
        if part.name not in UPLOAD_FIELDS or not part.filename:
            return False
        path_field, prefix = UPLOAD_FIELDS[part.name]
        if any(upload.path_field == path_field for upload in self.uploads):
            return False
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        handle, path = tempfile.mkstemp(prefix=prefix, suffix=_suffix(part.filename), dir=self.upload_dir)
        part.handle = os.fdopen(handle, "wb")
        part.upload = SavedUpload(field=part.name, path_field=path_field, path=path)
        self.uploads.append(part.upload)
        self._saved_parts.append(part)
        return True

    # --- writing -------------------------------------------------------------------

    def take_pending(self) -> list[tuple[_Part, bytes | None]]:
        pending, self._pending = self._pending, []
        return pending

    @staticmethod
    def write_pending(pending: list[tuple[_Part, bytes | None]]) -> None:
        for part, data in pending:
            if data is None:
                part.handle.close()
            else:
                part.handle.write(data)

    def discard(self) -> None:
        """Close and delete everything saved so far (a refused or broken request)."""
        for part in self._saved_parts:
            if not part.handle.closed:
                part.handle.close()
        remove_files(upload.path for upload in self.uploads)
        self.uploads = []


def _boundary_and_charset(content_type: str) -> tuple[bytes, str]:
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(status_code=400, detail=f"{MALFORMED_FORM}: multipart boundary missing")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "latin-1"
    return boundary, charset


async def read_multipart(
    request: Request, upload_dir: Path, max_upload_mb: float, *,
    token_check: Callable[[str], bool] | None = None, max_text_kb: int = MAX_TEXT_FIELD_BYTES // 1024,
) -> tuple[dict, list[SavedUpload]]:
    """The text fields (repeated keys as lists) and the saved audio uploads of a multipart
    body (`token_check` and `max_text_kb` as MultipartReader takes them). On any error nothing
    is left in the upload folder."""
    boundary, charset = _boundary_and_charset(request.headers.get("content-type", ""))
    reader = MultipartReader(upload_dir, max_upload_mb, charset, token_check=token_check, max_text_kb=max_text_kb)
    callbacks = {name: getattr(reader, name) for name in (
        "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
        "on_part_data", "on_part_end", "on_end",
    )}
    try:
        parser = MultipartParser(boundary, callbacks)
        async for chunk in request.stream():
            if not chunk:
                continue
            try:
                parser.write(chunk)
            except MultipartParseError:
                raise HTTPException(status_code=400, detail=MALFORMED_FORM) from None
            pending = reader.take_pending()
            if pending:
                await run_in_threadpool(reader.write_pending, pending)
            if reader.finished:
                break
        parser.finalize()
        if not reader.finished:
            # A body cut short (a client that went away) must not become a job with half a file.
            raise HTTPException(status_code=400, detail=f"{MALFORMED_FORM}: the body ended before its last boundary")
    except BaseException:
        reader.discard()
        raise
    fields = {key: values[0] if len(values) == 1 else values for key, values in reader.fields.items()}
    return fields, reader.uploads
