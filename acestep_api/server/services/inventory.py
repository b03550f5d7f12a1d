"""What the server serves, as /health and the model routes report it."""

from __future__ import annotations

from acestep_api.settings import Settings


def lm_model_name(engine, settings: Settings) -> str | None:
    """The loaded 5 Hz LM's folder name, None without one."""
    return lm_folder_name(settings) if engine.lm_available else None


def lm_folder_name(settings: Settings) -> str:
    return settings.lm_model_path.rstrip("/").rsplit("/", 1)[-1]
