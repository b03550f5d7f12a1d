"""The transformers backend's sampling loop on the tiny LM, against a naive reference that
recomputes every step from scratch, one unpadded row at a time."""

from __future__ import annotations

import pytest
import torch

from acestep_api.engine.layout import DEFAULT_LM_FOLDER
from acestep_api.engine.lm import prompts
from acestep_api.engine.lm.backend_transformers import TransformersBackend, candidate_tokens
from acestep_api.engine.lm.loader import load_lm
from acestep_api.engine.lm.types import SamplingParams

GREEDY = SamplingParams(temperature=0.0, cfg_scale=1.0)
SAMPLED = SamplingParams(temperature=1.0, cfg_scale=1.0)


@pytest.fixture(scope="module")
def backend(tiny_checkpoints) -> TransformersBackend:
    return load_lm(tiny_checkpoints / DEFAULT_LM_FOLDER, torch.device("cpu"))


@pytest.fixture(scope="module")
def texts(backend):
    """Two conditional prompts of different lengths and their unconditional twins."""
    tok = backend.tokenizer
    cond = [
        prompts.phase1_prompt(tok, "a slow piano ballad", "[Verse]\nhello"),
        prompts.phase1_prompt(tok, "an energetic rock song with distorted guitars and a huge chorus", "[Instrumental]"),
    ]
    uncond = [
        prompts.phase1_uncond_prompt(tok, "a slow piano ballad", "[Verse]\nhello"),
        prompts.phase1_uncond_prompt(tok, "x", "[Instrumental]", "noisy"),
    ]
    return cond, uncond


def naive_greedy(backend, text, uncond=None, scale=1.0, steps=6, penalty=1.0):
    """Greedy decoding, recomputing the whole unpadded sequence at every step (no cache)."""
    ids = backend.tokenizer(text)["input_ids"]
    uncond_ids = backend.tokenizer(uncond)["input_ids"] if uncond is not None else None
    out = []
    with torch.no_grad():
        for _ in range(steps):
            scores = backend.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            if uncond_ids is not None:
                u = backend.model(input_ids=torch.tensor([uncond_ids])).logits[0, -1].float()
                scores = u + scale * (scores - u)
            scores[backend.token_count :] = float("-inf")
            if penalty != 1.0:
                seen = torch.tensor(sorted(set(ids)))
                scores[seen] = torch.where(scores[seen] < 0, scores[seen] * penalty, scores[seen] / penalty)
            token = int(scores.argmax())
            out.append(token)
            ids = ids + [token]
            if uncond_ids is not None:
                uncond_ids = uncond_ids + [token]
    return out


def test_kv_cached_batched_greedy_equals_naive_recomputation(backend, texts):
    cond, _ = texts
    got = backend.generate(cond, params=GREEDY, max_new_tokens=6, stop_token_ids=set())
    assert got == [naive_greedy(backend, text) for text in cond]


def test_cfg_equals_naive_guided_recomputation(backend, texts):
    cond, uncond = texts
    params = SamplingParams(temperature=0.0, cfg_scale=2.5)
    got = backend.generate(cond, uncond_prompts=uncond, params=params, max_new_tokens=6, stop_token_ids=set())
    expected = [naive_greedy(backend, c, u, scale=2.5) for c, u in zip(cond, uncond)]
    assert got == expected
    assert got != backend.generate(cond, params=GREEDY, max_new_tokens=6, stop_token_ids=set())  # CFG matters


def test_repetition_penalty_equals_naive(backend, texts):
    cond, _ = texts
    params = SamplingParams(temperature=0.0, cfg_scale=1.0, repetition_penalty=1.8)
    got = backend.generate(cond, params=params, max_new_tokens=6, stop_token_ids=set())
    assert got == [naive_greedy(backend, text, penalty=1.8) for text in cond]


def test_cfg_scale_one_equals_no_cfg(backend, texts):
    cond, uncond = texts
    params = SamplingParams(temperature=1.0, cfg_scale=1.0)
    with_uncond = backend.generate(cond, uncond_prompts=uncond, params=params, max_new_tokens=12,
                                   stop_token_ids=set(), seeds=[5, 6])
    assert with_uncond == backend.generate(cond, params=params, max_new_tokens=12, stop_token_ids=set(), seeds=[5, 6])


def test_same_seed_same_tokens_and_different_seeds_differ(backend, texts):
    cond, uncond = texts
    params = SamplingParams(temperature=1.0, cfg_scale=2.5)
    run = lambda seeds: backend.generate([cond[0]] * 2, uncond_prompts=[uncond[0]] * 2, params=params,
                                         max_new_tokens=16, stop_token_ids=set(), seeds=seeds)
    first = run([11, 12])
    assert first == run([11, 12])
    assert first[0] != first[1]
    assert run([13, 11])[1] == first[0]


def test_a_rows_tokens_do_not_depend_on_the_other_rows(backend, texts):
    cond, uncond = texts
    # Padding changes the logits in the last bits; top-k keeps the nucleus boundary away from the
    # near-equal tail tokens of the random model, where such a change could move it.
    params = SamplingParams(temperature=1.0, cfg_scale=2.5, top_k=40)
    alone = backend.generate([cond[0]], uncond_prompts=[uncond[0]], params=params, max_new_tokens=24,
                             stop_token_ids=set(), seeds=[7])[0]
    batch = backend.generate([cond[1], cond[0], cond[1]], uncond_prompts=[uncond[1], uncond[0], uncond[1]],
                             params=params, max_new_tokens=24, stop_token_ids=set(), seeds=[1, 7, 2])
    assert batch[1] == alone


