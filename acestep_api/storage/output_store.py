"""The interface every output store keeps (see acestep_api/storage/__init__.py)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Protocol

from starlette.responses import Response

from acestep_api.engine.request import GenerationError


class OutputStoreError(GenerationError):
    """The store could not be reached or refused an operation; the message is a sentence
    that names no credentials. A job that meets it fails with that sentence."""


class OutputStore(Protocol):
    audio_dir: str
    upload_dir: str

    def publish(self, paths: Iterable[str]) -> None:
        """Make files just written in the audio folder readable by every process (a worker calls
        it before the job succeeds). Blocking; raises OutputStoreError."""

    def publish_upload(self, path: str) -> None:
        """Make an uploaded file in the upload folder readable by the worker that runs its job."""

    def fetch(self, path: str) -> str | None:
        """A local path holding the file's bytes (downloaded when only the bucket has them),
        or None when the file does not exist. Blocking."""

    def size(self, path: str) -> int | None:
        """The file's size in bytes, None when it does not exist."""

    def response(self, path: str, media_type: str) -> Response | None:
        """The answer of GET /v1/audio for the file (its bytes, or a redirect), None when it
        does not exist."""

    def fetch_upload(self, path: str) -> None:
        """Bring an upload its job needs onto this machine when another machine received it."""

    def remove(self, paths: Iterable[str]) -> None:
        """Delete audio files wherever the store keeps them; missing ones are ignored, failures
        logged."""

    def remove_uploads(self, paths: Iterable[str]) -> None:
        """Delete the copies of uploads kept beside this machine's upload folder (the folder
        itself is emptied by the queue)."""


def inside(path: str, folder: str) -> str | None:
    """`path` relative to `folder` (both made absolute and normalised, without touching the
    disk: in a bucket the file need not exist here), or None when it lies outside."""
    try:
        base = os.path.normpath(os.path.abspath(folder))
        full = os.path.normpath(os.path.abspath(path))
    except (ValueError, OSError):  # e.g. an embedded NUL byte
        return None
    if not full.startswith(base + os.sep):
        return None
    return os.path.relpath(full, base)
