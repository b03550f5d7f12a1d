"""POST /v1/init and /v1/reinitialize of the official API: the body -> a ModelRequest, checked
against what is on disk before any job is queued; the answers in the official shape."""

from __future__ import annotations

from typing import Any

from acestep_api.dialects.coercion import InvalidField, to_bool, to_int, to_text
from acestep_api.engine.limits import SHORT_TEXT_MAX_CHARS
from acestep_api.engine.model_requests import SLOT_COUNT, ModelRequest, ModelResult
from acestep_api.engine.served import ServedModels, folder_name

INIT_DONE = "Model initialization completed"
INIT_FAILED = "Model initialization failed"
REINITIALIZED = "Service reinitialized"


def _name(fields: dict[str, Any], field: str) -> str | None:
    return to_text(field, fields.get(field), "", max_chars=SHORT_TEXT_MAX_CHARS).strip() or None


def parse_init(fields: dict[str, Any], served: ServedModels) -> ModelRequest:
    """The request, or an InvalidField (a 400) naming the field: a slot this server lacks, a
    model or LM that is neither on disk nor fetchable, an empty slot with no model named."""
    slot = to_int("slot", fields.get("slot"), 1, minimum=1, maximum=SLOT_COUNT)
    if slot > len(served.slots):
        raise InvalidField("slot", f"slot {slot} is not available: this server has {len(served.slots)} model "
                                   "slots (ACESTEP_MODEL_SLOTS)")
    model = _name(fields, "model")
    init_llm = to_bool(fields.get("init_llm"), False)
    lm_model_path = _name(fields, "lm_model_path")
    if model is None and not served.slots[slot - 1]:
        raise InvalidField("model", f"slot {slot} is empty: name the DiT model to load into it")
    if model is not None:
        name = folder_name(model)
        loaded = name in served.model_names
        fetchable = name in served.downloadable_dits
        if not loaded and not fetchable and name not in {m.name for m in served.dit_on_disk}:
            on_disk = ", ".join(m.name for m in served.dit_on_disk) or "none"
            raise InvalidField("model", f"model {name!r} is not on this server; DiT models on disk: {on_disk}")
    if init_llm and lm_model_path is not None:
        name = folder_name(lm_model_path)
        if name not in served.lm_on_disk and name not in served.downloadable_lms and name != served.loaded_lm:
            on_disk = ", ".join(served.lm_on_disk) or "none"
            raise InvalidField("lm_model_path", f"5Hz LM {name!r} is not on this server; LM models on disk: {on_disk}")
    return ModelRequest(action="init", model=model, slot=slot, init_llm=init_llm, lm_model_path=lm_model_path)


def init_answer(result: ModelResult, inventory: dict[str, Any]) -> dict[str, Any]:
    """The official /v1/init data: what was loaded, and the inventory after it."""
    return {
        "message": INIT_DONE, "slot": result.slot, "loaded_model": result.loaded_model,
        "loaded_lm_model": result.loaded_lm_model, "models": inventory["models"],
        "lm_models": inventory["lm_models"], "llm_initialized": inventory["llm_initialized"],
    }


def reinitialize_answer(result: ModelResult) -> dict[str, Any]:
    message = REINITIALIZED + (f"; reloaded: {', '.join(result.reloaded)}" if result.reloaded else "")
    return {"message": message, "reloaded": list(result.reloaded)}
