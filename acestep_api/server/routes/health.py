"""GET /health: never authenticated; clients treat the server as up iff data.status == "ok".
In the distributed mode it also says how many GPU workers are alive, and answers 503 while
the job database cannot be reached (a replica's readiness)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from acestep_api.engine.served import ServedModels
from acestep_api.jobs.backend import JobBackend
from acestep_api.server.dependencies import get_queue, get_served
from acestep_api.dialects.official import wrap
from acestep_api.server.services.inventory import lm_model_name
from acestep_api.server.openapi.answers import Envelope, Health
from acestep_api.server.openapi.route_docs import answers

router = APIRouter(tags=["health"])

DEMO_NOTE = (
    "Demo mode: the model weights are random, so the generated audio is noise. "
    "It shows that the server works end to end, not what the music sounds like."
)


@router.get("/health", response_model=None, summary="Whether the server is up (never needs the key)",
            responses=answers(Envelope[Health]))
async def health(served: Annotated[ServedModels, Depends(get_served)],
                 queue: Annotated[JobBackend, Depends(get_queue)]) -> dict:
    # Distributed mode: a database out of reach makes this a 503 (a replica is not ready).
    workers = queue.workers()
    data = {
        "status": "ok",
        "service": "ACE-Step API",
        "version": "1.0",
        "models_initialized": served.initialized,
        "llm_initialized": lm_model_name(served) is not None,
        "loaded_model": served.default_model,
        "loaded_lm_model": lm_model_name(served),
        "demo": served.is_demo,
        "mode": queue.mode,  # "embedded" (one process) or "distributed" (PostgreSQL)
        "workers_alive": workers["alive"],
    }
    if data["demo"]:
        data["note"] = DEMO_NOTE
    return wrap(data)
