"""Tiny random ACE-Step 1.5 checkpoints, written in the official on-disk layout.

They let the whole server (loading, conditioning, sampling, decoding) run on a laptop CPU
in moments, through exactly the code that loads the real weights. The audio they make
is noise-like: they are for demos and tests, never for music. A marker file at the root
(:data:`DEMO_MARKER`) lets the server say so.

Layout written under ``root`` (same names as the real ``checkpoints/`` folder)::

    acestep-v15-turbo/      config.json, model.safetensors, silence_latent.pt
    acestep-v15-base/       same, non-turbo
    vae/                    AutoencoderOobleck (48 kHz stereo, hop 1920 -> 25 latent frames/s)
    Qwen3-Embedding-0.6B/   tiny Qwen3Model + an offline byte-level BPE tokenizer
    acestep-5Hz-lm-0.6B/    tiny Qwen3ForCausalLM 5 Hz LM with all 64,000 audio-code tokens
                            and a Qwen3-style chat template (see :mod:`acestep_api.engine.tiny_lm`)
    loras/demo-lora/        a tiny LoRA for the DiT, as the official trainer saves one with PEFT
    DEMO_CHECKPOINTS        marker

The writers of each part (:func:`write_dit`, :func:`write_vae`, :func:`write_text_encoder`)
also take other sizes: bench/bench_gpu.py writes the official sizes with random weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from acestep_api.engine.loading.config import alternating_layer_types, complete_official_config
from acestep_api.engine.loading.keys import diffusers_to_official_key, official_state_dict
from acestep_api.engine.loading.modules import build_dit_modules, parameters_on_meta
from acestep_api.engine.demo_tokenizer import BPE_TRAINING_TEXT, ENDOFTEXT, train_byte_level_bpe
from acestep_api.engine.demo_weights import randomize_parameters
from acestep_api.engine.layout import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    BASE_FOLDER,
    CONFIG_FILE,
    DEFAULT_LM_FOLDER,
    DEMO_ADAPTER,
    DEMO_MARKER,
    LORA_FOLDER,
    OFFICIAL_WEIGHTS,
    SILENCE_LATENT_FILE,
    TEXT_ENCODER_FOLDER,
    TURBO_FOLDER,
    VAE_FOLDER,
)
from acestep_api.engine.lm.vocab import audio_code_token
from acestep_api.engine.tiny_lm import write_tiny_lm

# Real latents have 64 channels; 4 keeps the VAE's full-rate convolutions cheap on CPU.
LATENT_CHANNELS = 4
TEXT_HIDDEN_DIM = 32
SILENCE_FRAMES = 15000  # 600 s at 25 Hz, like the real silence_latent.pt
AUDIO_CODE_TOKENS = 1000

# Official AceStepConfig field names (the golden tiny config's set), tiny values.
TINY_DIT_CONFIG: dict[str, Any] = {
    "architectures": ["AceStepConditionGenerationModel"],
    "model_type": "acestep",
    "dtype": "float32",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "audio_acoustic_hidden_dim": LATENT_CHANNELS,
    "data_proportion": 0.5,
    "fsq_dim": 64,
    "fsq_input_levels": [8, 8, 8, 5, 5, 5],
    "fsq_input_num_quantizers": 1,
    "head_dim": 16,
    "hidden_act": "silu",
    "hidden_size": 64,
    "in_channels": 3 * LATENT_CHANNELS,  # noisy + source + chunk mask
    "initializer_range": 0.02,
    "intermediate_size": 128,
    "layer_types": ["sliding_attention", "full_attention"],
    "max_position_embeddings": 32768,
    "num_attention_heads": 4,
    "num_attention_pooler_hidden_layers": 2,
    "num_audio_decoder_hidden_layers": 2,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "num_lyric_encoder_hidden_layers": 2,
    "num_timbre_encoder_hidden_layers": 2,
    "patch_size": 2,
    "pool_window_size": 5,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": 16,
    "text_hidden_dim": TEXT_HIDDEN_DIM,
    "tie_word_embeddings": True,
    "timbre_fix_frame": 750,
    "timbre_hidden_dim": LATENT_CHANNELS,
    "timestep_mu": -0.4,
    "timestep_sigma": 1.0,
    "use_cache": True,
    "use_sliding_window": True,
    "vocab_size": 64003,
}

# A larger random DiT for benchmarks (``dit_overrides``): real-model proportions at a
# quarter of the width and a third of the depth; latent and text dims stay tiny so the
# same VAE and text encoder fit.
MID_SIZE_DIT: dict[str, Any] = {
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 8,
    "num_audio_decoder_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "num_lyric_encoder_hidden_layers": 4,
    "num_timbre_encoder_hidden_layers": 2,
    "fsq_dim": 512,
    "sliding_window": 128,
}

TINY_VAE_CONFIG: dict[str, Any] = {
    "sampling_rate": 48000,
    "audio_channels": 2,
    "downsampling_ratios": [2, 4, 4, 6, 10],  # product 1920, as real
    "channel_multiples": [1, 2, 2, 4, 4],
    "encoder_hidden_size": 2 * LATENT_CHANNELS,  # mean + scale
    "decoder_channels": 2,
    "decoder_input_channels": LATENT_CHANNELS,
}

TINY_TEXT_ENCODER_DIMS: dict[str, Any] = {
    "hidden_size": TEXT_HIDDEN_DIM,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 4096,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}

def write_tiny_checkpoints(root: Path, seed: int = 0, *, dit_overrides: dict[str, Any] | None = None) -> Path:
    """Write the tiny demo checkpoints under ``root`` and return ``root``.

    Deterministic for a given ``seed``; takes a few seconds. Existing files of the
    same names are overwritten. ``dit_overrides`` replaces DiT config fields (e.g.
    :data:`MID_SIZE_DIT`); the latent and text dims must stay those of the tiny VAE and
    text encoder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    overrides = dict(dit_overrides or {})
    write_text_encoder(root / TEXT_ENCODER_FOLDER, seed)
    write_tiny_lm(root / DEFAULT_LM_FOLDER, seed)
    write_vae(root / VAE_FOLDER, seed)
    write_dit(root / TURBO_FOLDER, {**overrides, "is_turbo": True, "model_version": "turbo"}, seed)
    write_dit(root / BASE_FOLDER, {**overrides, "is_turbo": False, "model_version": "base"}, seed + 1)
    write_tiny_adapter(root / LORA_FOLDER / DEMO_ADAPTER, seed + 2, dit_overrides=overrides)
    (root / DEMO_MARKER).write_text(
        "Tiny random-weight ACE-Step 1.5 checkpoints written by acestep_api.engine.tiny "
        f"(seed {seed}). They produce noise, not music: for demos and tests only.\n",
        encoding="utf-8",
    )
    return root


