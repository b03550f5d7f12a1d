"""fal.ai `fal-ai/ace-step/prompt-to-audio`: its input and output, as fal documents them.

Names, defaults, ranges and options are fal's own (api-contract 9.3). A value out of range or
of the wrong type is a 422 whose message names the field and fal's range; fields fal does not
document are accepted and ignored, because fal clients send what they send. How each field is
served by ACE-Step 1.5 is decided in `routes/fal.py` and documented in docs/fal.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from acestep_api.engine.limits import PROMPT_MAX_CHARS, text_problem
from acestep_api.engine.request import SEED_MAX

RANDOM_SEED = -1


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _in_range(low: float, high: float, allowed: str) -> WrapValidator:
    """Runs the field's own validation (type, then `ge`/`le`) and rewords any failure as
    "<field> must be <allowed>", so the message states the whole range; the error keeps
    pydantic's type and carries the bounds as `ge`/`le` in its context."""

    def check(value: Any, handler, info: ValidationInfo) -> Any:
        try:
            return handler(value)
        except ValidationError as error:
            error_type = error.errors(include_url=False)[0]["type"]
            message = f"{info.field_name} must be {allowed}"
            raise PydanticCustomError(error_type, message, {"ge": low, "le": high}) from None

    return WrapValidator(check)


def _ranged_float(low: float, high: float):
    allowed = f"a number between {_number(low)} and {_number(high)}"
    return Annotated[float, Field(ge=low, le=high), _in_range(low, high, allowed)]


def _ranged_int(low: int, high: int):
    allowed = f"an integer between {_number(low)} and {_number(high)}"
    return Annotated[int, Field(ge=low, le=high), _in_range(low, high, allowed)]


# fal gives no range for its seed; ACE-Step 1.5 seeds are unsigned 32-bit.
Seed = Annotated[
    int,
    Field(ge=RANDOM_SEED, le=SEED_MAX),
    _in_range(RANDOM_SEED, SEED_MAX, f"an integer between 0 and {SEED_MAX}, or -1 for a random seed"),
]


class FalPromptInput(BaseModel):
    """The request body of POST /fal-ai/ace-step/prompt-to-audio."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(
        description="Style of the audio; used to write the tags (caption) and the lyrics.",
        examples=["A lofi hiphop song with a chill vibe about a sunny day on the boardwalk."],
        # Enforced by _prompt_has_text, whose message states the limit; shown in the schema here.
        json_schema_extra={"maxLength": PROMPT_MAX_CHARS},
    )
    instrumental: bool = False
    duration: _ranged_float(5, 240) = Field(default=60.0, description="Seconds of audio.")
    number_of_steps: _ranged_int(3, 60) = 27
    seed: Seed | None = Field(
        default=None, description="Absent (or -1): a random seed, reported in the answer."
    )
    scheduler: Literal["euler", "heun"] = "euler"
    guidance_type: Literal["cfg", "apg", "cfg_star"] = "apg"
    granularity_scale: _ranged_int(-100, 100) = 10
    guidance_interval: _ranged_float(0, 1) = 0.5
    guidance_interval_decay: _ranged_float(0, 1) = 0.0
    guidance_scale: _ranged_float(0, 200) = 15.0
    minimum_guidance_scale: _ranged_float(0, 200) = 3.0
    tag_guidance_scale: _ranged_float(0, 10) = 5.0
    lyric_guidance_scale: _ranged_float(0, 10) = 1.5

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        # Clients often send `"seed": null` for "not set"; a null prompt stays missing.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("string_too_short", "prompt must be a non-empty string")
        if len(value) > PROMPT_MAX_CHARS:
            raise PydanticCustomError(
                "string_too_long", "prompt must be at most {max_length} characters (got {length})",
                {"max_length": PROMPT_MAX_CHARS, "length": len(value)},
            )
        problem = text_problem(value, PROMPT_MAX_CHARS)
        if problem:  # a lone surrogate: the LM's tokenizer would fail on it
            raise PydanticCustomError("string_type", f"prompt {problem}")
        return value


class FalFile(BaseModel):
    """fal's File: where to download the audio, and what it is."""

    url: str
    content_type: str
    file_name: str
    file_size: int


class FalPromptOutput(BaseModel):
    """The answer: the audio, the seed used, and the tags (caption) and lyrics it was made from."""

    audio: FalFile
    seed: int
    tags: str
    lyrics: str
