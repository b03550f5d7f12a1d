"""One DiT checkpoint loaded from its folder, in the official or the diffusers layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from acestep_api.engine.loading.config import complete_official_config, official_config_from_diffusers, read_json
from acestep_api.engine.loading.errors import CheckpointError
from acestep_api.engine.loading.folders import is_diffusers_layout, is_official_layout
from acestep_api.engine.loading.keys import (
    SILENCE_BUFFER,
    check_official_keys,
    expected_official_shapes,
    format_keys,
    official_to_diffusers_key,
)
from acestep_api.engine.loading.modules import build_dit_modules, parameters_on_meta, ready_for_inference
from acestep_api.engine.layout import (
    CONFIG_FILE,
    DIFFUSERS_SUBFOLDERS,
    OFFICIAL_WEIGHTS,
    OFFICIAL_WEIGHTS_INDEX,
    SILENCE_LATENT_FILE,
)
from acestep_api.engine.request import TASK_TYPES, TURBO_TASK_TYPES


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


def _weight_files(folder: Path) -> dict[str, Path]:
    """Official key -> the safetensors file that holds it."""
    single = folder / OFFICIAL_WEIGHTS
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as handle:
            return {key: single for key in handle.keys()}
    index = read_json(folder / OFFICIAL_WEIGHTS_INDEX)
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


def _load_official(folder: Path, device: torch.device, dtype: torch.dtype) -> DitCheckpoint:
    from safetensors import safe_open

    config = complete_official_config(read_json(folder / CONFIG_FILE))
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
        ready_for_inference(module, device, dtype)
        leftover = [n for n, p in module.named_parameters() if p.device.type == "meta"]
        if leftover:  # cannot happen after the key check; guards against a diffusers change
            raise CheckpointError(f"{folder}: {component} parameters not loaded: {format_keys(leftover)}")

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
        if not (sub / CONFIG_FILE).is_file():
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
        modules[component] = ready_for_inference(module, device, dtype)

    config = official_config_from_diffusers(modules)
    return _checkpoint(folder, config, modules)
