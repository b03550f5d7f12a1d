"""The official API's LM routes: `/format_input` (the LM tidies a caption and lyrics) and
`/v1/create_sample` (the LM writes a song from a description). Their bodies become LM-only
jobs (engine/lm_tasks.py); their answers are the official envelope's `data`.

Part of the official dialect, kept in its own module because these routes share nothing with
`/release_task` but the field rules.
"""

from __future__ import annotations

from pydantic import ValidationError

from acestep_api.dialects.coercion import as_object, to_bool, to_float, to_int, to_text
from acestep_api.dialects.official import invalid_field_from
from acestep_api.engine.limits import LYRICS_MAX_CHARS, PROMPT_MAX_CHARS, QUERY_MAX_CHARS, TAG_MAX_CHARS
from acestep_api.engine.lm_tasks import LM_TEMPERATURE_DEFAULT, FormatRequest, LMTaskResult, SampleRequest
from acestep_api.engine.request import BPM_MAX, BPM_MIN, DURATION_MAX, DURATION_MIN

UNKNOWN_LANGUAGE = "unknown"


def _temperature(fields: dict) -> float:
    return to_float("temperature", fields.get("temperature"), LM_TEMPERATURE_DEFAULT, minimum=0.0, maximum=2.0)


def _built(model, **values):
    """The request model, or an InvalidField naming the field its validation refused."""
    try:
        return model(**values)
    except ValidationError as error:
        raise invalid_field_from(error) from None


def _tag(name: str, value) -> str:
    return to_text(name, value, "", max_chars=TAG_MAX_CHARS).strip()


def parse_format_input(fields: dict) -> FormatRequest:
    """`prompt` (or `caption`) and `lyrics` to tidy; `param_obj` (an object or a JSON string)
    holds the metadata to keep, a top-level `time_signature` is the official fallback.
    Raises InvalidField."""
    raw = as_object(fields.get("param_obj"))
    duration = to_float("duration", raw.get("duration"), None)
    signature = _tag("time_signature", raw.get("time_signature") or fields.get("time_signature"))
    language = _tag("language", raw.get("language") or raw.get("vocal_language"))
    return _built(
        FormatRequest,
        caption=to_text("prompt", fields.get("prompt", fields.get("caption")), "", max_chars=PROMPT_MAX_CHARS),
        lyrics=to_text("lyrics", fields.get("lyrics"), "", max_chars=LYRICS_MAX_CHARS),
        bpm=to_int("bpm", raw.get("bpm"), None, minimum=BPM_MIN, maximum=BPM_MAX),
        # A duration out of range is brought into it, as official; zero or less means none.
        duration=int(min(max(duration, DURATION_MIN), DURATION_MAX)) if duration is not None and duration > 0 else None,
        key_scale=_tag("key_scale", raw.get("key_scale") or raw.get("key") or raw.get("keyscale")),
        time_signature=signature.split("/", 1)[0].strip(),
        language="" if language == UNKNOWN_LANGUAGE else language,
        temperature=_temperature(fields),
    )


def render_formatted(task: FormatRequest, result: LMTaskResult) -> dict:
    """The `data` of a /format_input answer: what the LM wrote, else what was given."""
    return {
        "caption": result.caption or task.caption,
        "lyrics": result.lyrics or task.lyrics,
        "bpm": result.bpm if result.bpm is not None else task.bpm,
        "key_scale": result.keyscale or task.key_scale,
        "time_signature": result.timesignature or task.time_signature,
        "duration": result.duration if result.duration is not None else task.duration,
        "vocal_language": result.language or task.language or UNKNOWN_LANGUAGE,
    }


def parse_create_sample(fields: dict) -> SampleRequest:
    """`query` (the description), `instrumental`, `vocal_language`. Raises InvalidField."""
    language = to_text("vocal_language", fields.get("vocal_language"), UNKNOWN_LANGUAGE,
                       max_chars=TAG_MAX_CHARS).strip() or UNKNOWN_LANGUAGE
    return _built(
        SampleRequest,
        query=to_text("query", fields.get("query"), "", max_chars=QUERY_MAX_CHARS),
        instrumental=to_bool(fields.get("instrumental"), False),
        vocal_language=None if language == UNKNOWN_LANGUAGE else language,
        temperature=_temperature(fields),
    )


def render_sample(task: SampleRequest, result: LMTaskResult) -> dict:
    """The `data` of a /v1/create_sample answer."""
    return {
        "caption": result.caption or "",
        "lyrics": result.lyrics or "",
        "bpm": result.bpm,
        "keyscale": result.keyscale or "",
        "duration": result.duration,
        "timesignature": result.timesignature or "",
        "vocal_language": result.language or task.vocal_language or UNKNOWN_LANGUAGE,
    }
