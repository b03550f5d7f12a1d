"""What the server serves, as /health and the model routes report it."""

from __future__ import annotations

from acestep_api.engine.served import ServedModels
from acestep_api.settings import Settings


def lm_model_name(served: ServedModels, settings: Settings) -> str | None:
    """The loaded 5 Hz LM's folder name, None without one."""
    return lm_folder_name(settings) if served.lm_available else None


def model_entries(served: ServedModels) -> list[dict]:
    """The DiT models as /v1/model_inventory lists them (every one is loaded)."""
    return [{"name": model.name, "is_default": model.name == served.default_model, "is_loaded": True,
             "is_turbo": model.is_turbo, "supported_task_types": list(model.supported_task_types)}
            for model in served.models]


def lm_folder_name(settings: Settings) -> str:
    return settings.lm_model_path.rstrip("/").rsplit("/", 1)[-1]
