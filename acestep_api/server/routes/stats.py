"""GET /v1/stats: job counts and queue figures (header auth)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from acestep_api.jobs.queue import JobQueue
from acestep_api.server.auth import require_api_key
from acestep_api.server.dependencies import get_queue
from acestep_api.server.envelope import wrap

router = APIRouter(tags=["stats"], dependencies=[Depends(require_api_key)])


@router.get("/v1/stats")
async def stats(queue: Annotated[JobQueue, Depends(get_queue)]) -> dict:
    return wrap(queue.stats())
