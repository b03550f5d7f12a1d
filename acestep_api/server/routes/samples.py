"""POST /create_random_sample (packaged examples); POST /format_input and POST /v1/create_sample (the LM)."""

from __future__ import annotations

import json
import logging
import random
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool

from acestep_api.engine.limits import LYRICS_MAX_CHARS, PROMPT_MAX_CHARS, QUERY_MAX_CHARS, TAG_MAX_CHARS
from acestep_api.engine.lm.types import SamplingParams
from acestep_api.engine.request import BPM_MAX, BPM_MIN, DURATION_MAX, DURATION_MIN, GenerationError

from acestep_api.server.auth import authorized_fields
from acestep_api.dialects.coercion import InvalidField, as_object, to_bool, to_float, to_int, to_text
from acestep_api.server.dependencies import get_engine
from acestep_api.server.envelope import wrap
from acestep_api.server.openapi.answers import CreatedSample, Envelope, FormattedInput
from acestep_api.server.openapi.request_bodies import CreateSampleBody, FormatInputBody, RandomSampleBody
from acestep_api.server.openapi.route_docs import answers, body, key_required, merged

log = logging.getLogger(__name__)
router = APIRouter(tags=["samples"])

SIMPLE_MODE = "simple_mode"
CUSTOM_EXAMPLES = "text2music"
LLM_NOT_INITIALIZED = "LLM not initialized. Set ACESTEP_INIT_LLM=true in .env to enable."
# What the client reads when the LM fails on its input; the details (the tokenizer's or
# torch's own words) go to the log.
LM_FAILED = "{} failed: the 5 Hz LM could not process this input; the server log has the details"


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


def require_lm(engine) -> None:
    """The official gate of the LM routes: a failed load is a 500, a disabled LM a 503."""
    if engine.lm_available:
        return
    if engine.lm_error:
        raise HTTPException(status_code=500, detail=f"LLM init failed: {engine.lm_error}")
    raise HTTPException(status_code=503, detail=LLM_NOT_INITIALIZED)


def lm_failure(what: str, error: Exception) -> str:
    """The client's sentence for a failed LM call: a GenerationError's own message (written
    for users), else one that names no internals."""
    if isinstance(error, GenerationError) and str(error):
        return f"{what} failed: {error}"
    return LM_FAILED.format(what)


def _sampling(fields: dict) -> SamplingParams:
    temperature = to_float("temperature", fields.get("temperature"), 0.85, minimum=0.0, maximum=2.0)
    return SamplingParams(temperature=temperature)


def _metadata(fields: dict) -> dict:
    """``param_obj`` (an object or a JSON string) holds the metadata to keep; a top-level
    ``time_signature`` is the official fallback."""
    raw = as_object(fields.get("param_obj"))
    metas: dict = {}
    bpm = to_int("bpm", raw.get("bpm"), None, minimum=BPM_MIN, maximum=BPM_MAX)
    if bpm is not None:
        metas["bpm"] = bpm
    duration = to_float("duration", raw.get("duration"), None)
    if duration is not None and duration > 0:
        metas["duration"] = int(min(max(duration, DURATION_MIN), DURATION_MAX))
    key = to_text("key_scale", raw.get("key_scale") or raw.get("key") or raw.get("keyscale"), "",
                  max_chars=TAG_MAX_CHARS).strip()
    if key:
        metas["keyscale"] = key
    signature = to_text("time_signature", raw.get("time_signature") or fields.get("time_signature"), "",
                        max_chars=TAG_MAX_CHARS).strip()
    if signature:
        metas["timesignature"] = signature.split("/", 1)[0].strip()
    language = to_text("language", raw.get("language") or raw.get("vocal_language"), "",
                       max_chars=TAG_MAX_CHARS).strip()
    if language and language != "unknown":
        metas["language"] = language
    return metas


@router.post("/format_input", response_model=None, summary="The LM rewrites a caption and lyrics",
             responses=answers(Envelope[FormattedInput | None], 400, 401, 413, 500, 503),
             openapi_extra=merged(body(FormatInputBody), key_required(body_token=True)))
async def format_input(
    fields: Annotated[dict, Depends(authorized_fields)],
    engine: Annotated[object, Depends(get_engine)],
) -> dict:
    require_lm(engine)
    try:
        caption = to_text("prompt", fields.get("prompt", fields.get("caption")), "", max_chars=PROMPT_MAX_CHARS)
        lyrics = to_text("lyrics", fields.get("lyrics"), "", max_chars=LYRICS_MAX_CHARS)
        metas = _metadata(fields)
        params = _sampling(fields)
    except InvalidField as error:
        raise HTTPException(status_code=400, detail=str(error)) from None
    try:
        # The LM blocks for seconds: off the event loop (the planner serialises it with the worker).
        result = await run_in_threadpool(engine.planner.format_sample, caption, lyrics, metadata=metas, params=params)
    except Exception as error:  # the LM failing is reported in the envelope, as official
        log.exception("format_sample failed")
        return wrap(None, code=500, error=lm_failure("format_sample", error))
    return wrap({
        "caption": result.get("caption") or caption,
        "lyrics": result.get("lyrics") or lyrics,
        "bpm": result.get("bpm", metas.get("bpm")),
        "key_scale": result.get("keyscale", metas.get("keyscale", "")),
        "time_signature": str(result.get("timesignature", metas.get("timesignature", ""))),
        "duration": result.get("duration", metas.get("duration")),
        "vocal_language": result.get("language") or metas.get("language") or "unknown",
    })


@router.post("/v1/create_sample", response_model=None, summary="The LM writes a song from a description",
             responses=answers(Envelope[CreatedSample | None], 400, 401, 413, 500, 503),
             openapi_extra=merged(body(CreateSampleBody), key_required(body_token=True)))
async def create_sample(
    fields: Annotated[dict, Depends(authorized_fields)],
    engine: Annotated[object, Depends(get_engine)],
) -> dict:
    require_lm(engine)
    try:
        query = to_text("query", fields.get("query"), "", max_chars=QUERY_MAX_CHARS)
        instrumental = to_bool(fields.get("instrumental"), False)
        language = to_text("vocal_language", fields.get("vocal_language"), "unknown",
                           max_chars=TAG_MAX_CHARS).strip() or "unknown"
        params = _sampling(fields)
    except InvalidField as error:
        raise HTTPException(status_code=400, detail=str(error)) from None
    try:
        result = await run_in_threadpool(
            engine.planner.create_sample, query, instrumental=instrumental,
            vocal_language=None if language == "unknown" else language, params=params,
        )
    except Exception as error:
        log.exception("create_sample failed")
        return wrap(None, code=500, error=lm_failure("create_sample", error))
    return wrap({
        "caption": result.get("caption", ""),
        "lyrics": result.get("lyrics", ""),
        "bpm": result.get("bpm"),
        "keyscale": result.get("keyscale", ""),
        "duration": result.get("duration"),
        "timesignature": str(result.get("timesignature", "")),
        "vocal_language": result.get("language") or language,
    })
