"""GET /v1/stats: job counts and queue figures (header auth)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from acestep_api.jobs.queue import JobQueue
from acestep_api.server.auth import require_api_key
from acestep_api.server.dependencies import get_queue
from acestep_api.dialects.official import wrap
from acestep_api.server.openapi.answers import Envelope, Stats
from acestep_api.server.openapi.route_docs import answers, key_required

router = APIRouter(tags=["stats"], dependencies=[Depends(require_api_key)])


@router.get("/v1/stats", response_model=None, summary="Job counts and queue figures",
            responses=answers(Envelope[Stats], 401), openapi_extra=key_required())
async def stats(queue: Annotated[JobQueue, Depends(get_queue)]) -> dict:
    return wrap(queue.stats())
