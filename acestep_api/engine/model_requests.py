"""Model work as jobs: loading a DiT into a slot and the 5 Hz LM (POST /v1/init), and loading
again what should be loaded but is not (POST /v1/reinitialize).

Loading moves weights onto the accelerator, so it is a job like any generation: queued, run
by the one worker between the other jobs, never beside them. Plain data (no torch): the HTTP
layer builds the request and reads the result; engine/model_slots.py does the work.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from acestep_api.engine.limits import SHORT_TEXT_MAX_CHARS

SLOT_COUNT = 3  # DiT slots, as the official server has (ACESTEP_CONFIG_PATH, _PATH2, _PATH3)


class ModelRequest(BaseModel):
    """`init`: load `model` into `slot` (its current model again when None), and with
    `init_llm` the LM `lm_model_path` (the configured one when None). `reinitialize`: load
    whatever should be loaded but is not (the LM whose load failed, the models not loaded yet
    with ACESTEP_NO_INIT)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["init", "reinitialize"] = "init"
    model: str | None = Field(default=None, max_length=SHORT_TEXT_MAX_CHARS)
    slot: int = Field(default=1, ge=1, le=SLOT_COUNT)
    init_llm: bool = False
    lm_model_path: str | None = Field(default=None, max_length=SHORT_TEXT_MAX_CHARS)


class ModelResult(BaseModel):
    """What a model job did: the slot it filled and the models it loaded."""

    slot: int | None = None
    loaded_model: str | None = None
    loaded_lm_model: str | None = None
    reloaded: list[str] = Field(default_factory=list)
