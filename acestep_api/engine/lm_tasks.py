"""Work for the 5 Hz LM alone: rewriting a caption and lyrics (`FormatRequest`, the official
/format_input) and writing a song from a description (`SampleRequest`, /v1/create_sample).

They are jobs like any generation: queued, run by the one worker on the one accelerator,
counted in the statistics and cancellable. A dialect builds the request, the engine answers
an `LMTaskResult` (the LM's own fields, typed), the dialect renders it.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from acestep_api.engine.limits import LYRICS_MAX_CHARS, PROMPT_MAX_CHARS, QUERY_MAX_CHARS, TAG_MAX_CHARS, text_problem
from acestep_api.engine.lm.failure import lm_failure
from acestep_api.engine.request import BPM_MAX, BPM_MIN, DURATION_MAX, DURATION_MIN, SEED_MAX

LM_TEMPERATURE_DEFAULT = 0.85


class _LMRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    temperature: float = Field(default=LM_TEMPERATURE_DEFAULT, ge=0.0, le=2.0)
    # None: a random seed, drawn by the engine.
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)


class FormatRequest(_LMRequest):
    """A rough caption and lyrics for the LM to tidy; the metadata given is kept as it is."""

    kind: Literal["format"] = "format"
    caption: str = Field(default="", max_length=PROMPT_MAX_CHARS)
    lyrics: str = Field(default="", max_length=LYRICS_MAX_CHARS)
    bpm: int | None = Field(default=None, ge=BPM_MIN, le=BPM_MAX)
    duration: int | None = Field(default=None, ge=int(DURATION_MIN), le=int(DURATION_MAX))
    key_scale: str = Field(default="", max_length=TAG_MAX_CHARS)
    time_signature: str = Field(default="", max_length=TAG_MAX_CHARS)  # the numerator: "4"
    language: str = Field(default="", max_length=TAG_MAX_CHARS)

    @field_validator("caption", "lyrics", "key_scale", "time_signature", "language")
    @classmethod
    def _valid_text(cls, value: str) -> str:
        problem = text_problem(value, len(value))
        if problem:
            raise ValueError(problem)
        return value

    def given_metadata(self) -> dict[str, Any]:
        """The metadata to keep, under the LM's own names (bpm, duration, keyscale ...)."""
        given = {"bpm": self.bpm, "duration": self.duration, "keyscale": self.key_scale,
                 "timesignature": self.time_signature, "language": self.language}
        return {name: value for name, value in given.items() if value not in (None, "")}


class SampleRequest(_LMRequest):
    """A description (or nothing) for the LM to turn into caption, lyrics and metadata."""

    kind: Literal["sample"] = "sample"
    query: str = Field(default="", max_length=QUERY_MAX_CHARS)
    instrumental: bool = False
    vocal_language: str | None = Field(default=None, max_length=TAG_MAX_CHARS)

    @field_validator("query", "vocal_language")
    @classmethod
    def _valid_text(cls, value: str | None) -> str | None:
        problem = None if value is None else text_problem(value, len(value))
        if problem:
            raise ValueError(problem)
        return value


LMRequest = FormatRequest | SampleRequest


class LMTaskResult(BaseModel):
    """What the LM wrote, under its own names; None where it gave nothing."""

    caption: str | None = None
    lyrics: str | None = None
    bpm: int | None = None
    duration: int | None = None
    keyscale: str | None = None
    timesignature: str | None = None
    language: str | None = None
    instrumental: bool | None = None
    lm_model: str = ""

    @classmethod
    def from_lm(cls, fields: dict[str, Any], lm_model: str) -> "LMTaskResult":
        def text(name: str) -> str | None:
            value = fields.get(name)
            return None if value in (None, "") else str(value)

        def whole(name: str) -> int | None:
            value = fields.get(name)
            try:
                return None if value in (None, "") else int(value)
            except (TypeError, ValueError):
                return None

        instrumental = fields.get("instrumental")
        return cls(
            caption=text("caption"), lyrics=text("lyrics"), bpm=whole("bpm"), duration=whole("duration"),
            keyscale=text("keyscale"), timesignature=text("timesignature"), language=text("language"),
            instrumental=instrumental if isinstance(instrumental, bool) else None, lm_model=lm_model,
        )


class Planner(Protocol):
    """What an LM-only job needs of engine/lm/planner.py's LMPlanner (not imported here: the
    HTTP layer builds these requests without loading torch)."""

    model_name: str

    def format_sample(self, caption: str, lyrics: str, **options: Any) -> dict[str, Any]: ...

    def create_sample(self, query: str, **options: Any) -> dict[str, Any]: ...


def run_lm_task(planner: Planner, task: LMRequest) -> LMTaskResult:
    """One LM-only request on the planner (which serialises it with any other LM call)."""
    from acestep_api.engine.lm.types import SamplingParams  # loads no torch, but keeps this module light

    params = SamplingParams(temperature=task.temperature)
    what = "format_sample" if isinstance(task, FormatRequest) else "create_sample"
    try:
        if isinstance(task, FormatRequest):
            fields = planner.format_sample(task.caption, task.lyrics, metadata=task.given_metadata(),
                                           params=params, seed=task.seed)
        else:
            fields = planner.create_sample(task.query, instrumental=task.instrumental,
                                           vocal_language=task.vocal_language, params=params, seed=task.seed)
    except Exception as error:  # noqa: BLE001 - the LM failing on an input fails this job only
        raise lm_failure(what, error) from None
    return LMTaskResult.from_lm(fields, planner.model_name)
