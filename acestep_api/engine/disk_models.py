"""The model folders on disk, loaded or not, as /v1/model_inventory lists them. Light (no
torch): it reads folder listings and each DiT's config.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from acestep_api.engine.layout import CONFIG_FILE, DIFFUSERS_SUBFOLDERS
from acestep_api.engine.lm.folders import list_lm_folders
from acestep_api.engine.loading.folders import is_diffusers_layout, list_dit_folders
from acestep_api.engine.request import TASK_TYPES, TURBO_TASK_TYPES
from acestep_api.engine.served import ServedModel, ServedModels


def dit_is_turbo(folder: Path) -> bool:
    """What the folder's config says (a config that cannot be read counts as not turbo, as official)."""
    config = folder / DIFFUSERS_SUBFOLDERS["transformer"] / CONFIG_FILE if is_diffusers_layout(folder) else folder / CONFIG_FILE
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("is_turbo", False))
    except (OSError, ValueError, AttributeError):
        return False


def served_model(folder: Path) -> ServedModel:
    turbo = dit_is_turbo(folder)
    return ServedModel(folder.name, turbo, TURBO_TASK_TYPES if turbo else TASK_TYPES)


def dits_on_disk(checkpoint_dir: str | Path | None) -> tuple[ServedModel, ...]:
    if checkpoint_dir is None:
        return ()
    return tuple(served_model(Path(checkpoint_dir) / name) for name in list_dit_folders(checkpoint_dir))


def lms_on_disk(checkpoint_dir: str | Path | None) -> tuple[str, ...]:
    return tuple(list_lm_folders(checkpoint_dir)) if checkpoint_dir is not None else ()


def rescanned(served: ServedModels) -> ServedModels:
    """``served`` with the folders on disk as they are now (a download or a copy since)."""
    if served.checkpoint_dir is None:
        return served
    return dataclasses.replace(served, dit_on_disk=dits_on_disk(served.checkpoint_dir),
                               lm_on_disk=lms_on_disk(served.checkpoint_dir))
