"""Keeping a long-lived worker's disk from filling: audio files older than the retention
period (ACESTEP_RETENTION_DAYS, as the server keeps its jobs) are removed."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from acestep_api.jobs.retention import remove_files

SECONDS_PER_DAY = 86400

log = logging.getLogger(__name__)


def expired_files(folder: Path, max_age_seconds: float, now: float | None = None) -> list[str]:
    """Plain files directly in `folder` last modified more than `max_age_seconds` ago."""
    cutoff = (time.time() if now is None else now) - max_age_seconds
    expired = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    expired.append(entry.path)
    except OSError as error:  # no folder yet, or not one: nothing to prune, the job reports the rest
        log.debug("Not pruning %s: %s", folder, error)
    return expired


def prune_audio(folder: Path, retention_days: float) -> list[str]:
    """Remove expired audio; 0 days keeps everything. Returns what was removed."""
    if retention_days <= 0:
        return []
    expired = expired_files(folder, retention_days * SECONDS_PER_DAY)
    remove_files(expired)
    return expired
