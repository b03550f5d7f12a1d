"""Removing what jobs leave behind: expired jobs with their audio, uploaded files, and audio
files no job owns (partial writes, outputs of jobs cut short)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable

from acestep_api.atomic_files import is_partial
from acestep_api.jobs.models import Job
from acestep_api.jobs.store import JobStore
from acestep_api.storage.local import remove_local
from acestep_api.storage.output_store import OutputStore

log = logging.getLogger(__name__)


# Deleting files that may already be gone, logging failures (shared with the output stores).
remove_files = remove_local


def remove_uploads(paths: Iterable[str], upload_dir: os.PathLike | str) -> None:
    """Delete uploaded files, but only those lying directly in the upload folder: a path
    recorded with a job is never trusted to name a file elsewhere (a client's own file)."""
    root = os.path.realpath(upload_dir)
    for path in paths:
        if not path:
            continue
        real = os.path.realpath(path)
        if os.path.dirname(real) != root:
            log.warning("Not deleting %s: it is not in the upload folder %s", path, root)
            continue
        remove_files([real])


def remove_orphan_uploads(upload_dir: os.PathLike | str, keep: Iterable[str]) -> list[str]:
    """Delete files in the upload folder that no job owns (a server stopped mid-upload, or
    before it could clean up); returns what was deleted."""
    root = os.path.realpath(upload_dir)
    kept = {os.path.realpath(path) for path in keep}
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    orphans = [entry.path for entry in entries
               if entry.is_file(follow_symlinks=False) and os.path.realpath(entry.path) not in kept]
    remove_files(orphans)
    return orphans


# The extensions the engine writes (engine.audio.FILE_EXTENSIONS): only such files, and partial
# ones, are the sweep's to remove, so a stray file someone put in the folder is left alone.
AUDIO_SUFFIXES = (".mp3", ".wav", ".flac", ".opus", ".aac")


def remove_orphan_audio(audio_dir: os.PathLike | str, keep: Iterable[str]) -> list[str]:
    """Delete partial files (a write cut short) and audio files no job owns (a job that was
    running when the server stopped, or whose row is gone) directly in the audio folder;
    returns what was deleted. Run only while nothing is writing there: at start-up."""
    root = os.path.realpath(audio_dir)
    kept = {os.path.realpath(path) for path in keep if path}
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    orphans = []
    for entry in entries:
        if not entry.is_file(follow_symlinks=False):
            continue
        if is_partial(entry.name) or (
            entry.name.lower().endswith(AUDIO_SUFFIXES) and os.path.realpath(entry.path) not in kept
        ):
            orphans.append(entry.path)
    remove_files(orphans)
    return orphans


def sweep_audio_folder(store: JobStore, audio_dir: os.PathLike | str) -> list[str]:
    """The start-up sweep of the audio folder: what no stored job's result names goes (the
    files of finished jobs stay until retention purges their jobs)."""
    removed = remove_orphan_audio(audio_dir, store.audio_paths())
    if removed:
        log.info("Removed %d partial or orphan audio files from %s", len(removed), audio_dir)
    return removed


def purge_expired(store: JobStore, retention_seconds: float, now: float | None = None,
                  outputs: OutputStore | None = None) -> list[Job]:
    """Delete finished jobs older than the retention period, and their files (in the output
    store's bucket too, when it has one)."""
    cutoff = (time.time() if now is None else now) - retention_seconds
    expired = store.purge_finished_before(cutoff)
    for job in expired:
        audio = job.result.audio_paths if job.result is not None else ()
        (outputs.remove if outputs is not None else remove_files)(audio)
        remove_uploads(job.temp_files, store.upload_dir)
    if expired:
        log.info("Purged %d jobs finished more than %.0f s ago", len(expired), retention_seconds)
    return expired
