"""What the server serves and has on disk, as /health, /v1/model_inventory and /v1/init report it."""

from __future__ import annotations

from acestep_api.engine.disk_models import rescanned
from acestep_api.engine.served import ServedModels, folder_name


def lm_model_name(served: ServedModels) -> str | None:
    """The loaded 5 Hz LM's folder name, None without one."""
    return folder_name(served.lm_model) if served.lm_available and served.initialized else None


def model_entries(served: ServedModels) -> list[dict]:
    """Every DiT, loaded or only on disk: the served ones in slot order (the primary first),
    then the others on disk by name."""
    loaded = {model.name for model in served.models} if served.initialized else set()
    every = {model.name: model for model in served.models}
    every |= {model.name: model for model in sorted(served.dit_on_disk, key=lambda m: m.name) if model.name not in every}
    return [{"name": name, "is_default": name == served.default_model, "is_loaded": name in loaded,
             "is_turbo": model.is_turbo, "supported_task_types": list(model.supported_task_types)}
            for name, model in every.items()]


def lm_entries(served: ServedModels) -> list[dict]:
    """Every 5 Hz LM on disk, and the loaded one."""
    loaded = lm_model_name(served)
    names = sorted(set(served.lm_on_disk) | ({loaded} if loaded else set()))
    return [{"name": name, "is_loaded": name == loaded} for name in names]


def inventory(served: ServedModels) -> dict:
    """The body of /v1/model_inventory, with the folders on disk as they are now."""
    served = rescanned(served)
    return {
        "models": model_entries(served),
        "default_model": served.default_model,
        "lm_models": lm_entries(served),
        "loaded_lm_model": lm_model_name(served),
        "llm_initialized": lm_model_name(served) is not None,
        # One device serves every model in this server.
        "gpus": [],
        "gpu_mapping": {},
        "device_map": {name: served.device for name in served.model_names},
    }
