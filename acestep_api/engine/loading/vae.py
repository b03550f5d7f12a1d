"""The VAE every DiT shares: an ``AutoencoderOobleck`` folder, loaded offline."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from acestep_api.engine.loading.errors import CheckpointError
from acestep_api.engine.loading.modules import ready_for_inference
from acestep_api.engine.layout import CONFIG_FILE


def load_vae(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """The ``AutoencoderOobleck`` in ``folder``, offline."""
    from diffusers import AutoencoderOobleck

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise CheckpointError(f"VAE folder {folder} has no config.json")
    try:
        vae = AutoencoderOobleck.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the VAE from {folder}: {exc}") from exc
    return ready_for_inference(vae, torch.device(device), dtype)
