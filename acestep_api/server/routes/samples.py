"""POST /create_random_sample (packaged examples); POST /format_input and POST /v1/create_sample
(the 5 Hz LM, as jobs on the one queue: they wait behind running work and can be cancelled)."""

from __future__ import annotations

import json
import logging
import random
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from acestep_api.dialects.official_lm import parse_create_sample, parse_format_input, render_formatted, render_sample
from acestep_api.engine.served import ServedModels
from acestep_api.jobs.backend import JobBackend
from acestep_api.server.auth import authorized_fields
from acestep_api.server.dependencies import get_queue, get_served, get_settings
from acestep_api.server.services.lm import require_lm, run_lm_job
from acestep_api.settings import Settings
from acestep_api.dialects.official import wrap
from acestep_api.server.openapi.answers import CreatedSample, Envelope, FormattedInput
from acestep_api.server.openapi.request_bodies import CreateSampleBody, FormatInputBody, RandomSampleBody
from acestep_api.server.openapi.route_docs import answers, body, key_required, merged

log = logging.getLogger(__name__)
router = APIRouter(tags=["samples"])

SIMPLE_MODE = "simple_mode"
CUSTOM_EXAMPLES = "text2music"


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


@router.post("/create_random_sample", response_model=None, summary="A packaged example request",
             responses=answers(Envelope[dict | None], 400, 401, 413),
             openapi_extra=merged(body(RandomSampleBody), key_required(body_token=True)))
async def create_random_sample(fields: Annotated[dict, Depends(authorized_fields)]) -> dict:
    sample_type = fields.get("sample_type") or SIMPLE_MODE
    examples = load_examples(str(sample_type))
    if not examples:
        return wrap(None, code=500, error="No example data available")
    return wrap(random.choice(examples))


@router.post("/format_input", response_model=None, summary="The LM rewrites a caption and lyrics",
             responses=answers(Envelope[FormattedInput | None], 400, 401, 413, 429, 500, 503, 504),
             openapi_extra=merged(body(FormatInputBody), key_required(body_token=True)))
async def format_input(
    fields: Annotated[dict, Depends(authorized_fields)],
    request: Request,
    served: Annotated[ServedModels, Depends(get_served)],
    queue: Annotated[JobBackend, Depends(get_queue)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> dict:
    require_lm(served)
    task = parse_format_input(fields)  # an InvalidField is a 400 from the app's one handler
    result, error = await run_lm_job(queue, task, settings.generation_timeout, request)
    if result is None:  # the LM failing is reported in the envelope, as official
        return wrap(None, code=500, error=error)
    return wrap(render_formatted(task, result))


@router.post("/v1/create_sample", response_model=None, summary="The LM writes a song from a description",
             responses=answers(Envelope[CreatedSample | None], 400, 401, 413, 429, 500, 503, 504),
             openapi_extra=merged(body(CreateSampleBody), key_required(body_token=True)))
async def create_sample(
    fields: Annotated[dict, Depends(authorized_fields)],
    request: Request,
    served: Annotated[ServedModels, Depends(get_served)],
    queue: Annotated[JobBackend, Depends(get_queue)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> dict:
    require_lm(served)
    task = parse_create_sample(fields)  # an InvalidField is a 400 from the app's one handler
    result, error = await run_lm_job(queue, task, settings.generation_timeout, request)
    if result is None:
        return wrap(None, code=500, error=error)
    return wrap(render_sample(task, result))
