"""GET /v1/stats: job counts and queue figures (header auth); with keys, each key's jobs."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from acestep_api.jobs.backend import JobBackend
from acestep_api.jobs.store import KeyCounts
from acestep_api.server.auth import require_api_key
from acestep_api.server.dependencies import get_queue
from acestep_api.server.key_file import SINGLE_KEY_NAME
from acestep_api.server.key_limits import caller
from acestep_api.server.services.key_quotas import day_start
from acestep_api.dialects.official import wrap
from acestep_api.server.openapi.answers import Envelope, Stats
from acestep_api.server.openapi.route_docs import answers, key_required

router = APIRouter(tags=["stats"], dependencies=[Depends(require_api_key)])


def key_stats(queue: JobBackend, shown_to: str) -> dict:
    """Per key name: its jobs by status, and its jobs and audio seconds today (UTC). The
    single ACESTEP_API_KEY sees every key; a key of the keys file sees its own only."""
    counts = queue.store.key_counts(day_start(time.time()))
    counts.setdefault(shown_to, KeyCounts.empty())  # the caller's own, even before its first job
    return {name: {"jobs": entry.jobs, "jobs_today": entry.jobs_since,
                   "audio_seconds_today": round(entry.audio_seconds_since, 3)}
            for name, entry in sorted(counts.items()) if shown_to in (SINGLE_KEY_NAME, name)}


@router.get("/v1/stats", response_model=None, summary="Job counts and queue figures",
            responses=answers(Envelope[Stats], 401), openapi_extra=key_required())
async def stats(request: Request, queue: Annotated[JobBackend, Depends(get_queue)]) -> dict:
    figures = queue.stats()
    key = caller(request.scope)
    if key is not None:
        figures["keys"] = key_stats(queue, key.name)
    return wrap(figures)
