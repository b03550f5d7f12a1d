"""Official weight names <-> our modules: one table, both directions, and the check that a
checkpoint holds exactly the tensors its config needs."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from acestep_api.engine.loading.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from torch import nn

# Official top-level prefix -> our component name.
COMPONENT_PREFIXES: dict[str, str] = {
    "decoder.": "transformer",
    "encoder.": "condition_encoder",
    "tokenizer.": "audio_tokenizer",
    "detokenizer.": "audio_detokenizer",
}
# The one official key that lives outside the four prefixes.
NULL_CONDITION_KEY = "null_condition_emb"
NULL_CONDITION_TARGET = ("condition_encoder", "null_condition_emb")

# Inside every self_attn / cross_attn block: official -> diffusers.
ATTENTION_RENAMES: dict[str, str] = {
    "q_proj": "to_q",
    "k_proj": "to_k",
    "v_proj": "to_v",
    "o_proj": "to_out.0",
    "q_norm": "norm_q",
    "k_norm": "norm_k",
}
# DiT patchify / de-patchify: the official Sequential index 1 is diffusers' bare conv.
DECODER_RENAMES: dict[str, str] = {
    "proj_in.1.": "proj_in_conv.",
    "proj_out.1.": "proj_out_conv.",
}
# Non-persistent in the official model but saved by some exports; recomputed, never loaded.
DROPPED_KEY_SUFFIX = "rotary_emb.inv_freq"
# Persistent buffer in diffusers that the official checkpoint carries as silence_latent.pt.
SILENCE_BUFFER = "silence_latent"


def _attention_pattern(names: list[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(n) for n in names)
    return re.compile(rf"(?<![^.])((?:self|cross)_attn)\.({alternatives})\.")


_TO_DIFFUSERS_ATTENTION = _attention_pattern(list(ATTENTION_RENAMES))
_TO_OFFICIAL_ATTENTION = _attention_pattern(list(ATTENTION_RENAMES.values()))
_OFFICIAL_ATTENTION_NAMES = {v: k for k, v in ATTENTION_RENAMES.items()}


def official_to_diffusers_key(key: str) -> tuple[str, str] | None:
    """``(component, diffusers key)`` for an official key; None for keys that are dropped.

    Raises CheckpointError for a key with no known home.
    """
    if key.endswith(DROPPED_KEY_SUFFIX):
        return None
    if key == NULL_CONDITION_KEY:
        return NULL_CONDITION_TARGET
    for prefix, component in COMPONENT_PREFIXES.items():
        if key.startswith(prefix):
            inner = key[len(prefix) :]
            if component == "transformer":
                for official, ours in DECODER_RENAMES.items():
                    if inner.startswith(official):
                        inner = ours + inner[len(official) :]
            inner = _TO_DIFFUSERS_ATTENTION.sub(lambda m: f"{m[1]}.{ATTENTION_RENAMES[m[2]]}.", inner)
            return component, inner
    raise CheckpointError(f"unexpected key {key!r}: not under {sorted(COMPONENT_PREFIXES)} or {NULL_CONDITION_KEY!r}")


def diffusers_to_official_key(component: str, key: str) -> str:
    """The official checkpoint key for a diffusers parameter of ``component``."""
    if (component, key) == NULL_CONDITION_TARGET:
        return NULL_CONDITION_KEY
    prefixes = {c: p for p, c in COMPONENT_PREFIXES.items()}
    if component not in prefixes:
        raise CheckpointError(f"unknown component {component!r}; expected one of {sorted(prefixes)}")
    if component == "transformer":
        for official, ours in DECODER_RENAMES.items():
            if key.startswith(ours):
                key = official + key[len(ours) :]
    key = _TO_OFFICIAL_ATTENTION.sub(lambda m: f"{m[1]}.{_OFFICIAL_ATTENTION_NAMES[m[2]]}.", key)
    return prefixes[component] + key


def official_state_dict(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """The official flat state dict for diffusers modules (the inverse of loading)."""
    state: dict[str, torch.Tensor] = {}
    for component, module in modules.items():
        for key, tensor in module.state_dict().items():
            if component == "condition_encoder" and key == SILENCE_BUFFER:
                continue
            state[diffusers_to_official_key(component, key)] = tensor
    return state


def expected_official_shapes(modules: dict[str, nn.Module]) -> dict[str, tuple[int, ...]]:
    """Official key -> shape for every tensor the modules need from model.safetensors."""
    shapes: dict[str, tuple[int, ...]] = {}
    for component, module in modules.items():
        for key, tensor in module.state_dict().items():
            if component == "condition_encoder" and key == SILENCE_BUFFER:
                continue
            shapes[diffusers_to_official_key(component, key)] = tuple(tensor.shape)
    return shapes


def format_keys(keys: list[str], limit: int = 12) -> str:
    """The first ``limit`` keys for an error message, and how many more there are."""
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_official_keys(
    stored: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], source: str
) -> None:
    """Raise CheckpointError unless ``stored`` has exactly the ``expected`` keys and shapes."""
    kept = {k: v for k, v in stored.items() if not k.endswith(DROPPED_KEY_SUFFIX)}
    missing = sorted(set(expected) - set(kept))
    unexpected = sorted(set(kept) - set(expected))
    wrong = sorted(
        f"{k} (checkpoint {list(kept[k])}, config needs {list(expected[k])})"
        for k in set(kept) & set(expected)
        if tuple(kept[k]) != tuple(expected[k])
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {format_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {format_keys(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {format_keys(wrong)}")
    if problems:
        raise CheckpointError(f"{source} does not match its config.json; " + "; ".join(problems))
