"""The vllm backend (optional extra ``pip install acestep-api[vllm]``; CUDA GPUs only).

Same prompts, same constraints and same parsing as the transformers backend; vllm does the
batching, paged KV cache and sampling. Constraints run through vllm's (V1) batch-level
logits-processor interface: one processor, loaded with the engine, looks up which rows of the
batch belong to which :meth:`VllmBackend.generate` call and applies that call's constraint.

Limits, by design of vllm's public API:

- **No classifier-free guidance.** vllm samples every sequence on its own, so a conditional
  and an unconditional sequence cannot share one sampled token. ``supports_cfg`` says so
  (``ServedModels.lm_guidance``): the admission checks refuse a request that asks for
  ``lm_cfg_scale`` other than 1 and give 1 to one that leaves it unset, before it is queued;
  a call with ``cfg_scale != 1`` that gets here anyway fails rather than sampling unguided.
  Use the transformers backend for guided sampling.
- vllm's sampler applies temperature before top-k/top-p and uses its own random numbers:
  outputs differ from the transformers backend even with the same seeds (as the official
  backends differ, docs/pipeline.md#lm-sampling).
- A constraint advances all its rows together, so a call's rows must decode in lock-step
  (they do when vllm schedules them together, which is the normal case for one call); a
  call whose rows drift apart fails with a clear error instead of decoding wrongly.
"""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from acestep_api.engine.loading.errors import LMLoadError
from acestep_api.engine.limits import LM_CONTEXT_TOKENS
from acestep_api.engine.lm.backend_transformers import effective_top_p
from acestep_api.engine.lm.budget import new_token_budget
from acestep_api.engine.lm.tokenizer import check_vocabulary, load_lm_tokenizer
from acestep_api.engine.lm.types import SamplingParams, TokenConstraint
from acestep_api.engine.request import GenerationError


ROW_TAG = "acestep_row"  # SamplingParams.extra_args key: (call id, row)
# Prompt included. The official value is 4096, which a 600 s song's 3,000 codes after long
# lyrics overrun; ours is the budget every LM call keeps (budget.py), on either backend.
MAX_MODEL_LEN = LM_CONTEXT_TOKENS
GPU_MEMORY_UTILIZATION = 0.5  # leave room for the DiT and VAE on the same GPU
NO_GUIDANCE = "the vllm LM backend has no classifier-free guidance; lm_cfg_scale must be 1 (got {scale:g})"


def load_vllm_backend(folder: Path, device: torch.device, dtype: torch.dtype) -> "VllmBackend":
    """A :class:`VllmBackend` on ``folder``; :class:`LMLoadError` naming every missing requirement."""
    problems = []
    try:
        import vllm  # noqa: F401
    except ImportError:
        problems.append("vllm is not installed (pip install 'acestep-api[vllm]')")
    if device.type != "cuda" or not torch.cuda.is_available():
        problems.append(f"it needs a CUDA GPU (device is {device}, CUDA available: {torch.cuda.is_available()})")
    if problems:
        raise LMLoadError("the vllm LM backend cannot run here: " + "; ".join(problems) + ". Use backend 'transformers'.")

    # The logits processor must live in this process to reach the calls' constraints.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM

    tokenizer = load_lm_tokenizer(folder)
    try:
        engine = LLM(
            model=str(folder),
            tokenizer=str(folder),
            dtype=dtype,
            max_model_len=MAX_MODEL_LEN,
            gpu_memory_utilization=GPU_MEMORY_UTILIZATION,
            logits_processors=[_constraint_processor_class()],
            seed=0,
        )
    except Exception as exc:  # vllm raises many kinds; all mean "not loaded"
        raise LMLoadError(f"vllm could not load the LM from {folder}: {exc}") from exc
    vocab_size = int(engine.llm_engine.model_config.get_vocab_size())
    check_vocabulary(folder, tokenizer, vocab_size)
    return VllmBackend(engine, tokenizer, folder.name, vocab_size)


# --------------------------------------------------------------------------- #
#  Constraints inside vllm's batch                                             #
# --------------------------------------------------------------------------- #


@dataclass
class _Call:
    """One generate() call's constraint and what its rows have produced so far."""

    constraint: TokenConstraint
    rows: int
    pad_id: int
    outputs: dict[int, list[int]] = field(default_factory=dict)  # row -> vllm's live output list
    advanced: int = 0  # steps already passed to constraint.advance

    def apply(self, logits: torch.Tensor, members: list[tuple[int, int]]) -> None:
        """Mask ``logits`` (vllm's batch, in place) at ``members`` = [(batch index, row)]."""
        lengths = {len(self.outputs[row]) for _, row in members}
        step = lengths.pop() if len(lengths) == 1 else -1
        if step < self.advanced:  # rows at different steps, or a row that started late
            raise RuntimeError("the rows of one constrained vllm call drifted out of lock-step")
        while self.advanced < step:
            tokens = [self._token(row, self.advanced) for row in range(self.rows)]
            self.constraint.advance(torch.tensor(tokens, dtype=torch.long))
            self.advanced += 1
        scores = torch.zeros(self.rows, logits.shape[-1], dtype=torch.float32, device=logits.device)
        index = torch.tensor([i for i, _ in members], device=logits.device)
        rows = torch.tensor([row for _, row in members], device=logits.device)
        scores[rows] = logits[index].float()
        logits[index] = self.constraint.apply(scores)[rows].to(logits.dtype)

    def _token(self, row: int, step: int) -> int:
        produced = self.outputs.get(row, [])
        return produced[step] if step < len(produced) else self.pad_id  # finished rows are padded


