"""Writing a file that clients read so that it appears whole or not at all.

The bytes go to a hidden temporary name in the same folder (``.<name>.<token>.partial``) and
are flushed to disk; only then does ``os.replace`` give them the final name. A rename within
one folder is atomic, so a process killed while encoding leaves at most a partial file, never
a truncated one under a name a job records; the server's start-up sweep removes partial files
(acestep_api.jobs.retention.sweep_audio_folder).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

PARTIAL_SUFFIX = ".partial"


def partial_path(path: os.PathLike | str) -> Path:
    """A fresh temporary name next to `path`; the token keeps two writers of one name apart."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")


def is_partial(name: str) -> bool:
    """Whether a file name is one `partial_path` makes."""
    return name.startswith(".") and name.endswith(PARTIAL_SUFFIX)


@contextlib.contextmanager
def atomic_path(path: os.PathLike | str) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes `path`, on any error it is removed.

    The writer must name the file format itself (the temporary name has no audio extension).
    """
    final = Path(path)
    temp = partial_path(final)
    try:
        yield temp
        _flush_to_disk(temp)
        os.replace(temp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise


def _flush_to_disk(path: Path) -> None:
    # After a power cut the job row (synchronous SQLite) must not name a file whose data never
    # reached the disk; the cost is small next to generating the audio.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
