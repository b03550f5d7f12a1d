"""The transformers backend: the official "pt" sampling loop, batched (docs/pipeline.md#lm-sampling).

All rows (and, with CFG, their unconditional twins) are left-padded into one batch and decoded
together with a KV cache: the prompt runs once, then each step feeds one token per row.

The cache is static by default (transformers' ``StaticCache``): allocated once per call at the
prompt plus the token budget, rounded up to :data:`CACHE_LENGTH_STEP`, so that every decoding
step has the same shapes. That is what lets the step be compiled (``torch.compile`` through
transformers' ``get_compiled_call``, CUDA graphs included) when ``compile`` is on; the prefill
always runs eagerly, its length varies. The dynamic cache (grown by one token a step) stays
selectable; both give the same tokens. Per
step, on the CFG-combined fp32 logits: constraint mask, repetition penalty, top-k, top-p,
temperature, then a ``multinomial`` draw among the kept tokens from each row's own seeded
generator, so a row's tokens depend on its seed, not on the rows beside it. (Up to float
rounding: padding and batch shape change the logits in their last bits, which can, rarely,
move a token of a flat distribution across the top-p boundary.)
"""

from __future__ import annotations

from typing import Any

import torch

from transformers import CompileConfig, DynamicCache, StaticCache

from acestep_api.engine.limits import LM_CONTEXT_TOKENS
from acestep_api.engine.lm.budget import new_token_budget
from acestep_api.engine.lm.types import SamplingParams, TokenConstraint

TOP_P_FALLBACK = 0.9  # the official server's value when top_p is unset, 0 or >= 1
KV_CACHES = ("static", "dynamic")
# Static caches are sized in these steps, so that calls of similar lengths share one compiled
# step (each new shape costs a compilation) at the price of a few unused slots.
CACHE_LENGTH_STEP = 256


# --------------------------------------------------------------------------- #
#  Logit filters (each returns a new tensor; rows are independent)            #
# --------------------------------------------------------------------------- #


def effective_top_p(top_p: float | None) -> float:
    return top_p if top_p is not None and 0.0 < top_p < 1.0 else TOP_P_FALLBACK


