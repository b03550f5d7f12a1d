"""Whether the adapter a request names exists, before its job is queued."""

from __future__ import annotations

from acestep_api.dialects.coercion import InvalidField
from acestep_api.engine.adapter_folders import AdapterError, check_name
from acestep_api.engine.request import GenerationRequest
from acestep_api.engine.served import ServedModels


def check_adapter(generation: GenerationRequest, served: ServedModels) -> None:
    """An unknown lora_name is a 400 listing the adapters there are."""
    if not generation.lora_name:
        return
    if served.lora_dir is None:
        raise InvalidField("lora_name", "lora_name: this server has no adapters folder (ACESTEP_LORA_DIR)")
    try:
        check_name(served.lora_dir, generation.lora_name)
    except AdapterError as error:
        raise InvalidField("lora_name", str(error)) from None
