"""fal.ai `fal-ai/ace-step/prompt-to-audio`: its input and output as fal documents them, how a
request becomes one ACE-Step 1.5 job, and how the job's song is answered.

Names, defaults, ranges and options are fal's own (docs/wire-contract.md#fal-prompt-to-audio). A value out of range or
of the wrong type is a 422 whose message names the field and fal's range; fields fal does not
document are accepted and ignored, because fal clients send what they send. docs/fal.md says
how each field is served and why.

A request is one job: with the 5 Hz LM, in sample mode (the LM turns the prompt into a
caption, fal's `tags`, lyrics and metadata, and the DiT makes the song in the same job) with
fal's duration kept; without it, the prompt is the caption and the song has no vocals.
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
from acestep_api.engine.request import DURATION_MIN, SEED_MAX, GenerationRequest, GenerationResult

RANDOM_SEED = -1
# fal answers a WAV URL; WAV is also what lets a short clip be cut without re-encoding loss.
AUDIO_FORMAT = "wav"
INSTRUMENTAL_LYRICS = "[inst]"  # fal's own spelling; the DiT reads it as instrumental
SHIFT = 3.0  # GenerationRequest's default shift, the schedule the guidance window is placed on


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


# --- fal's request -> one ACE-Step 1.5 job ----------------------------------------------------


def _schedule_t(step: int, steps: int) -> float:
    """t at the start of `step` of the base/SFT schedule (sampler.base_schedule, shift SHIFT)."""
    u = 1.0 - step / steps
    return SHIFT * u / (1.0 + (SHIFT - 1.0) * u)


def guidance_window(interval: float, steps: int) -> tuple[float, float] | None:
    """fal's `guidance_interval` as ACE-Step 1.5's t window (cfg_interval_start, _end).

    fal (ACE-Step v1) guides steps start..end-1, start = int(steps*(1-g)/2), end =
    int(steps*(g/2+0.5)); 1.5 guides the steps whose t lies in the window. Each bound is put
    halfway between two neighbouring steps' t, so exactly those steps are guided whatever the
    precision the schedule runs in. None: no step is guided.
    """
    first = int(steps * ((1.0 - interval) / 2.0))
    end = int(steps * (interval / 2.0 + 0.5))
    if end <= first:
        return None
    upper = 1.0 if first == 0 else (_schedule_t(first - 1, steps) + _schedule_t(first, steps)) / 2.0
    lower = 0.0 if end >= steps else (_schedule_t(end - 1, steps) + _schedule_t(end, steps)) / 2.0
    return lower, upper


def parse(fal: FalPromptInput, seed: int, *, lm_available: bool) -> GenerationRequest:
    """One text2music item, seeded (one seed for the LM and the DiT: sending it back
    reproduces the song). Turbo checkpoints run their fixed 8 steps with no guidance whatever
    is asked (docs/pipeline.md#turbo-schedule); base/SFT use the steps and the guidance."""
    window = guidance_window(fal.guidance_interval, fal.number_of_steps)
    cfg_start, cfg_end = window or (0.0, 1.0)
    return GenerationRequest(
        # With the LM these are the fallbacks of what it writes (the caption, the lyrics).
        prompt=fal.prompt,
        lyrics=INSTRUMENTAL_LYRICS if fal.instrumental else "",
        vocal_language="unknown",  # the LM's sample may name one
        # The LM's sample mode on the prompt: its language and "instrumental" hints are read as
        # the official sample mode reads them; fal's duration holds.
        sample_mode=lm_available,
        sample_query=fal.prompt if lm_available else "",
        instrumental=fal.instrumental,
        sample_keeps_duration=True,
        # 1.5 makes at least DURATION_MIN seconds; a shorter clip is cut from them afterwards.
        audio_duration=max(fal.duration, DURATION_MIN),
        batch_size=1,
        inference_steps=fal.number_of_steps,
        guidance_scale=fal.guidance_scale if window else 1.0,  # 1.0: no guided step at all
        shift=SHIFT,
        infer_method="ode",  # Euler; 1.5's sampler has no Heun
        use_adg=False,  # APG, 1.5's guidance, for every fal guidance_type
        cfg_interval_start=cfg_start,
        cfg_interval_end=cfg_end,
        use_random_seed=False,
        seeds=[seed],
        audio_format=AUDIO_FORMAT,
        # The text is settled by the sample: the LM may fill missing metadata, not rewrite
        # caption or language.
        use_cot_caption=False,
        use_cot_language=False,
    )


def needs_cut(fal: FalPromptInput) -> bool:
    """Whether the song is longer than asked (1.5 makes at least DURATION_MIN seconds)."""
    return fal.duration < DURATION_MIN


def render(result: GenerationResult, audio: FalFile) -> FalPromptOutput:
    """fal's answer: the song's file, its seed, and the text the DiT was conditioned on."""
    return FalPromptOutput(audio=audio, seed=result.seeds[0], tags=result.prompt, lyrics=result.lyrics)