# The official trainer's default LoRA targets: every attention projection of the decoder.
OFFICIAL_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def write_tiny_adapter(folder: Path, seed: int, *, rank: int = 4, alpha: int = 8, strength: float = 1.0,
                       dit_overrides: dict[str, Any] | None = None) -> Path:
    """A LoRA for the tiny DiT in the official trainer's format: PEFT's adapter_config.json and
    adapter_model.safetensors with the official decoder's key names
    (``base_model.model.layers.0.self_attn.q_proj.lora_A.weight``), random but not zero, so
    the adapter changes the song. ``strength`` scales lora_B (two seeds or strengths make two
    different adapters)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw_config = {**TINY_DIT_CONFIG, **(dit_overrides or {})}
    if "layer_types" not in (dit_overrides or {}):  # as write_dit: one entry per DiT layer
        raw_config["layer_types"] = alternating_layer_types(raw_config["num_hidden_layers"])
    with parameters_on_meta():
        transformer = build_dit_modules(complete_official_config(raw_config))["transformer"]
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in sorted(transformer.named_modules()):
        official = diffusers_to_official_key("transformer", f"{name}.weight").removeprefix("decoder.")
        if not isinstance(module, torch.nn.Linear) or official.split(".")[-2] not in OFFICIAL_LORA_TARGETS:
            continue
        path = "base_model.model." + official.removesuffix(".weight")
        down = torch.randn(rank, module.in_features, generator=generator) / math.sqrt(module.in_features)
        up = strength * torch.randn(module.out_features, rank, generator=generator) / math.sqrt(rank)
        state[f"{path}.lora_A.weight"] = down.contiguous()
        state[f"{path}.lora_B.weight"] = up.contiguous()
    save_file(state, str(folder / ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "FEATURE_EXTRACTION", "r": rank, "lora_alpha": alpha,
        "lora_dropout": 0.0, "target_modules": OFFICIAL_LORA_TARGETS, "bias": "none", "use_rslora": False,
        "use_dora": False, "fan_in_fan_out": False, "init_lora_weights": True, "inference_mode": True,
        "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {}, "layers_to_transform": None,
        "layers_pattern": None, "base_model_name_or_path": None, "revision": None,
    }
    (folder / ADAPTER_CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder
def write_tiny_dit(folder: Path, *, turbo: bool, seed: int = 0) -> Path:
    """One more tiny DiT folder (e.g. ``acestep-v15-sft`` beside the demo checkpoints), for
    servers that load models at run time."""
    variant = {"is_turbo": True, "model_version": "turbo"} if turbo else {"is_turbo": False, "model_version": "base"}
    write_dit(Path(folder), variant, seed)
    return Path(folder)


def is_demo_checkpoint(path: Path) -> bool:
    """True if ``path`` is (inside) a folder written by :func:`write_tiny_checkpoints`."""
    path = Path(path)
    return any((folder / DEMO_MARKER).is_file() for folder in (path, *path.parents[:2]))


# --------------------------------------------------------------------------- #
#  DiT                                                                         #
# --------------------------------------------------------------------------- #


def write_dit(folder: Path, variant: dict[str, Any], seed: int, dtype: torch.dtype = torch.float32) -> None:
    """A DiT folder: :data:`TINY_DIT_CONFIG` with ``variant``'s fields replaced, random weights
    stored in ``dtype``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    raw_config = {**TINY_DIT_CONFIG, **variant}
    if "layer_types" not in variant:  # one entry per DiT layer, as official configs have
        raw_config["layer_types"] = alternating_layer_types(raw_config["num_hidden_layers"])
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # diffusers' own init, overwritten below but kept reproducible
        modules = build_dit_modules(complete_official_config(raw_config))
    for name in sorted(modules):
        randomize_parameters(modules[name], generator)
    state = {key: tensor.to(dtype).contiguous() for key, tensor in official_state_dict(modules).items()}
    save_file(state, str(folder / OFFICIAL_WEIGHTS), metadata={"format": "pt"})

    # Official silence_latent.pt is [1, C, L]: a per-channel offset plus small noise.
    channels = raw_config["timbre_hidden_dim"]
    offset = 0.5 * torch.randn(1, channels, 1, generator=generator)
    silence = offset + 0.1 * torch.randn(1, channels, SILENCE_FRAMES, generator=generator)
    torch.save(silence, folder / SILENCE_LATENT_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(raw_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- #
#  VAE                                                                         #
# --------------------------------------------------------------------------- #


def write_vae(folder: Path, seed: int, config: dict[str, Any] | None = None) -> None:
    """A VAE folder: an ``AutoencoderOobleck`` of ``config`` (:data:`TINY_VAE_CONFIG`), diffusers' init."""
    from diffusers import AutoencoderOobleck

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderOobleck(**(config or TINY_VAE_CONFIG))
    vae.save_pretrained(str(folder), safe_serialization=True)


# --------------------------------------------------------------------------- #
#  Text encoder and tokenizer                                                  #
# --------------------------------------------------------------------------- #


def build_tiny_tokenizer() -> Any:
    """An offline Qwen3-style tokenizer (``tokenizers.Tokenizer``).

    Byte-level BPE trained on a built-in text, the Qwen special tokens, the audio-code
    tokens, and the post-processor of the current Qwen3-Embedding tokenizer that appends
    ``<|endoftext|>`` to every encoded text (docs/pipeline.md#text-encoding).
    """
    from tokenizers import AddedToken, processors

    tokenizer = train_byte_level_bpe(BPE_TRAINING_TEXT, vocab_size=512)
    tokenizer.add_tokens(
        [AddedToken(audio_code_token(i), special=False, normalized=False) for i in range(AUDIO_CODE_TOKENS)]
    )
    eos_id = tokenizer.token_to_id(ENDOFTEXT)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A:0 {ENDOFTEXT}:0",
        pair=f"$A:0 {ENDOFTEXT}:0 $B:1 {ENDOFTEXT}:1",
        special_tokens=[(ENDOFTEXT, eos_id)],
    )
    return tokenizer


def write_text_encoder(folder: Path, seed: int, dims: dict[str, Any] | None = None, vocab_size: int | None = None) -> None:
    """A Qwen3-Embedding-style folder: the tiny tokenizer and a ``Qwen3Model`` of ``dims``
    (:data:`TINY_TEXT_ENCODER_DIMS`) whose embedding table has ``vocab_size`` rows (by default
    the tokenizer's, padded)."""
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    folder.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_tiny_tokenizer(),
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        model_max_length=32768,
    )
    fast.save_pretrained(str(folder))

    vocab_size = vocab_size or 64 * math.ceil(len(fast) / 64)  # padded like real embedding tables
    config = Qwen3Config(
        vocab_size=vocab_size,
        bos_token_id=None,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        **(dims or TINY_TEXT_ENCODER_DIMS),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3Model(config)
    randomize_parameters(model, torch.Generator().manual_seed(seed + 100))
    model.save_pretrained(str(folder), safe_serialization=True)