def apply_repetition_penalty(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Tokens already in the row (``seen``, ``[B, V]`` bool) get positive scores divided and negative
    ones multiplied by ``penalty`` (the transformers rule)."""
    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalised, scores)


def candidate_tokens(scores: torch.Tensor, top_k: int | None, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens top-k then top-p keep, best first: ``(scores, ids)``, both ``[B, K]``, with ``-inf``
    scores where a row keeps fewer than ``K``.

    Top-k (``None`` or <= 0: off) keeps each row's ``top_k`` best; top-p then keeps the smallest
    set of best tokens whose probability (softmax of the kept scores) exceeds ``top_p``, always
    the best one. Only the head of the ranking is sorted: it grows until every row's nucleus
    fits, which for a trained model's peaked distribution (or a constrained one) is a few dozen
    tokens instead of the whole vocabulary.
    """
    allowed = max(int(torch.isfinite(scores).sum(dim=-1).max()), 1)
    if top_k is not None and 0 < top_k < allowed:
        best, ids = torch.topk(scores, top_k, dim=-1)
        return _nucleus(best, best.logsumexp(dim=-1, keepdim=True), top_p), ids
    if not 0.0 < top_p < 1.0:
        return torch.topk(scores, allowed, dim=-1)
    normaliser = scores.logsumexp(dim=-1, keepdim=True)
    unused = ~torch.isfinite(normaliser.squeeze(-1))  # rows with nothing allowed need no ranking
    size = min(64, allowed)
    while True:
        best, ids = torch.topk(scores, size, dim=-1)
        covered = (best - normaliser).exp().sum(dim=-1) > top_p
        if size == allowed or bool((covered | unused).all()):
            return _nucleus(best, normaliser, top_p), ids
        size = min(size * 8, allowed)


def _nucleus(best: torch.Tensor, normaliser: torch.Tensor, top_p: float) -> torch.Tensor:
    """``best`` (sorted, best first) with the tokens past the top-p nucleus set to ``-inf``."""
    if not 0.0 < top_p < 1.0:
        return best
    cumulative = (best - normaliser).exp().cumsum(dim=-1)
    drop = torch.zeros_like(cumulative, dtype=torch.bool)
    drop[:, 1:] = cumulative[:, :-1] > top_p  # the token that crosses the threshold is kept
    return best.masked_fill(drop, float("-inf"))


# --------------------------------------------------------------------------- #
#  Backend                                                                     #
# --------------------------------------------------------------------------- #


class TransformersBackend:
    """A 5 Hz LM on a transformers ``…ForCausalLM``, sampled by our own loop (see the module doc)."""

    name = "transformers"
    supports_cfg = True

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        model_name: str,
        device: torch.device,
        *,
        kv_cache: str = "static",
        compile_step: bool = False,
        compile_config: CompileConfig | None = None,
    ):
        """``kv_cache``: one of :data:`KV_CACHES`. ``compile_step`` compiles the decoding step
        (static cache only) with ``compile_config``, by default transformers' own (inductor,
        ``reduce-overhead``: CUDA graphs on CUDA)."""
        if kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHES)}, got {kv_cache!r}")
        if compile_step and kv_cache != "static":
            raise ValueError("a compiled decoding step needs the static KV cache")
        self.kv_cache = kv_cache
        self.compile_config = (compile_config or CompileConfig()) if compile_step else None
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.device = torch.device(device)
        self.vocab_size = int(model.config.vocab_size)  # width of the logits
        self.token_count = len(tokenizer)  # ids past this have no token: never sampled
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)
        self.context_tokens = LM_CONTEXT_TOKENS  # prompt + new tokens, per row (budget.py)

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
        """See :meth:`LMBackend.generate`. With ``cfg_scale == 1`` the unconditional rows would cancel
        out exactly, so they are not run."""
        rows = len(prompts)
        if uncond_prompts is not None and len(uncond_prompts) != rows:
            raise ValueError(f"uncond_prompts has {len(uncond_prompts)} entries; it must match prompts ({rows})")
        if seeds is not None and len(seeds) != rows:
            raise ValueError(f"seeds has {len(seeds)} entries; it must match prompts ({rows})")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if rows == 0 or max_new_tokens == 0:
            return [[] for _ in range(rows)]
        use_cfg = uncond_prompts is not None and params.cfg_scale != 1.0
        texts = list(prompts) + (list(uncond_prompts) if use_cfg else [])
        with torch.inference_mode():
            return self._decode(texts, rows, use_cfg, params, max_new_tokens, stop_token_ids, constraint, seeds)

    # --- The loop -----------------------------------------------------------------------

    def _decode(
        self,
        texts: list[str],
        rows: int,
        use_cfg: bool,
        params: SamplingParams,
        max_new_tokens: int,
        stop_token_ids: set[int],
        constraint: TokenConstraint | None,
        seeds: list[int] | None,
    ) -> list[list[int]]:
        device = self.device
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left")
        # Before any model work: the prefill's memory grows with the square of this length.
        max_new_tokens = new_token_budget(batch["input_ids"].shape[1], max_new_tokens, self.context_tokens)
        input_ids = batch["input_ids"].to(device)
        attention_mask = batch["attention_mask"].to(device)
        # Left padding: a row's first real token sits at position 0.
        positions = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)

        seen = self._prompt_tokens(input_ids[:rows], attention_mask[:rows]) if params.repetition_penalty != 1.0 else None
        generators = self._generators(seeds)
        stops = torch.tensor(sorted(stop_token_ids), dtype=torch.long, device=device)
        finished = torch.zeros(rows, dtype=torch.bool, device=device)
        outputs: list[list[int]] = [[] for _ in range(rows)]

        static = self.kv_cache == "static"
        if static:
            cache_length = _rounded_up(input_ids.shape[1] + max_new_tokens, CACHE_LENGTH_STEP)
            cache = StaticCache(config=self.model.config, max_cache_len=cache_length)
            # One mask for every step, as long as the cache: the causal mask hides the slots not
            # written yet, so only the left padding needs masking.
            attention_mask = torch.cat(
                [attention_mask, attention_mask.new_ones(len(texts), cache_length - input_ids.shape[1])], dim=1
            )
        else:
            cache = DynamicCache(config=self.model.config)
        step_forward = self._step_forward()

        logits = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, cache=cache,
            use_cache=True, logits_to_keep=1,
        ).logits[:, -1, :]
        next_position = positions[:, -1:] + 1
        for step in range(max_new_tokens):
            scores = self._guided_scores(logits, rows, use_cfg, params.cfg_scale)  # a copy
            # Let go of the step's output: a compiled step with CUDA graphs writes the next one
            # into the same memory.
            del logits
            if constraint is not None:
                scores = constraint.apply(scores)
            if seen is not None:
                scores = apply_repetition_penalty(scores, seen, params.repetition_penalty)
            best, ids = candidate_tokens(scores, params.top_k, effective_top_p(params.top_p))
            tokens = self._sample(best, ids, params.temperature, finished, generators, step)
            if constraint is not None:
                constraint.advance(tokens)

            chosen = tokens.tolist()
            for row in (~finished).nonzero().flatten().tolist():
                outputs[row].append(chosen[row])
            if seen is not None:
                seen[torch.arange(rows, device=device), tokens] = True
            finished |= torch.isin(tokens, stops)
            if bool(finished.all()) or step + 1 == max_new_tokens:
                break

            feed = tokens.repeat(2) if use_cfg else tokens
            if not static:
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(texts), 1)], dim=1)
            logits = step_forward(
                input_ids=feed[:, None], attention_mask=attention_mask, position_ids=next_position, cache=cache,
                use_cache=True,
            ).logits[:, -1, :]
            next_position = next_position + 1
        return outputs

    def _step_forward(self):
        """The model call for one decoding step: compiled once (transformers keeps it on the model)
        when compiling is on, else the model itself."""
        if self.compile_config is None:
            return self.model
        return self.model.get_compiled_call(self.compile_config)

    def _guided_scores(self, logits: torch.Tensor, rows: int, use_cfg: bool, scale: float) -> torch.Tensor:
        """fp32 scores ``[rows, V]``: ``u + s·(c − u)`` with CFG, ids without a token removed."""
        logits = logits.float()
        if use_cfg:
            cond, uncond = logits[:rows], logits[rows:]
            scores = uncond + scale * (cond - uncond)
        else:
            scores = logits.clone()
        if self.token_count < scores.shape[-1]:
            scores[:, self.token_count :] = float("-inf")
        return scores

    def _sample(
        self,
        best: torch.Tensor,
        ids: torch.Tensor,
        temperature: float,
        finished: torch.Tensor,
        generators: list[torch.Generator] | None,
        step: int,
    ) -> torch.Tensor:
        """One token per row from its candidates (``best`` scores, best first, and their ``ids``);
        finished rows get the pad token and draw nothing from their generator."""
        tokens = torch.full((best.shape[0],), self.pad_id, dtype=torch.long, device=best.device)
        active = (~finished).nonzero().flatten()
        blocked = torch.isneginf(best[active, 0])
        if bool(blocked.any()):
            row = int(active[blocked.nonzero()[0, 0]])
            raise RuntimeError(f"no token is allowed for row {row} at step {step} (constraint and filters removed all)")
        if temperature <= 0:  # the best token; the lowest id among equal bests, as argmax picks
            best_ids = ids[active].masked_fill(best[active] < best[active, :1], self.vocab_size)
            tokens[active] = best_ids.min(dim=-1).values
            return tokens
        if generators is None:
            probs = torch.softmax(best[active] / temperature, dim=-1)
            tokens[active] = ids[active].gather(1, torch.multinomial(probs, 1)).squeeze(1)
            return tokens
        # Seeded: each row draws from its own candidates alone, in id order, so that neither the
        # number of random numbers used nor their meaning depends on the other rows (equal
        # scores may be ranked differently when the ranking is longer).
        kept = torch.isfinite(best).sum(dim=-1).tolist()
        for row in active.tolist():
            row_ids, order = ids[row, : kept[row]].sort()
            probs = torch.softmax(best[row, : kept[row]][order] / temperature, dim=-1)
            tokens[row] = row_ids[torch.multinomial(probs, 1, generator=generators[row])[0]]
        return tokens

    def _generators(self, seeds: list[int] | None) -> list[torch.Generator] | None:
        if seeds is None:
            return None
        return [torch.Generator(device=self.device).manual_seed(int(seed)) for seed in seeds]

    def _prompt_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, V]`` bool: which ids each conditional prompt holds (padding excluded)."""
        counts = torch.zeros(input_ids.shape[0], self.vocab_size, dtype=torch.int32, device=input_ids.device)
        counts.scatter_add_(1, input_ids, attention_mask.to(torch.int32))
        return counts > 0


def _rounded_up(value: int, step: int) -> int:
    return -(-value // step) * step