def test_stops_at_a_stop_token_and_at_max_new_tokens(backend, texts):
    cond, _ = texts
    free = backend.generate(cond, params=GREEDY, max_new_tokens=10, stop_token_ids=set())
    assert [len(row) for row in free] == [10, 10]
    stop = free[0][3]
    cut = free[0].index(stop) + 1
    got = backend.generate(cond, params=GREEDY, max_new_tokens=10, stop_token_ids={stop})
    assert got[0] == free[0][:cut]  # the stop token ends (and is part of) the row
    # The other row keeps going past the first row's end, unaffected by its padding.
    expected_other = free[1][: free[1].index(stop) + 1] if stop in free[1] else free[1]
    assert got[1] == expected_other


def test_zero_new_tokens_and_no_prompts(backend, texts):
    assert backend.generate(texts[0], params=GREEDY, max_new_tokens=0, stop_token_ids=set()) == [[], []]
    assert backend.generate([], params=GREEDY, max_new_tokens=5, stop_token_ids=set()) == []


class EvenOnly:
    """Only even token ids; records what the backend tells it."""

    def __init__(self):
        self.advanced: list[list[int]] = []

    def apply(self, scores):
        scores[:, 1::2] = float("-inf")
        return scores

    def advance(self, tokens):
        self.advanced.append(tokens.tolist())


class Script:
    """Forces each row through a fixed list of tokens."""

    def __init__(self, rows_tokens):
        self.rows_tokens, self.step = rows_tokens, 0

    def apply(self, scores):
        allowed = torch.full_like(scores, float("-inf"))
        for row, tokens in enumerate(self.rows_tokens):
            allowed[row, tokens[min(self.step, len(tokens) - 1)]] = 0.0
        return scores + allowed

    def advance(self, tokens):
        self.step += 1


def test_constraint_mask_is_respected_and_advanced_with_the_sampled_tokens(backend, texts):
    cond, uncond = texts
    constraint = EvenOnly()
    got = backend.generate(cond, uncond_prompts=uncond, params=SamplingParams(temperature=1.5, cfg_scale=2.5),
                           max_new_tokens=20, stop_token_ids=set(), constraint=constraint, seeds=[1, 2])
    assert all(token % 2 == 0 for row in got for token in row)
    assert constraint.advanced == [list(step) for step in zip(*got)]


def test_a_forcing_constraint_wins_over_cfg_and_sampling(backend, texts):
    cond, uncond = texts
    vocab_first_code = backend.tokenizer.convert_tokens_to_ids("<|audio_code_0|>")
    script = [[vocab_first_code + 5, vocab_first_code + 6, 9], [vocab_first_code + 63999, 8, 7]]
    got = backend.generate(cond, uncond_prompts=uncond, params=SamplingParams(temperature=1.0, cfg_scale=3.0),
                           max_new_tokens=3, stop_token_ids=set(), constraint=Script(script), seeds=[0, 0])
    assert got == script


def test_a_constraint_that_allows_nothing_fails_clearly(backend, texts):
    class Nothing(EvenOnly):
        def apply(self, scores):
            return torch.full_like(scores, float("-inf"))

    with pytest.raises(RuntimeError, match="no token is allowed for row 0"):
        backend.generate(texts[0], params=SAMPLED, max_new_tokens=3, stop_token_ids=set(), constraint=Nothing())


def test_top_k_one_and_a_tiny_top_p_are_greedy(backend, texts):
    cond, _ = texts
    greedy = backend.generate(cond, params=GREEDY, max_new_tokens=8, stop_token_ids=set())
    top1 = SamplingParams(temperature=1.0, cfg_scale=1.0, top_k=1)
    assert backend.generate(cond, params=top1, max_new_tokens=8, stop_token_ids=set(), seeds=[3, 4]) == greedy
    nucleus = SamplingParams(temperature=1.0, cfg_scale=1.0, top_p=1e-9)
    assert backend.generate(cond, params=nucleus, max_new_tokens=8, stop_token_ids=set(), seeds=[3, 4]) == greedy


def test_mismatched_lengths_are_refused(backend, texts):
    cond, uncond = texts
    with pytest.raises(ValueError, match="uncond_prompts"):
        backend.generate(cond, uncond_prompts=uncond[:1], params=SAMPLED, max_new_tokens=2, stop_token_ids=set())
    with pytest.raises(ValueError, match="seeds"):
        backend.generate(cond, params=SAMPLED, max_new_tokens=2, stop_token_ids=set(), seeds=[1])


def reference_candidates(scores, top_k, top_p):
    """Top-k then top-p by a full sort of one row, the official way."""
    kept = {}
    for row in range(scores.shape[0]):
        values, ids = torch.sort(scores[row], descending=True)
        if top_k:
            values, ids = values[:top_k], ids[:top_k]
        probs = torch.softmax(values, dim=-1).cumsum(dim=-1)
        keep = torch.ones_like(probs, dtype=torch.bool)
        keep[1:] = probs[:-1] <= top_p
        kept[row] = set(ids[keep & torch.isfinite(values)].tolist())
    return kept


@pytest.mark.parametrize("top_k, top_p, spread", [(None, 0.9, 1.0), (None, 0.5, 8.0), (50, 0.9, 1.0), (None, 0.97, 0.3)])
def test_candidate_tokens_equal_a_full_sort(top_k, top_p, spread):
    generator = torch.Generator().manual_seed(0)
    scores = spread * torch.randn(3, 5000, generator=generator)
    scores[1, ::3] = float("-inf")  # a constrained row
    best, ids = candidate_tokens(scores, top_k, top_p)
    expected = reference_candidates(scores, top_k, top_p)
    for row in range(3):
        assert set(ids[row][torch.isfinite(best[row])].tolist()) == expected[row]
        assert torch.all(best[row][:-1] >= best[row][1:])  # best first
