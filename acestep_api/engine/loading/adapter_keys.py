"""An official adapter's tensor names -> our DiT's, strictly.

The official trainer wraps the DiT decoder alone in PEFT and saves it, so its keys read
``base_model.model.<decoder module>.<adapter tensor>`` (``...layers.0.self_attn.q_proj.lora_A.weight``).
The decoder's module names are mapped with the checkpoint table (keys.py): ``q_proj`` becomes
diffusers' ``to_q``, ``o_proj`` ``to_out.0``, and so on. A key outside the decoder, or one with
no adapter tensor in it, is an error naming the key.
"""

from __future__ import annotations

from acestep_api.engine.loading.errors import CheckpointError
from acestep_api.engine.loading.keys import ATTENTION_RENAMES, COMPONENT_PREFIXES, official_to_diffusers_key

PEFT_PREFIX = "base_model.model."
DECODER_PREFIX = "decoder."


class AdapterKeyError(ValueError):
    """A stored adapter key with no place in our DiT; the message names it."""


def module_and_tensor(key: str, tuner_prefix: str) -> tuple[str, str]:
    """``(module path, adapter tensor name)`` of an official adapter key, the module path
    already in diffusers' names: ``("layers.0.self_attn.to_q", "lora_A.weight")``."""
    inner = key.removeprefix(PEFT_PREFIX)
    for prefix in COMPONENT_PREFIXES:
        if prefix != DECODER_PREFIX and inner.startswith(prefix):
            raise AdapterKeyError(f"key {key!r} adapts the {prefix[:-1]}; only the DiT decoder takes adapters")
    if not inner.startswith(DECODER_PREFIX):
        inner = DECODER_PREFIX + inner
    parts = inner.split(".")
    split = next((i for i, part in enumerate(parts) if part.startswith(tuner_prefix)), None)
    if split is None or split < 2:
        raise AdapterKeyError(f"key {key!r} names no {tuner_prefix}* adapter tensor of a decoder module")
    # The module path alone goes through the checkpoint table (with a stand-in tensor name,
    # since its renames match "<attn>.<proj>." with the dot after).
    try:
        mapped = official_to_diffusers_key(".".join(parts[:split]) + ".weight")
    except CheckpointError:
        raise AdapterKeyError(f"key {key!r} does not map onto the DiT") from None
    if mapped is None or mapped[0] != "transformer":
        raise AdapterKeyError(f"key {key!r} does not map onto the DiT decoder")
    return mapped[1].removesuffix(".weight"), ".".join(parts[split:])


def rename_pattern(pattern: str) -> str:
    """A module-name pattern of an adapter config (a rank_pattern or alpha_pattern key) in
    diffusers' names: each official projection name replaced by ours."""
    return ".".join(ATTENTION_RENAMES.get(part, part) for part in pattern.split("."))
