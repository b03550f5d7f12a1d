"""The contracts between the LM's parts: sampling settings, token constraints and backends.

A backend turns prompt texts into token ids. It knows nothing about music: what may be
generated is decided by a :class:`TokenConstraint`, and what the tokens mean is decided by
the planner. The same prompts, constraints and parsing therefore run on every backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the HTTP layer imports SamplingParams without loading torch
    import torch

NO_NEGATIVE_PROMPT = "NO USER INPUT"  # the official sentinel for "no negative prompt"


@dataclass(frozen=True)
class SamplingParams:
    """Per-call sampling settings (docs/pipeline.md#lm-sampling). ``None`` or <= 0 disables top-k;
    ``None``, 0 or >= 1 for top-p means the official fallback of 0.9."""

    temperature: float = 0.85
    cfg_scale: float = 2.5
    top_k: int | None = None
    top_p: float | None = 0.9
    repetition_penalty: float = 1.0


class TokenConstraint(Protocol):
    """Decides, step by step, which tokens each conditional row may produce.

    Rows are the batch items in the order of the prompts. A backend calls :meth:`apply` on the
    (CFG-combined) logits of every step, samples, then calls :meth:`advance` with the chosen
    tokens, which it also appends to the matching unconditional rows.
    """

    def apply(self, scores: "torch.Tensor") -> "torch.Tensor":
        """``scores`` is ``[B, V]`` float; return it with disallowed tokens set to ``-inf``."""
        ...

    def advance(self, tokens: "torch.Tensor") -> None:
        """``tokens`` is ``[B]``, the ids just sampled for each row."""
        ...


class LMBackend(Protocol):
    """A loaded 5 Hz LM that can sample continuations of chat-formatted prompts."""

    name: str  # "transformers" or "vllm"
    model_name: str  # the checkpoint folder's name, e.g. "acestep-5Hz-lm-1.7B"
    tokenizer: Any  # a transformers fast tokenizer with the checkpoint's chat template

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
        """Sample one continuation per prompt and return its token ids (the stop token included
        when one ended the row).

        - ``uncond_prompts`` (same length as ``prompts``) turns on classifier-free guidance:
          ``logits = u + cfg_scale * (c - u)``; the token chosen for a row is appended to both
          its conditional and its unconditional sequence.
        - ``seeds`` (same length) makes each row's sampling reproducible on this backend.
        - A row stops at any token in ``stop_token_ids`` or after ``max_new_tokens``.
        """
        ...
