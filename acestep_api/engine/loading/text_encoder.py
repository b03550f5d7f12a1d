"""The text encoder every DiT shares: a Qwen3-Embedding folder, loaded offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from acestep_api.engine.loading.errors import CheckpointError
from acestep_api.engine.loading.modules import ready_for_inference
from acestep_api.engine.layout import CONFIG_FILE


def load_text_encoder(
    folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Any, nn.Module]:
    """``(tokenizer, Qwen3Model)`` from a Qwen3-Embedding-0.6B-style folder, offline."""
    from transformers import AutoModel, AutoTokenizer

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise CheckpointError(f"text encoder folder {folder} has no config.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the text encoder from {folder}: {exc}") from exc
    return tokenizer, ready_for_inference(model, torch.device(device), dtype)
