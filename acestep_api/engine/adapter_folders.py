"""Adapter folders on disk: which exist, what a name or a path given by a client points at, and
whether a folder holds a readable adapter (its config and its tensors' names and shapes).

Torch-free: the HTTP layer checks names and paths with it before a job is queued, and the
worker's adapter loader (engine/adapters.py) reads the same folders through it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acestep_api.engine.layout import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE
from acestep_api.engine.request import GenerationError

# A name is one folder name: letters, digits, '.', '_', '-', not starting with '.'.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
NAME_RULE = "a folder name of 1 to 128 letters, digits, '.', '_' or '-' (no path)"
LISTED_MAX = 200  # names shown in a message or a status answer
CONFIG_MAX_BYTES = 1 << 20
# The PEFT adapter types the loader maps onto the DiT, and the prefix of their tensors' names.
SUPPORTED_TYPES = {"LORA": "lora_", "LOKR": "lokr_"}


class AdapterError(GenerationError):
    """An adapter that cannot be used; the message names the problem and is shown to the client."""


@dataclass(frozen=True)
class AdapterFiles:
    """A readable adapter folder: its name, its parsed config, and its stored tensors' shapes."""

    name: str
    folder: Path
    config: dict[str, Any]
    peft_type: str
    shapes: dict[str, tuple[int, ...]]

    @property
    def weights(self) -> Path:
        return self.folder / ADAPTER_WEIGHTS_FILE


def is_valid_name(name: str) -> bool:
    return bool(NAME_PATTERN.match(name)) and name not in (".", "..")


def available(lora_dir: Path) -> list[str]:
    """The adapter names in ``lora_dir`` (its sub-folders holding an adapter_config.json), sorted."""
    try:
        entries = sorted(lora_dir.iterdir(), key=lambda entry: entry.name)
    except OSError:
        return []
    return [entry.name for entry in entries
            if is_valid_name(entry.name) and (entry / ADAPTER_CONFIG_FILE).is_file()][:LISTED_MAX]


def listing(lora_dir: Path) -> str:
    names = available(lora_dir)
    return ", ".join(names) if names else "none (the adapters folder holds no adapter)"


def check_name(lora_dir: Path, name: str, field: str = "lora_name") -> Path:
    """The folder of adapter ``name``, or an AdapterError naming the field and what exists."""
    if not is_valid_name(name):
        raise AdapterError(f"{field} must be {NAME_RULE}; got {name[:60]!r}")
    folder = lora_dir / name
    if not (folder / ADAPTER_CONFIG_FILE).is_file():
        raise AdapterError(f"{field}: no adapter named {name!r}; available: {listing(lora_dir)}")
    return folder


def name_for_path(lora_dir: Path, lora_path: str) -> str:
    """The adapter name a client's ``lora_path`` points at: a folder directly inside the adapters
    folder, given by its name, a path relative to the adapters folder, or an absolute path.
    Anything else (a file, a folder elsewhere, '..') is an AdapterError."""
    text = lora_path.strip()
    if not text or len(text) > 1024 or "\x00" in text:
        raise AdapterError("lora_path must name an adapter folder (1 to 1024 characters)")
    # Normalised without following links: an adapter folder may be a link the operator made.
    roots = {Path(os.path.normpath(lora_dir.absolute())), lora_dir.resolve()}
    candidate = Path(text)
    target = Path(os.path.normpath(candidate if candidate.is_absolute() else lora_dir.absolute() / candidate))
    if target.parent not in roots:
        raise AdapterError(
            f"lora_path must be an adapter folder directly inside the adapters folder (ACESTEP_LORA_DIR); "
            f"available: {listing(lora_dir)}")
    check_name(lora_dir, target.name, field="lora_path")
    return target.name


def read_adapter(lora_dir: Path, name: str) -> AdapterFiles:
    """Adapter ``name``'s config and tensor shapes, checked for what can be checked without the
    model: both files present, the config a JSON object of a supported PEFT type, the weights a
    readable safetensors file holding at least one tensor."""
    folder = check_name(lora_dir, name)
    weights = folder / ADAPTER_WEIGHTS_FILE
    if not weights.is_file():
        raise AdapterError(f"adapter {name!r} has no {ADAPTER_WEIGHTS_FILE}")
    config_path = folder / ADAPTER_CONFIG_FILE
    try:
        if config_path.stat().st_size > CONFIG_MAX_BYTES:
            raise AdapterError(f"adapter {name!r}: {ADAPTER_CONFIG_FILE} is larger than 1 MiB")
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise AdapterError(f"adapter {name!r}: {ADAPTER_CONFIG_FILE} is not readable JSON") from None
    if not isinstance(config, dict):
        raise AdapterError(f"adapter {name!r}: {ADAPTER_CONFIG_FILE} must hold a JSON object")
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type not in SUPPORTED_TYPES:
        raise AdapterError(f"adapter {name!r}: peft_type {config.get('peft_type')!r} is not supported; "
                           f"allowed: {', '.join(SUPPORTED_TYPES)}")
    return AdapterFiles(name, folder, config, peft_type, _shapes(name, weights))


def _shapes(name: str, weights: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="numpy") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception:  # noqa: BLE001 - safetensors raises several types for a damaged file
        raise AdapterError(f"adapter {name!r}: {ADAPTER_WEIGHTS_FILE} is not a readable safetensors file") from None
    if not shapes:
        raise AdapterError(f"adapter {name!r}: {ADAPTER_WEIGHTS_FILE} holds no tensors")
    return shapes
