"""The diffusers modules of a checkpoint: built from an official config (without allocating
their weights when asked), and readied for inference once loaded."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import torch
from torch import nn

from acestep_api.engine.loading.errors import CheckpointError


def _encoder_dims(config: dict[str, Any]) -> dict[str, int]:
    """Dims of the condition encoder, tokenizer and detokenizer (narrower than the DiT on XL)."""

    def pick(encoder_field: str, dit_field: str) -> int:
        value = config.get(encoder_field)
        return value if value else config[dit_field]

    return {
        "hidden_size": pick("encoder_hidden_size", "hidden_size"),
        "intermediate_size": pick("encoder_intermediate_size", "intermediate_size"),
        "num_attention_heads": pick("encoder_num_attention_heads", "num_attention_heads"),
        "num_key_value_heads": pick("encoder_num_key_value_heads", "num_key_value_heads"),
        "head_dim": config["head_dim"],
    }


def _layer_types(config: dict[str, Any], count: int) -> list[str]:
    """The first ``count`` attention types; the sub-encoders borrow the DiT's list."""
    types = list(config["layer_types"])
    if len(types) < count:
        raise CheckpointError(
            f"config.json lists {len(types)} layer_types but a sub-encoder needs {count}; "
            "the official model indexes the same list and would fail too."
        )
    if not config.get("use_sliding_window", True):
        # Official configs then carry sliding_window=None: every layer attends fully.
        return ["full_attention"] * count
    return types[:count]


def _shared_attention_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "rope_theta": float(config["rope_theta"]),
        "attention_bias": bool(config["attention_bias"]),
        "attention_dropout": float(config["attention_dropout"]),
        "rms_norm_eps": float(config["rms_norm_eps"]),
        "sliding_window": int(config["sliding_window"] or 0),
    }


def build_dit_modules(config: dict[str, Any]) -> dict[str, nn.Module]:
    """The four diffusers modules for an official config (random or meta parameters)."""
    from diffusers import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step.modeling_ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )

    shared = _shared_attention_kwargs(config)
    enc = _encoder_dims(config)
    pooler_layers = config["num_attention_pooler_hidden_layers"]
    transformer = AceStepTransformer1DModel(
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"],
        num_key_value_heads=config["num_key_value_heads"],
        head_dim=config["head_dim"],
        in_channels=config["in_channels"],
        audio_acoustic_hidden_dim=config["audio_acoustic_hidden_dim"],
        patch_size=config["patch_size"],
        layer_types=_layer_types(config, config["num_hidden_layers"]),
        encoder_hidden_size=enc["hidden_size"],
        is_turbo=bool(config["is_turbo"]),
        model_version=config.get("model_version"),
        **shared,
    )
    condition_encoder = AceStepConditionEncoder(
        **enc,
        text_hidden_dim=config["text_hidden_dim"],
        timbre_hidden_dim=config["timbre_hidden_dim"],
        num_lyric_encoder_hidden_layers=config["num_lyric_encoder_hidden_layers"],
        num_timbre_encoder_hidden_layers=config["num_timbre_encoder_hidden_layers"],
        layer_types=_layer_types(config, config["num_lyric_encoder_hidden_layers"]),
        **shared,
    )
    audio_tokenizer = AceStepAudioTokenizer(
        **enc,
        audio_acoustic_hidden_dim=config["audio_acoustic_hidden_dim"],
        pool_window_size=config["pool_window_size"],
        fsq_dim=config["fsq_dim"],
        fsq_input_levels=list(config["fsq_input_levels"]),
        fsq_input_num_quantizers=config["fsq_input_num_quantizers"],
        num_attention_pooler_hidden_layers=pooler_layers,
        layer_types=_layer_types(config, pooler_layers),
        **shared,
    )
    audio_detokenizer = AceStepAudioTokenDetokenizer(
        **enc,
        audio_acoustic_hidden_dim=config["audio_acoustic_hidden_dim"],
        pool_window_size=config["pool_window_size"],
        num_attention_pooler_hidden_layers=pooler_layers,
        layer_types=_layer_types(config, pooler_layers),
        **shared,
    )
    return {
        "transformer": transformer,
        "condition_encoder": condition_encoder,
        "audio_tokenizer": audio_tokenizer,
        "audio_detokenizer": audio_detokenizer,
    }


_META_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create every nn.Parameter on the meta device while the block runs.

    Buffers stay real: the FSQ's level tables are computed in __init__ and are not in
    any checkpoint. Random initialisation of meta parameters costs nothing, so a 2.4 B
    model builds in moments and its weights are allocated once, when loaded.
    """
    original = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    with _META_PATCH_LOCK:
        nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
        try:
            yield
        finally:
            nn.Module.register_parameter = original  # type: ignore[method-assign]


def ready_for_inference(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """``module`` on ``device`` in ``dtype``, in eval mode, without gradients."""
    # Plain nn.Module.to: diffusers' override warns on every dtype cast, and no ACE-Step
    # module asks to keep parts in float32.
    nn.Module.to(module, device=device, dtype=dtype)
    module.eval()
    module.requires_grad_(False)
    return module
