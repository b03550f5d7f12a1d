"""Load a 5 Hz LM checkpoint onto a backend (docs/pipeline.md#lm-loading).

An LM folder is a plain transformers causal-LM folder (``config.json``, ``model.safetensors``
or a sharded index, tokenizer files, ``chat_template.jinja``), loaded from local files only;
:mod:`acestep_api.engine.lm.folders` finds it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from acestep_api.engine.loading.errors import LMLoadError
from acestep_api.engine.lm.folders import NOT_AN_LM, is_lm_folder
from acestep_api.engine.lm.tokenizer import check_vocabulary, load_lm_tokenizer
from acestep_api.engine.lm.types import LMBackend

LM_BACKENDS = ("transformers", "vllm")


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
        raise LMLoadError(f"{folder} is not an LM checkpoint ({NOT_AN_LM})")
    if backend == "vllm":
        from acestep_api.engine.lm.backend_vllm import load_vllm_backend  # optional extra, imported only here

        return load_vllm_backend(folder, device, lm_dtype(device))

    from acestep_api.engine.lm.backend_transformers import TransformersBackend

    tokenizer = load_lm_tokenizer(folder)
    model = _load_transformers_model(folder, device, lm_dtype(device))
    check_vocabulary(folder, tokenizer, model.config.vocab_size)
    return TransformersBackend(model, tokenizer, folder.name, device)


def _load_transformers_model(folder: Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise LMLoadError(f"cannot load the LM from {folder}: {exc}") from exc
    return model.to(device).eval().requires_grad_(False)
