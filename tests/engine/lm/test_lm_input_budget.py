"""The 5 Hz LM reads a bounded prompt whatever the request holds (engine/limits.py, budget.py).

A 100,000-character caption once made the LM's prefill grow the server to 24 GB (memory grows
with the square of the prompt's length). Caption and lyrics are now cut to the official text
encoder's token budgets before any prompt is built, and every backend call keeps a hard total
budget of prompt plus new tokens.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from acestep_api.engine.limits import (
    LM_CAPTION_TOKENS,
    LM_CONTEXT_TOKENS,
    LM_LYRICS_TOKENS,
    LM_QUERY_TOKENS,
    LYRICS_MAX_CHARS,
    PROMPT_MAX_CHARS,
)
from acestep_api.engine.lm import prompts
from acestep_api.engine.lm.types import SamplingParams
from acestep_api.engine.request import GenerationError, GenerationRequest

# The template's own tokens around caption and lyrics (system text, headings, chat tokens),
# and the chain of thought phase 2 carries: generous upper bounds.
TEMPLATE_TOKENS = 200
COT_TOKENS = 1100  # phase 1 writes at most PHASE1_MAX_TOKENS (1024) tokens
# What a long-caption planner call may add to the process's resident memory. Measured on the
# tiny LM: about 70 MB with the budgets; the uncut prefill (185,000 tokens with CFG rows)
# would need hundreds of GB for its attention scores alone.
PEAK_RSS_GROWTH_MB = 256


def words(count: int, seed: int = 0) -> str:
    """Text that tokenizes to many tokens (random letters defeat the BPE merges)."""
    rng = random.Random(seed)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ,.") for _ in range(count))


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text)["input_ids"])


class Recorder:
    """Wraps a backend's generate: records each call's prompt lengths in tokens and its
    max_new_tokens, and refuses (before the real model runs) any prompt over the budget, so a
    regression fails here instead of exhausting the machine's memory."""

    def __init__(self, backend, monkeypatch, limit: int):
        self.calls: list[tuple[list[int], int]] = []
        real = backend.generate

        def generate(prompt_texts, **kwargs):
            texts = list(prompt_texts) + list(kwargs.get("uncond_prompts") or [])
            lengths = [token_count(backend.tokenizer, text) for text in texts]
            self.calls.append((lengths, kwargs["max_new_tokens"]))
            assert max(lengths) <= limit, f"the LM was given a {max(lengths)}-token prompt (limit {limit})"
            return real(prompt_texts, **kwargs)

        monkeypatch.setattr(backend, "generate", generate)


def test_fit_tokens_cuts_long_text_and_keeps_short_text(tiny_lm_planner):
    tokenizer = tiny_lm_planner.tokenizer
    assert prompts.fit_tokens(tokenizer, "a calm piano piece", 256) == "a calm piano piece"
    long = words(5000)
    cut = prompts.fit_tokens(tokenizer, long, 256)
    assert token_count(tokenizer, cut) <= 256 and long.startswith(cut) and len(cut) > 100
    # CJK is several byte-level tokens per character: a cut never leaves half a character.
    cjk = "温柔的钢琴民谣" * 300
    cut = prompts.fit_tokens(tokenizer, cjk, 100)
    assert cjk.startswith(cut) and "\ufffd" not in cut and token_count(tokenizer, cut) <= 100


def test_every_prompt_is_bounded_whatever_the_texts(tiny_lm_planner):
    tokenizer = tiny_lm_planner.tokenizer
    caption, lyrics = words(100_000, 1), words(100_000, 2)
    cot = "<think>\nbpm: 90\n</think>"
    generation = LM_CAPTION_TOKENS + LM_LYRICS_TOKENS + TEMPLATE_TOKENS
    built = {
        "phase1": prompts.phase1_prompt(tokenizer, caption, lyrics),
        "phase1 uncond": prompts.phase1_uncond_prompt(tokenizer, caption, lyrics, caption),
        "phase2": prompts.phase2_prompt(tokenizer, caption, lyrics, cot),
        "phase2 uncond": prompts.phase2_uncond_prompt(tokenizer, caption, lyrics, caption),
        "format": prompts.format_prompt(tokenizer, caption, lyrics),
    }
    for name, text in built.items():
        assert token_count(tokenizer, text) <= generation, name
    inspiration = prompts.inspiration_prompt(tokenizer, words(100_000, 3), False)
    assert token_count(tokenizer, inspiration) <= LM_QUERY_TOKENS + TEMPLATE_TOKENS


