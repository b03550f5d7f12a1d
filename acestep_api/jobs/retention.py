"""Removing what jobs leave behind: expired jobs with their audio, and uploaded temp files."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable

from acestep_api.jobs.models import Job
from acestep_api.jobs.store import JobStore

log = logging.getLogger(__name__)


def remove_files(paths: Iterable[str]) -> None:
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


def purge_expired(store: JobStore, retention_seconds: float, now: float | None = None) -> list[Job]:
    """Delete finished jobs older than the retention period, and their files."""
    cutoff = (time.time() if now is None else now) - retention_seconds
    expired = store.purge_finished_before(cutoff)
    for job in expired:
        remove_files(job.result.audio_paths if job.result is not None else ())
        remove_files(job.temp_files)
    if expired:
        log.info("Purged %d jobs finished more than %.0f s ago", len(expired), retention_seconds)
    return expired
