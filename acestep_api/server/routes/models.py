"""GET /v1/models (OpenRouter list, open) and GET /v1/model_inventory (wrapped, header auth).

The official server answers /v1/models with the OpenRouter list because that router shadows
its documented wrapped route; clients rely on the actual behaviour, so we keep it and serve
the documented inventory under its newer name.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends

from acestep_api.server.auth import require_api_key
from acestep_api.engine.served import ServedModels
from acestep_api.server.dependencies import get_served, get_settings
from acestep_api.dialects.official import wrap
from acestep_api.server.services.inventory import lm_folder_name, lm_model_name, model_entries
from acestep_api.settings import Settings
from acestep_api.server.openapi.answers import Envelope, ModelInventory, OpenRouterModels
from acestep_api.server.openapi.route_docs import answers, key_required

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
            summary="The DiT and LM models this server serves",
            responses=answers(Envelope[ModelInventory], 401), openapi_extra=key_required())
async def model_inventory(served: Annotated[ServedModels, Depends(get_served)],
                          settings: Annotated[Settings, Depends(get_settings)]) -> dict:
    lm_name = lm_folder_name(settings)
    return wrap({
        "models": model_entries(served),
        "default_model": served.default_model,
        "lm_models": [{"name": lm_name, "is_loaded": served.lm_available}],
        "loaded_lm_model": lm_model_name(served, settings),
        "llm_initialized": served.lm_available,
        # One device serves every model in this server.
        "gpus": [],
        "gpu_mapping": {},
        "device_map": {name: served.device for name in served.model_names},
    })
