"""GET /v1/models (OpenRouter list, open), GET /v1/model_inventory (wrapped, header auth), and
the routes that load models: POST /v1/init and POST /v1/reinitialize (model jobs on the queue).

The official server answers /v1/models with the OpenRouter list because that router shadows
its documented wrapped route; clients rely on the actual behaviour, so we keep it and serve
the documented inventory under its newer name.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from acestep_api.dialects.official_models import INIT_FAILED, init_answer, parse_init, reinitialize_answer
from acestep_api.engine.disk_models import rescanned
from acestep_api.engine.model_requests import ModelRequest
from acestep_api.server.auth import authorized_fields, require_api_key
from acestep_api.engine.served import ServedModels
from acestep_api.jobs.backend import JobBackend
from acestep_api.server.dependencies import get_queue, get_served, get_settings
from acestep_api.dialects.official import wrap
from acestep_api.server.services.inventory import inventory
from acestep_api.server.services.models import run_model_job
from acestep_api.settings import Settings
from acestep_api.server.openapi.answers import (
    Envelope,
    ModelInventory,
    ModelsInitialized,
    OpenRouterModels,
    Reinitialized,
)
from acestep_api.server.openapi.request_bodies import AuthOnlyBody, InitBody
from acestep_api.server.openapi.route_docs import answers, body, key_required, merged

router = APIRouter(tags=["models"])

MODEL_ID_PREFIX = "acestep/"
THIRTY_DAYS = 30 * 86400


def openrouter_model(name: str, created: int) -> dict:
    return {
        "id": MODEL_ID_PREFIX + name,
        "name": f"ACE-Step {name}",
        "created": created,
        "input_modalities": ["text", "audio"],
        "output_modalities": ["audio", "text"],
        "context_length": 4096,
        "max_output_length": 300,
        "pricing": {"prompt": "0", "completion": "0", "request": "0", "image": "0"},
        "description": "AI music generation model",
        "architecture": None,
    }


@router.get("/v1/models", response_model=None, summary="The DiT models, as an OpenRouter model list (open)",
            responses=answers(OpenRouterModels))
async def list_models(served: Annotated[ServedModels, Depends(get_served)]) -> dict:
    created = int(time.time()) - THIRTY_DAYS
    return {"object": "list", "data": [openrouter_model(name, created) for name in served.model_names]}


@router.get("/v1/model_inventory", dependencies=[Depends(require_api_key)], response_model=None,
            summary="Every DiT and LM on disk, and which are loaded",
            responses=answers(Envelope[ModelInventory], 401), openapi_extra=key_required())
async def model_inventory(served: Annotated[ServedModels, Depends(get_served)]) -> dict:
    return wrap(inventory(served))


@router.post("/v1/init", response_model=None, summary="Load a DiT into a slot, and optionally the 5 Hz LM",
             responses=answers(Envelope[ModelsInitialized | None], 400, 401, 413, 429, 504),
             openapi_extra=merged(body(InitBody), key_required(body_token=True)))
async def init_models(
    fields: Annotated[dict, Depends(authorized_fields)],
    request: Request,
    served: Annotated[ServedModels, Depends(get_served)],
    queue: Annotated[JobBackend, Depends(get_queue)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> dict:
    task = parse_init(fields, rescanned(served))  # an InvalidField is a 400 from the app's one handler
    result, error = await run_model_job(queue, task, settings.generation_timeout, request)
    if result is None:  # a failed load is reported in the envelope, as official
        return wrap(None, code=500, error=f"{INIT_FAILED}: {error}")
    return wrap(init_answer(result, inventory(request.app.state.served)))


@router.post("/v1/reinitialize", response_model=None, summary="Load again what should be loaded but is not",
             responses=answers(Envelope[Reinitialized | None], 400, 401, 413, 429, 504),
             openapi_extra=merged(body(AuthOnlyBody), key_required(body_token=True)))
async def reinitialize(
    fields: Annotated[dict, Depends(authorized_fields)],
    request: Request,
    queue: Annotated[JobBackend, Depends(get_queue)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> dict:
    result, error = await run_model_job(queue, ModelRequest(action="reinitialize"), settings.generation_timeout,
                                        request)
    if result is None:
        return wrap(None, code=500, error=f"Reinitialization failed: {error}")
    return wrap(reinitialize_answer(result))
