"""Random weights for the demo checkpoints' modules."""

from __future__ import annotations

import math

import torch
from torch import nn


def randomize_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Give every parameter a random value of a sensible scale.

    Nothing is left at zero or one, so a swapped or dropped tensor changes the output.
    """
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias":
                value = 0.05 * noise
            elif param.ndim == 1:  # RMSNorm gains
                value = 1.0 + 0.1 * noise
            elif "scale_shift_table" in name:
                value = noise / math.sqrt(param.shape[-1])
            elif "special_token" in name or "null_condition_emb" in name:
                value = 0.5 * noise
            else:
                fan_in = param.numel() // param.shape[0]
                value = noise / math.sqrt(fan_in)
            param.copy_(value.to(param.dtype))
