"""POST /create_random_sample (packaged examples) and POST /format_input (needs the LM)."""

from __future__ import annotations

import json
import random
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from acestep_api.server.auth import authorized_fields
from acestep_api.server.dependencies import get_engine
from acestep_api.server.envelope import wrap

router = APIRouter(tags=["samples"])

SIMPLE_MODE = "simple_mode"
CUSTOM_EXAMPLES = "text2music"
LLM_NOT_INITIALIZED = "LLM not initialized. Set ACESTEP_INIT_LLM=true in .env to enable."


def load_examples(sample_type: str) -> list[dict]:
    """The packaged example files for `simple_mode`, or the custom (text2music) ones."""
    folder = SIMPLE_MODE if sample_type == SIMPLE_MODE else CUSTOM_EXAMPLES
    directory = resources.files("acestep_api").joinpath("data", "examples", folder)
    if not directory.is_dir():
        return []
    examples = []
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if entry.name.startswith("example_") and entry.name.endswith(".json"):
            examples.append(json.loads(entry.read_text(encoding="utf-8")))
    return examples


@router.post("/create_random_sample")
async def create_random_sample(fields: Annotated[dict, Depends(authorized_fields)]) -> dict:
    sample_type = fields.get("sample_type") or SIMPLE_MODE
    examples = load_examples(str(sample_type))
    if not examples:
        return wrap(None, code=500, error="No example data available")
    return wrap(random.choice(examples))


@router.post("/format_input")
async def format_input(
    fields: Annotated[dict, Depends(authorized_fields)],
    engine: Annotated[object, Depends(get_engine)],
) -> dict:
    if not engine.lm_available:
        raise HTTPException(status_code=503, detail=LLM_NOT_INITIALIZED)
    # The engine has no LM formatting call yet; an LM-enabled engine must provide one.
    return wrap(None, code=500, error="format_sample error: LM formatting is not implemented by this engine")