def test_the_backend_clamps_new_tokens_to_the_total_budget(tiny_lm_planner, monkeypatch):
    backend = tiny_lm_planner.backend
    prompt = prompts.phase1_prompt(tiny_lm_planner.tokenizer, "a song", "[Instrumental]")
    length = token_count(backend.tokenizer, prompt)
    monkeypatch.setattr(backend, "context_tokens", length + 5)
    [tokens] = backend.generate([prompt], params=SamplingParams(temperature=1.0), max_new_tokens=500,
                                stop_token_ids=set(), seeds=[1])
    assert len(tokens) == 5  # no stop token, no constraint: only the budget ends the row


def test_a_prompt_over_the_budget_is_refused_before_the_model_runs(tiny_lm_planner, monkeypatch):
    backend = tiny_lm_planner.backend
    forwards = []
    monkeypatch.setattr(backend, "model", lambda *args, **kwargs: forwards.append(1))
    monkeypatch.setattr(backend, "context_tokens", 64)
    with pytest.raises(GenerationError, match="at most 64") as refused:
        backend.generate([words(2000)], params=SamplingParams(), max_new_tokens=10, stop_token_ids=set())
    assert forwards == [] and "Shorten the caption or the lyrics" in str(refused.value)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class PeakRss:
    """The highest resident memory seen while the block runs, sampled every few milliseconds."""

    def __enter__(self) -> "PeakRss":
        self.baseline = self.peak = _rss_mb()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())

    @property
    def growth_mb(self) -> float:
        return self.peak - self.baseline


def test_a_100000_character_caption_with_thinking_stays_in_budget_and_memory(tiny_lm_planner, monkeypatch):
    """Through the planner (the HTTP route refuses such a caption: tests/server/test_input_bounds_http.py)."""
    recorder = Recorder(tiny_lm_planner.backend, monkeypatch,
                        limit=LM_CAPTION_TOKENS + LM_LYRICS_TOKENS + COT_TOKENS + TEMPLATE_TOKENS)
    request = GenerationRequest.model_construct(
        **{**GenerationRequest().model_dump(), "prompt": words(100_000, 4), "lyrics": words(100_000, 5),
           "thinking": True, "audio_duration": 10.0, "batch_size": 1}
    )  # model_construct: past the character limits, as a caller that skips the HTTP layer could
    with PeakRss() as memory:
        plan = tiny_lm_planner.plan(request, [7])
    assert plan.request.lm_audio_codes and plan.request.lm_audio_codes[0].count("<|audio_code_") == 50
    assert [name for name in ("phase1", "phase2") if name in plan.seconds] == ["phase1", "phase2"]
    for lengths, new_tokens in recorder.calls:
        assert max(lengths) + new_tokens <= LM_CONTEXT_TOKENS
    assert memory.growth_mb < PEAK_RSS_GROWTH_MB, f"the LM call grew the process by {memory.growth_mb:.0f} MB"


def test_character_limits_leave_the_lm_budgets_binding(tiny_lm_planner):
    """The documented character limits are above what the LM reads, so no request the HTTP
    layer accepts is refused by the LM: it is cut, as the official text encoder cuts."""
    tokenizer = tiny_lm_planner.tokenizer
    assert token_count(tokenizer, words(PROMPT_MAX_CHARS)) > LM_CAPTION_TOKENS
    assert token_count(tokenizer, words(LYRICS_MAX_CHARS)) > LM_LYRICS_TOKENS
