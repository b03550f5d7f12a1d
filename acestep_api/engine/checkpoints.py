"""Load ACE-Step 1.5 checkpoints into diffusers' ACE-Step modules.

Two DiT folder layouts are accepted:

* the **official** one (``config.json``, ``model.safetensors`` or a sharded
  ``model.safetensors.index.json``, ``silence_latent.pt``): one flat state dict whose keys
  are renamed to diffusers' names (docs/pipeline.md#dit-folders) and loaded strictly;
* the **diffusers** one (subfolders ``transformer/``, ``condition_encoder/``,
  ``audio_tokenizer/``, ``audio_token_detokenizer/``), loaded with ``from_pretrained``.

The text encoder (Qwen3-Embedding) and the VAE (``AutoencoderOobleck``) are plain
transformers / diffusers folders, loaded from local files only.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from acestep_api.engine.request import TASK_TYPES, TURBO_TASK_TYPES


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, or does not match its config."""


# --------------------------------------------------------------------------- #
#  Official config                                                             #
# --------------------------------------------------------------------------- #

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


# --------------------------------------------------------------------------- #
#  Key mapping (one table, both directions)                                    #
# --------------------------------------------------------------------------- #

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


# --------------------------------------------------------------------------- #
#  Building modules without allocating their weights                           #
# --------------------------------------------------------------------------- #

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


# --------------------------------------------------------------------------- #
#  The loaded DiT                                                              #
# --------------------------------------------------------------------------- #


@dataclass
class DitCheckpoint:
    """One DiT checkpoint, ready to run: its four diffusers modules and its silence latent."""

    name: str
    path: Path
    config: dict[str, Any]
    transformer: nn.Module
    condition_encoder: nn.Module
    audio_tokenizer: nn.Module
    audio_detokenizer: nn.Module
    silence_latent: torch.Tensor  # [1, L, C], the same tensor as condition_encoder.silence_latent
    is_turbo: bool

    @property
    def supported_task_types(self) -> tuple[str, ...]:
        return TURBO_TASK_TYPES if self.is_turbo else TASK_TYPES

    @property
    def modules(self) -> dict[str, nn.Module]:
        return {
            "transformer": self.transformer,
            "condition_encoder": self.condition_encoder,
            "audio_tokenizer": self.audio_tokenizer,
            "audio_detokenizer": self.audio_detokenizer,
        }


OFFICIAL_WEIGHTS = "model.safetensors"
OFFICIAL_WEIGHTS_INDEX = "model.safetensors.index.json"
SILENCE_LATENT_FILE = "silence_latent.pt"
DIFFUSERS_SUBFOLDERS: dict[str, str] = {
    "transformer": "transformer",
    "condition_encoder": "condition_encoder",
    "audio_tokenizer": "audio_tokenizer",
    "audio_detokenizer": "audio_token_detokenizer",
}


def is_diffusers_layout(folder: Path) -> bool:
    return (Path(folder) / "transformer" / "config.json").is_file()


def is_official_layout(folder: Path) -> bool:
    return (Path(folder) / "config.json").is_file() and (
        (Path(folder) / OFFICIAL_WEIGHTS).is_file() or (Path(folder) / OFFICIAL_WEIGHTS_INDEX).is_file()
    )