_CALLS: dict[int, _Call] = {}
_CALL_IDS = itertools.count()
_CALLS_LOCK = threading.Lock()


def _constraint_processor_class() -> type:
    """vllm's LogitsProcessor subclass, built on first use so that vllm stays an optional import."""
    from vllm.v1.sample.logits_processor import LogitsProcessor, MoveDirectionality

    class ConstraintLogitsProcessor(LogitsProcessor):
        def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool):
            self.members: dict[int, tuple[int, int]] = {}  # batch index -> (call id, row)

        @classmethod
        def validate_params(cls, sampling_params: Any) -> None:
            return None

        def is_argmax_invariant(self) -> bool:
            return False

        def update_state(self, batch_update: Any) -> None:
            if batch_update is None:
                return
            for index in batch_update.removed:
                self.members.pop(index, None)
            for added in batch_update.added:
                index, params, output_ids = added[0], added[1], added[-1]
                tag = (params.extra_args or {}).get(ROW_TAG) if params is not None else None
                if tag is None or tag[0] not in _CALLS:
                    self.members.pop(index, None)
                    continue
                self.members[index] = (tag[0], tag[1])
                _CALLS[tag[0]].outputs[tag[1]] = output_ids
            for a, b, direction in batch_update.moved:
                moved_a, moved_b = self.members.pop(a, None), self.members.pop(b, None)
                if moved_a is not None:
                    self.members[b] = moved_a
                if moved_b is not None and direction == MoveDirectionality.SWAP:
                    self.members[a] = moved_b

        def apply(self, logits: torch.Tensor) -> torch.Tensor:
            by_call: dict[int, list[tuple[int, int]]] = {}
            for index, (call_id, row) in self.members.items():
                by_call.setdefault(call_id, []).append((index, row))
            for call_id, members in by_call.items():
                call = _CALLS.get(call_id)
                if call is not None:
                    call.apply(logits, members)
            return logits

    return ConstraintLogitsProcessor


# --------------------------------------------------------------------------- #
#  Backend                                                                     #
# --------------------------------------------------------------------------- #


class VllmBackend:
    """A 5 Hz LM served by a vllm engine (see the module doc for its limits)."""

    name = "vllm"
    supports_cfg = False

    def __init__(self, engine: Any, tokenizer: Any, model_name: str, vocab_size: int):
        self.engine = engine
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.vocab_size = vocab_size
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)

    def generate(
        self,
        prompts: list[str],
        *,
        params: SamplingParams,
        max_new_tokens: int,
        stop_token_ids: set[int],
        uncond_prompts: list[str] | None = None,
        constraint: TokenConstraint | None = None,
        seeds: list[int] | None = None,
    ) -> list[list[int]]:
        rows = len(prompts)
        if seeds is not None and len(seeds) != rows:
            raise ValueError(f"seeds has {len(seeds)} entries; it must match prompts ({rows})")
        if uncond_prompts is not None and params.cfg_scale != 1.0:
            raise GenerationError(NO_GUIDANCE.format(scale=params.cfg_scale))
        if rows == 0 or max_new_tokens <= 0:
            return [[] for _ in range(rows)]
        from vllm import SamplingParams as VllmSamplingParams

        # Each row's own budget: vllm refuses a prompt past max_model_len with an error of its own.
        prompt_lengths = [len(ids) for ids in self.tokenizer(list(prompts))["input_ids"]]
        budgets = [new_token_budget(length, max_new_tokens, MAX_MODEL_LEN) for length in prompt_lengths]
        call_id = next(_CALL_IDS)
        if constraint is not None:
            with _CALLS_LOCK:
                _CALLS[call_id] = _Call(constraint, rows, self.pad_id)
        try:
            requests = [
                VllmSamplingParams(
                    n=1,
                    temperature=max(params.temperature, 0.0),
                    top_p=effective_top_p(params.top_p),
                    top_k=params.top_k if params.top_k and params.top_k > 0 else -1,
                    repetition_penalty=params.repetition_penalty,
                    max_tokens=budgets[row],
                    stop_token_ids=sorted(stop_token_ids),
                    ignore_eos=True,  # only the caller's stop tokens end a row
                    seed=None if seeds is None else int(seeds[row]),
                    skip_special_tokens=False,
                    extra_args={ROW_TAG: (call_id, row)} if constraint is not None else None,
                )
                for row in range(rows)
            ]
            results = self.engine.generate(list(prompts), requests, use_tqdm=False)
        finally:
            with _CALLS_LOCK:
                _CALLS.pop(call_id, None)
        return [self._token_ids(result, stop_token_ids) for result in results]

    @staticmethod
    def _token_ids(result: Any, stop_token_ids: set[int]) -> list[int]:
        completion = result.outputs[0]
        tokens = list(completion.token_ids)
        stop = getattr(completion, "stop_reason", None)
        if isinstance(stop, int) and stop in stop_token_ids and (not tokens or tokens[-1] != stop):
            tokens.append(stop)  # keep the contract: the stop token ends the row's ids
        return tokens
