"""Audio files on this machine's disk (or a folder every machine mounts at the same path)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from starlette.responses import FileResponse, Response

log = logging.getLogger(__name__)


def remove_local(paths: Iterable[str]) -> None:
    """Delete files that may already be gone; a failure is logged, never raised."""
    for path in paths:
        if not path or path.startswith(("http://", "https://")):
            continue
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("Could not delete %s: %s", path, error)


def real_path_inside(path: str, folder: str) -> str:
    """The real path of `path` (links resolved) if it lies in `folder`; PermissionError if it
    does not, so a link placed in the folder never serves a file from elsewhere."""
    try:
        base = os.path.realpath(folder)
        real = os.path.realpath(path)
    except (ValueError, OSError):  # e.g. an embedded NUL byte
        raise PermissionError(path) from None
    if real != base and not real.startswith(base + os.sep):
        raise PermissionError(path)
    return real


class LocalOutputs:
    """Files stay where the encoder wrote them; nothing to publish."""

    def __init__(self, audio_dir: os.PathLike | str, upload_dir: os.PathLike | str):
        self.audio_dir = str(audio_dir)
        self.upload_dir = str(upload_dir)

    def publish(self, paths: Iterable[str]) -> None:
        pass

    def publish_upload(self, path: str) -> None:
        pass

    def fetch(self, path: str) -> str | None:
        real = real_path_inside(path, self.audio_dir)
        return real if os.path.isfile(real) else None

    def size(self, path: str) -> int | None:
        real = self.fetch(path)
        return os.path.getsize(real) if real is not None else None

    def response(self, path: str, media_type: str) -> Response | None:
        real = self.fetch(path)
        return FileResponse(real, media_type=media_type) if real is not None else None

    def fetch_upload(self, path: str) -> None:
        pass

    def remove(self, paths: Iterable[str]) -> None:
        remove_local(paths)

    def remove_uploads(self, paths: Iterable[str]) -> None:
        pass