def load_dit_checkpoint(
    folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> DitCheckpoint:
    """Load a DiT folder in the official or the diffusers layout."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"DiT checkpoint folder {folder} does not exist")
    if is_official_layout(folder):
        return _load_official(folder, torch.device(device), dtype)
    if is_diffusers_layout(folder):
        return _load_diffusers(folder, torch.device(device), dtype)
    present = sorted(p.name for p in folder.iterdir())
    raise CheckpointError(
        f"{folder} is not a DiT checkpoint: expected config.json + {OFFICIAL_WEIGHTS} (official layout) "
        f"or transformer/config.json (diffusers layout); found {present}"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def _weight_files(folder: Path) -> dict[str, Path]:
    """Official key -> the safetensors file that holds it."""
    single = folder / OFFICIAL_WEIGHTS
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as handle:
            return {key: single for key in handle.keys()}
    index = _read_json(folder / OFFICIAL_WEIGHTS_INDEX)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{folder / OFFICIAL_WEIGHTS_INDEX} has no 'weight_map'")
    files = {key: folder / name for key, name in weight_map.items()}
    for shard in sorted(set(files.values())):
        if not shard.is_file():
            raise CheckpointError(f"shard {shard.name} named in {OFFICIAL_WEIGHTS_INDEX} is missing from {folder}")
    return files


def _stored_shapes(files: dict[str, Path]) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for shard in sorted(set(files.values())):
        with safe_open(str(shard), framework="pt") as handle:
            for key in handle.keys():
                if files.get(key) == shard:
                    shapes[key] = tuple(handle.get_slice(key).get_shape())
    return shapes


def _format_keys(keys: list[str], limit: int = 12) -> str:
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
        problems.append(f"missing keys: {_format_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_format_keys(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_format_keys(wrong)}")
    if problems:
        raise CheckpointError(f"{source} does not match its config.json; " + "; ".join(problems))


def _load_silence_latent(folder: Path, channels: int) -> torch.Tensor:
    """silence_latent.pt ``[1, C, L]`` -> ``[1, L, C]`` float32."""
    path = folder / SILENCE_LATENT_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {SILENCE_LATENT_FILE} (needed for text2music without source audio)")
    try:
        tensor = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 3 or tensor.shape[0] != 1 or tensor.shape[1] != channels:
        shape = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise CheckpointError(f"{path} must hold a [1, {channels}, L] tensor; found {shape}")
    return tensor.transpose(1, 2).contiguous().float()


def _finish(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    # Plain nn.Module.to: diffusers' override warns on every dtype cast, and no ACE-Step
    # module asks to keep parts in float32.
    nn.Module.to(module, device=device, dtype=dtype)
    module.eval()
    module.requires_grad_(False)
    return module


def _load_official(folder: Path, device: torch.device, dtype: torch.dtype) -> DitCheckpoint:
    from safetensors import safe_open

    config = complete_official_config(_read_json(folder / "config.json"))
    files = _weight_files(folder)
    with parameters_on_meta():
        modules = build_dit_modules(config)
    check_official_keys(_stored_shapes(files), expected_official_shapes(modules), str(folder))

    # Read one tensor at a time, cast and placed at once: peak memory stays one tensor
    # above the final weights, whatever the file dtype.
    states: dict[str, dict[str, torch.Tensor]] = {name: {} for name in modules}
    for shard in sorted(set(files.values())):
        with safe_open(str(shard), framework="pt", device="cpu") as handle:
            for key in handle.keys():
                if files.get(key) != shard:
                    continue
                target = official_to_diffusers_key(key)
                if target is None:
                    continue
                component, inner = target
                states[component][inner] = handle.get_tensor(key).to(device=device, dtype=dtype)

    silence = _load_silence_latent(folder, config["timbre_hidden_dim"]).to(device=device, dtype=dtype)
    encoder = modules["condition_encoder"]
    encoder.register_buffer(SILENCE_BUFFER, silence, persistent=True)  # resized if L differs
    states["condition_encoder"][SILENCE_BUFFER] = silence

    for component, module in modules.items():
        # assign=True adopts the loaded tensors instead of copying into the meta placeholders.
        module.load_state_dict(states.pop(component), strict=True, assign=True)
        _finish(module, device, dtype)
        leftover = [n for n, p in module.named_parameters() if p.device.type == "meta"]
        if leftover:  # cannot happen after the key check; guards against a diffusers change
            raise CheckpointError(f"{folder}: {component} parameters not loaded: {_format_keys(leftover)}")

    return _checkpoint(folder, config, modules)


def _checkpoint(folder: Path, config: dict[str, Any], modules: dict[str, nn.Module]) -> DitCheckpoint:
    encoder = modules["condition_encoder"]
    return DitCheckpoint(
        name=folder.name,
        path=folder,
        config=config,
        transformer=modules["transformer"],
        condition_encoder=encoder,
        audio_tokenizer=modules["audio_tokenizer"],
        audio_detokenizer=modules["audio_detokenizer"],
        silence_latent=encoder.silence_latent,
        is_turbo=bool(config["is_turbo"]),
    )


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


def _load_diffusers(folder: Path, device: torch.device, dtype: torch.dtype) -> DitCheckpoint:
    from diffusers import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step.modeling_ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )

    classes = {
        "transformer": AceStepTransformer1DModel,
        "condition_encoder": AceStepConditionEncoder,
        "audio_tokenizer": AceStepAudioTokenizer,
        "audio_detokenizer": AceStepAudioTokenDetokenizer,
    }
    modules: dict[str, nn.Module] = {}
    for component, cls in classes.items():
        sub = folder / DIFFUSERS_SUBFOLDERS[component]
        if not (sub / "config.json").is_file():
            raise CheckpointError(f"diffusers-layout checkpoint {folder} lacks {sub.name}/config.json")
        try:
            module, info = cls.from_pretrained(
                str(sub), torch_dtype=dtype, local_files_only=True, output_loading_info=True
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot load {sub}: {exc}") from exc
        problems = {k: v for k, v in info.items() if v}
        if problems:
            raise CheckpointError(f"{sub} does not match its config.json: {problems}")
        modules[component] = _finish(module, device, dtype)

    config = official_config_from_diffusers(modules)
    return _checkpoint(folder, config, modules)


# --------------------------------------------------------------------------- #
#  Text encoder and VAE                                                        #
# --------------------------------------------------------------------------- #


def load_text_encoder(
    folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Any, nn.Module]:
    """``(tokenizer, Qwen3Model)`` from a Qwen3-Embedding-0.6B-style folder, offline."""
    from transformers import AutoModel, AutoTokenizer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"text encoder folder {folder} has no config.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the text encoder from {folder}: {exc}") from exc
    return tokenizer, _finish(model, torch.device(device), dtype)


def load_vae(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """The ``AutoencoderOobleck`` in ``folder``, offline."""
    from diffusers import AutoencoderOobleck

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"VAE folder {folder} has no config.json")
    try:
        vae = AutoencoderOobleck.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the VAE from {folder}: {exc}") from exc
    return _finish(vae, torch.device(device), dtype)


# --------------------------------------------------------------------------- #
#  Finding a DiT folder                                                        #
# --------------------------------------------------------------------------- #


def _is_dit_folder(folder: Path) -> bool:
    return folder.is_dir() and (is_official_layout(folder) or is_diffusers_layout(folder))


def list_dit_folders(checkpoint_dir: str | Path) -> list[str]:
    """Names of the DiT checkpoints directly under ``checkpoint_dir``."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    # The silence latent tells a DiT from the other transformer folders (text encoder, LM).
    return sorted(
        p.name for p in root.iterdir()
        if _is_dit_folder(p) and ((p / SILENCE_LATENT_FILE).is_file() or is_diffusers_layout(p))
    )


def resolve_dit_folder(checkpoint_dir: str | Path, name_or_path: str | Path) -> Path:
    """A configured DiT: a folder name under ``checkpoint_dir``, or a path of its own."""
    if not str(name_or_path).strip():
        raise CheckpointError("no DiT checkpoint named (empty config path)")
    candidates = [Path(checkpoint_dir) / name_or_path, Path(name_or_path)]
    for candidate in candidates:
        if _is_dit_folder(candidate):
            return candidate
    for candidate in candidates:
        if candidate.is_dir():
            raise CheckpointError(
                f"{candidate} exists but is not a DiT checkpoint (needs config.json + {OFFICIAL_WEIGHTS}, "
                "or transformer/config.json)"
            )
    available = list_dit_folders(checkpoint_dir)
    listing = ", ".join(available) if available else "none"
    raise CheckpointError(
        f"DiT checkpoint {str(name_or_path)!r} not found under {checkpoint_dir} nor as a path; "
        f"available under {checkpoint_dir}: {listing}"
    )
