"""Finding a 5 Hz LM folder: a plain transformers causal-LM folder (``config.json``, weights,
``tokenizer.json``) named under the checkpoints folder or given as a path."""

from __future__ import annotations

import json
from pathlib import Path

from acestep_api.engine.loading.errors import LMLoadError
from acestep_api.engine.loading.folders import find_folder, list_folders
from acestep_api.engine.layout import CONFIG_FILE, LM_MODEL_NAMES, OFFICIAL_WEIGHTS, OFFICIAL_WEIGHTS_INDEX

WEIGHT_FILES = (OFFICIAL_WEIGHTS, OFFICIAL_WEIGHTS_INDEX)
NOT_AN_LM = (
    f"needs {CONFIG_FILE} naming a *ForCausalLM architecture, {' or '.join(WEIGHT_FILES)}, and tokenizer.json"
)


def is_lm_folder(folder: Path) -> bool:
    """A causal-LM folder: a config naming a ``…ForCausalLM`` architecture, weights and a tokenizer."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not any((folder / name).is_file() for name in WEIGHT_FILES):
        return False
    if not (folder / "tokenizer.json").is_file():
        return False
    try:
        architectures = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(str(name).endswith("ForCausalLM") for name in architectures)


def list_lm_folders(checkpoint_dir: str | Path) -> list[str]:
    """Names of the LM checkpoints directly under ``checkpoint_dir``."""
    return list_folders(checkpoint_dir, is_lm_folder)


def resolve_lm_folder(checkpoint_dir: str | Path, name_or_path: str | Path) -> Path:
    """A configured LM: a folder name under ``checkpoint_dir`` (e.g. ``acestep-5Hz-lm-1.7B``), or a path."""
    if not str(name_or_path).strip():
        raise LMLoadError(f"no LM named (empty name); known names: {', '.join(LM_MODEL_NAMES)}")

    def not_found() -> str:
        available = list_lm_folders(checkpoint_dir)
        return (
            f"LM {str(name_or_path)!r} not found under {checkpoint_dir} nor as a path; "
            f"LMs under {checkpoint_dir}: {', '.join(available) if available else 'none'} "
            f"(official names: {', '.join(LM_MODEL_NAMES)})"
        )

    return find_folder(
        checkpoint_dir,
        name_or_path,
        is_lm_folder,
        LMLoadError,
        lambda folder: f"{folder} exists but is not an LM checkpoint ({NOT_AN_LM})",
        not_found,
    )
