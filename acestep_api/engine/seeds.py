"""Seeds per batch item, and the initial noise they make (docs/pipeline.md#seeds-and-noise, docs/wire-contract.md#generation-semantics)."""

from __future__ import annotations

import random

import torch

from acestep_api.engine.request import SEED_MAX

RANDOM_SEED = -1


def random_seed() -> int:
    return random.randint(0, SEED_MAX)


def resolve_seeds(use_random_seed: bool, seeds: list[int] | None, batch_size: int) -> list[int]:
    """One seed per item.

    ``use_random_seed`` wins: every item gets a fresh random seed. Otherwise ``seeds`` maps
    item by item; a missing entry or -1 means random and extra entries are ignored. So a
    single seed fixes item 0 only, as in the official server.
    """
    if use_random_seed:
        return [random_seed() for _ in range(batch_size)]
    given = list(seeds or [])[:batch_size]
    given += [RANDOM_SEED] * (batch_size - len(given))
    return [random_seed() if seed is None or seed < 0 else int(seed) for seed in given]


def item_generators(seeds: list[int], device: torch.device | str) -> list[torch.Generator]:
    """One generator per item, seeded like the official ``prepare_noise``.

    The sampler keeps drawing from the same generators for SDE noise, so a whole run is
    reproducible from its seeds.
    """
    return [torch.Generator(device=device).manual_seed(seed) for seed in seeds]


def initial_noise(
    generators: list[torch.Generator],
    length: int,
    channels: int,
    device: torch.device | str,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Noise [B, T, C]: each item drawn as [1, T, C] from its own generator, in the model dtype."""
    return torch.cat(
        [torch.randn((1, length, channels), generator=g, device=device, dtype=dtype) for g in generators], dim=0
    )
