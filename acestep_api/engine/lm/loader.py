"""Find and load a 5 Hz LM checkpoint onto a backend (docs/pipeline.md#lm-loading).

An LM folder is a plain transformers causal-LM folder (``config.json``, ``model.safetensors``
or a sharded index, tokenizer files, ``chat_template.jinja``), loaded from local files only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from acestep_api.engine.checkpoints import CheckpointError
from acestep_api.engine.lm.types import LMBackend
from acestep_api.engine.lm.vocab import AUDIO_CODE_COUNT, LMVocab

LM_MODEL_NAMES = ("acestep-5Hz-lm-0.6B", "acestep-5Hz-lm-1.7B", "acestep-5Hz-lm-4B")
LM_BACKENDS = ("transformers", "vllm")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


class LMLoadError(CheckpointError):
    """An LM folder is missing or unusable, or the chosen backend cannot run here."""


def is_lm_folder(folder: Path) -> bool:
    """A causal-LM folder: a config naming a ``…ForCausalLM`` architecture, weights and a tokenizer."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not any((folder / name).is_file() for name in WEIGHT_FILES):
        return False
    if not (folder / "tokenizer.json").is_file():
        return False
    try:
        architectures = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(str(name).endswith("ForCausalLM") for name in architectures)


def list_lm_folders(checkpoint_dir: str | Path) -> list[str]:
    """Names of the LM checkpoints directly under ``checkpoint_dir``."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_lm_folder(p))


def resolve_lm_folder(checkpoint_dir: str | Path, name_or_path: str | Path) -> Path:
    """A configured LM: a folder name under ``checkpoint_dir`` (e.g. ``acestep-5Hz-lm-1.7B``), or a path."""
    if not str(name_or_path).strip():
        raise LMLoadError(f"no LM named (empty name); known names: {', '.join(LM_MODEL_NAMES)}")
    candidates = [Path(checkpoint_dir) / name_or_path, Path(name_or_path)]
    for candidate in candidates:
        if is_lm_folder(candidate):
            return candidate
    for candidate in candidates:
        if candidate.is_dir():
            raise LMLoadError(
                f"{candidate} exists but is not an LM checkpoint (needs config.json naming a *ForCausalLM "
                f"architecture, {' or '.join(WEIGHT_FILES)}, and tokenizer.json)"
            )
    available = list_lm_folders(checkpoint_dir)
    raise LMLoadError(
        f"LM {str(name_or_path)!r} not found under {checkpoint_dir} nor as a path; "
        f"LMs under {checkpoint_dir}: {', '.join(available) if available else 'none'} "
        f"(official names: {', '.join(LM_MODEL_NAMES)})"
    )


def lm_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (and XPU), fp32 elsewhere: autoregressive decoding on CPU/MPS gains nothing from
    half precision, and bf16 weights cast to fp16 can overflow."""
    return torch.bfloat16 if device.type in ("cuda", "xpu") else torch.float32


def load_lm(folder: str | Path, device: torch.device, backend: str = "transformers") -> LMBackend:
    """The LM in ``folder`` on ``device``, ready to sample with ``backend`` (one of :data:`LM_BACKENDS`)."""
    if backend not in LM_BACKENDS:
        raise LMLoadError(f"unknown LM backend {backend!r}; allowed: {', '.join(LM_BACKENDS)}")
    folder = Path(folder)
    device = torch.device(device)
    if not is_lm_folder(folder):
        raise LMLoadError(
            f"{folder} is not an LM checkpoint (needs config.json naming a *ForCausalLM architecture, "
            f"{' or '.join(WEIGHT_FILES)}, and tokenizer.json)"
        )
    if backend == "vllm":
        from acestep_api.engine.lm.backend_vllm import load_vllm_backend  # optional extra, imported only here

        return load_vllm_backend(folder, device, lm_dtype(device))

    from acestep_api.engine.lm.backend_transformers import TransformersBackend

    tokenizer = load_lm_tokenizer(folder)
    model = _load_transformers_model(folder, device, lm_dtype(device))
    check_vocabulary(folder, tokenizer, model.config.vocab_size)
    return TransformersBackend(model, tokenizer, folder.name, device)


def load_lm_tokenizer(folder: Path):
    """The folder's fast tokenizer with its chat template, offline (a few seconds: 64,000 added tokens)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise LMLoadError(f"cannot load the LM tokenizer from {folder}: {exc}") from exc
    if not getattr(tokenizer, "chat_template", None):
        raise LMLoadError(f"the LM tokenizer in {folder} has no chat template (chat_template.jinja)")
    return tokenizer


def check_vocabulary(folder: Path, tokenizer, vocab_size: int) -> LMVocab:
    """The audio-code tokens must exist, be contiguous and fit in the model's logits."""
    try:
        vocab = LMVocab.from_tokenizer(tokenizer, vocab_size)
    except ValueError as exc:
        raise LMLoadError(f"{folder} is not a 5 Hz LM: {exc}") from exc
    if vocab.code_count != AUDIO_CODE_COUNT:
        raise LMLoadError(
            f"{folder}: only <|audio_code_0|> to <|audio_code_{vocab.code_count - 1}|> have contiguous ids; "
            f"a 5 Hz LM has {AUDIO_CODE_COUNT}"
        )
    if vocab.first_code_id + vocab.code_count > vocab_size or len(tokenizer) > vocab_size:
        raise LMLoadError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab_size}"
        )
    return vocab


def _load_transformers_model(folder: Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise LMLoadError(f"cannot load the LM from {folder}: {exc}") from exc
    return model.to(device).eval().requires_grad_(False)
