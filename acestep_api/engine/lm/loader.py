"""Load a 5 Hz LM checkpoint onto a backend (docs/pipeline.md#lm-loading).

An LM folder is a plain transformers causal-LM folder (``config.json``, ``model.safetensors``
or a sharded index, tokenizer files, ``chat_template.jinja``), loaded from local files only;
:mod:`acestep_api.engine.lm.folders` finds it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from acestep_api.engine.loading.errors import LMLoadError
from acestep_api.engine.lm.folders import NOT_AN_LM, is_lm_folder
from acestep_api.engine.lm.tokenizer import check_vocabulary, load_lm_tokenizer
from acestep_api.engine.lm.types import LMBackend

log = logging.getLogger(__name__)

LM_BACKENDS = ("transformers", "vllm")
COMPILE_MODES = ("auto", "on", "off")


def compiles_on(device: torch.device, mode: str) -> bool:
    """Whether the decoding step is compiled: ``auto`` on CUDA only, where compiling pays off within
    a song; on CPU its warm-up costs more than it saves."""
    if mode not in COMPILE_MODES:
        raise LMLoadError(f"unknown LM compile mode {mode!r}; allowed: {', '.join(COMPILE_MODES)}")
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def lm_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (and XPU), fp32 elsewhere: autoregressive decoding on CPU/MPS gains nothing from
    half precision, and bf16 weights cast to fp16 can overflow."""
    return torch.bfloat16 if device.type in ("cuda", "xpu") else torch.float32


def load_lm(
    folder: str | Path,
    device: torch.device,
    backend: str = "transformers",
    *,
    kv_cache: str = "static",
    compile: str = "auto",
) -> LMBackend:
    """The LM in ``folder`` on ``device``, ready to sample with ``backend`` (one of :data:`LM_BACKENDS`).
    ``kv_cache`` and ``compile`` (one of :data:`COMPILE_MODES`) choose the transformers backend's
    decoding; vllm has its own."""
    if backend not in LM_BACKENDS:
        raise LMLoadError(f"unknown LM backend {backend!r}; allowed: {', '.join(LM_BACKENDS)}")
    folder = Path(folder)
    device = torch.device(device)
    compile_step = compiles_on(device, compile)
    if not is_lm_folder(folder):
        raise LMLoadError(f"{folder} is not an LM checkpoint ({NOT_AN_LM})")
    if backend == "vllm":
        from acestep_api.engine.lm.backend_vllm import load_vllm_backend  # optional extra, imported only here

        return load_vllm_backend(folder, device, lm_dtype(device))

    from acestep_api.engine.lm.backend_transformers import KV_CACHES, TransformersBackend

    if kv_cache not in KV_CACHES:
        raise LMLoadError(f"unknown LM KV cache {kv_cache!r}; allowed: {', '.join(KV_CACHES)}")
    if compile_step and kv_cache != "static":
        log.warning("The LM's decoding step is compiled with the static KV cache only; running it eagerly")
        compile_step = False
    tokenizer = load_lm_tokenizer(folder)
    model = _load_transformers_model(folder, device, lm_dtype(device))
    check_vocabulary(folder, tokenizer, model.config.vocab_size)
    return TransformersBackend(model, tokenizer, folder.name, device, kv_cache=kv_cache, compile_step=compile_step)


def _load_transformers_model(folder: Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise LMLoadError(f"cannot load the LM from {folder}: {exc}") from exc
    return model.to(device).eval().requires_grad_(False)
