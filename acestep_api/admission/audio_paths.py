"""Which server files a request may name as its audio (`src_audio_path`, `reference_audio_path`).

Readable are the folders of ACESTEP_INPUT_DIR (one or several), the system temp folder
(`tempfile.gettempdir()`) unless ACESTEP_ALLOW_TEMP_PATHS is false, as the newer official
`validate_audio_path` allows it, and the upload folder, where a request may read only the files
it uploaded itself (its upload fills the path field): the random name of another client's
pending upload is not a key to it, wherever the upload folder lies. A relative path is looked
up in the ACESTEP_INPUT_DIR folders, in order, never in the working folder (the official server
reads it relative to its working folder, which holds `.env`, the job database and the
checkpoints); an absolute one must already lie in a readable folder. Everything that could
reach elsewhere is refused before the file is touched: `..` segments, a leading `~`, NUL bytes,
the same tricks percent-encoded (`%2e%2e`, `%2F`), and symbolic links whose real target is
outside (the check runs on the fully resolved path); so are the job database's files, should
they lie in a readable folder. The messages follow the official server's (docs/api.md#audio-input),
prefixed with the field.
"""

from __future__ import annotations

import os
import re
import tempfile
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from acestep_api.engine.request import GenerationRequest
from acestep_api.dialects.coercion import InvalidField, show

AUDIO_PATH_FIELDS = ("src_audio_path", "reference_audio_path")
ABSOLUTE = "absolute audio file paths are not allowed"
TRAVERSAL = "path traversal in audio file paths is not allowed"
OUTSIDE = "Access denied: path outside allowed directory"
NOT_OWN_UPLOAD = ("Access denied: a file in the upload folder can only be used by the request that uploaded it; "
                  "send the audio as an upload (src_audio, reference_audio) or name a file in ACESTEP_INPUT_DIR")
_DRIVE = re.compile(r"^[A-Za-z]:")


class AudioPathError(InvalidField):
    """A refused audio path; `status_code` is 400 for a bad path, 403 for one leading out."""

    def __init__(self, field: str, message: str, status_code: int = 400):
        super().__init__(field, f"{field}: {message}")
        self.status_code = status_code


def _spellings(value: str) -> list[str]:
    """The path as given and as percent-decoding would read it (repeatedly, for `%252e`),
    with backslashes as separators, so a trick is caught in whichever form it hides."""
    spellings = [value]
    for _ in range(3):
        decoded = urllib.parse.unquote(spellings[-1])
        if decoded == spellings[-1]:
            break
        spellings.append(decoded)
    return [spelling.replace("\\", "/") for spelling in spellings]


def _check_spelling(field: str, value: str) -> None:
    for spelling in _spellings(value):
        if "\x00" in spelling:
            raise AudioPathError(field, "NUL bytes are not allowed in audio file paths")
        if ".." in spelling.split("/"):
            raise AudioPathError(field, TRAVERSAL)
        if spelling.startswith("~"):
            raise AudioPathError(field, "home folder (~) audio file paths are not allowed")
        if spelling != value.replace("\\", "/") and (spelling.startswith("/") or _DRIVE.match(spelling)):
            raise AudioPathError(field, ABSOLUTE)  # absolute only once decoded: a trick
    if _DRIVE.match(value) or value.startswith("\\"):
        raise AudioPathError(field, ABSOLUTE)


def _inside(path: str, root: str) -> bool:
    return path != root and os.path.commonpath([path, root]) == root


Folders = Path | Sequence[Path] | None


def _folders(input_dir: Folders) -> list[Path]:
    if input_dir is None:
        return []
    if isinstance(input_dir, (str, os.PathLike)):
        return [Path(input_dir)]
    return [Path(folder) for folder in input_dir]


def temp_folder() -> Path:
    """The system temp folder, where the official clients' files lie (TMPDIR, else /tmp)."""
    return Path(tempfile.gettempdir())


def resolve_audio_path(field: str, value: str, upload_dir: Path, input_dir: Folders,
                       own_upload: str | None = None, *, allow_temp: bool = False,
                       private: Iterable[Path] = ()) -> str:
    """The real path (symbolic links resolved) of an existing audio file the request may read.

    `input_dir` is the ACESTEP_INPUT_DIR folder or folders; `allow_temp` adds the system temp
    folder; `private` names files never readable (the job database). `own_upload` is the file
    this request uploaded into `field`, the only one of the upload folder it may read. Raises
    AudioPathError naming `field`. Nothing is opened or stat-ed before the resolved path is
    known to be allowed, so a refusal says nothing about whether a file exists.
    """
    upload_root = os.path.realpath(upload_dir)
    if own_upload is not None and value == own_upload:  # a name the server chose, not the client
        real = os.path.realpath(value)
        if not _inside(real, upload_root) or not os.path.isfile(real):
            raise AudioPathError(field, "the uploaded audio file is gone")
        return real
    _check_spelling(field, value)
    inputs = _folders(input_dir)
    readable = inputs + ([temp_folder()] if allow_temp else [])
    readable_roots = [os.path.realpath(folder) for folder in readable]
    refused = {os.path.realpath(path) for path in private}
    upload_roots = {upload_root, os.path.abspath(upload_dir)}
    if os.path.isabs(value):
        normal = os.path.normpath(value)
        # An absolute path may name a folder as configured or by its real path.
        named = {os.path.realpath(folder) for folder in readable} | {os.path.abspath(folder) for folder in readable}
        if any(_inside(normal, root) for root in upload_roots):
            raise AudioPathError(field, NOT_OWN_UPLOAD, status_code=403)
        if not any(_inside(normal, root) for root in named):
            raise AudioPathError(field, ABSOLUTE)
        candidates = [value]
    elif not inputs:
        raise AudioPathError(
            field, "relative audio file paths are read from ACESTEP_INPUT_DIR, which this server does not set"
        )
    else:
        candidates = [os.path.join(os.path.abspath(folder), value) for folder in inputs]
    for candidate in candidates:
        real = os.path.realpath(candidate)
        # The upload folder wins over a readable folder around it, and a link cannot lead into it.
        if _inside(real, upload_root):
            raise AudioPathError(field, NOT_OWN_UPLOAD, status_code=403)
        if real in refused or not any(_inside(real, root) for root in readable_roots):
            raise AudioPathError(field, OUTSIDE, status_code=403)
        if os.path.isfile(real):
            return real
    raise AudioPathError(field, f"audio file not found (got {show(value)})")


def resolve_request_audio(request: GenerationRequest, upload_dir: Path, input_dir: Folders,
                          uploads: Mapping[str, str] | None = None, *, allow_temp: bool = False,
                          private: Iterable[Path] = ()) -> GenerationRequest:
    """The request with each audio path it names replaced by the checked real path.

    `uploads` maps a path field to the file this request uploaded for it (RequestBody's
    uploads); without it no file of the upload folder can be named. `allow_temp` and
    `private` as for :func:`resolve_audio_path`.
    """
    uploads = uploads or {}
    private = tuple(private)
    updates = {
        name: resolve_audio_path(name, getattr(request, name), upload_dir, input_dir, uploads.get(name),
                                 allow_temp=allow_temp, private=private)
        for name in AUDIO_PATH_FIELDS
        if getattr(request, name)
    }
    return request.model_copy(update=updates) if updates else request
