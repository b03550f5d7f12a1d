"""The official ``config.json`` of a DiT: its defaults, reading it, and rebuilding it from
modules loaded in diffusers' layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acestep_api.engine.loading.errors import CheckpointError

if TYPE_CHECKING:
    from torch import nn

# The official AceStepConfig constructor defaults: a saved config.json may omit any of
# these, and the official code then uses exactly these values.
OFFICIAL_CONFIG_DEFAULTS: dict[str, Any] = {
    "vocab_size": 64003,
    "fsq_dim": 2048,
    "fsq_input_levels": [8, 8, 8, 5, 5, 5],
    "fsq_input_num_quantizers": 1,
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "use_cache": True,
    "tie_word_embeddings": True,
    "rope_theta": 1000000,
    "rope_scaling": None,
    "attention_bias": False,
    "use_sliding_window": True,
    "sliding_window": 128,
    "layer_types": None,  # filled below from num_hidden_layers
    "attention_dropout": 0.0,
    "num_lyric_encoder_hidden_layers": 8,
    "audio_acoustic_hidden_dim": 64,
    "pool_window_size": 5,
    "text_hidden_dim": 1024,
    "in_channels": 256,  # the class default; every shipped config.json says 192
    "data_proportion": 0.5,
    "timestep_mu": -0.4,
    "timestep_sigma": 1.0,
    "timbre_hidden_dim": 64,
    "num_timbre_encoder_hidden_layers": 4,
    "timbre_fix_frame": 750,
    "patch_size": 2,
    "num_attention_pooler_hidden_layers": 2,
    "num_audio_decoder_hidden_layers": 24,
    "model_version": "turbo",
}


def alternating_layer_types(count: int) -> list[str]:
    """The official default attention pattern: even layers sliding, odd layers full."""
    return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(count)]


def complete_official_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill the fields a config.json left out with the official defaults."""
    config = {**OFFICIAL_CONFIG_DEFAULTS, **raw}
    if config.get("layer_types") is None:
        config["layer_types"] = alternating_layer_types(config["num_hidden_layers"])
    if "is_turbo" not in raw:
        config["is_turbo"] = config.get("model_version") == "turbo"
    return config


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file of a checkpoint; CheckpointError when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def official_config_from_diffusers(modules: dict[str, nn.Module]) -> dict[str, Any]:
    """An official-style config dict for modules loaded from the diffusers layout."""
    dit = dict(modules["transformer"].config)
    encoder = dict(modules["condition_encoder"].config)
    tokenizer = dict(modules["audio_tokenizer"].config)
    raw: dict[str, Any] = {
        key: dit[key]
        for key in (
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "in_channels", "audio_acoustic_hidden_dim", "patch_size",
            "rope_theta", "attention_bias", "attention_dropout", "rms_norm_eps", "sliding_window",
            "layer_types", "is_turbo", "model_version",
        )
        if dit.get(key) is not None
    }
    raw["num_audio_decoder_hidden_layers"] = dit["num_hidden_layers"]
    for key in ("text_hidden_dim", "timbre_hidden_dim", "num_lyric_encoder_hidden_layers",
                "num_timbre_encoder_hidden_layers"):
        raw[key] = encoder[key]
    for key in ("pool_window_size", "fsq_dim", "fsq_input_levels", "fsq_input_num_quantizers",
                "num_attention_pooler_hidden_layers"):
        raw[key] = tokenizer[key]
    if encoder["hidden_size"] != dit["hidden_size"]:
        raw["encoder_hidden_size"] = encoder["hidden_size"]
        raw["encoder_intermediate_size"] = encoder["intermediate_size"]
        raw["encoder_num_attention_heads"] = encoder["num_attention_heads"]
        raw["encoder_num_key_value_heads"] = encoder["num_key_value_heads"]
    return complete_official_config(raw)
