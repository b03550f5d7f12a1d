"""The transformers backend's static KV cache and compiled decoding step give the tokens of the
dynamic cache, for the same seeds: greedy and sampled, with and without CFG, with the real
constraints. Sampled cases keep a top-k: the static cache attends over its whole (masked)
length, which moves the logits in their last bits (about 1e-7 relative), enough to move a
top-p boundary among the random model's near-equal tail tokens but not a top-k draw."""

from __future__ import annotations

import pytest
import torch
from transformers import CompileConfig

from acestep_api.engine.layout import DEFAULT_LM_FOLDER
from acestep_api.engine.lm import prompts
from acestep_api.engine.lm.backend_transformers import CACHE_LENGTH_STEP, TransformersBackend
from acestep_api.engine.lm.constraints import CodesConstraint, MetadataConstraint
from acestep_api.engine.lm.loader import compiles_on, load_lm
from acestep_api.engine.lm.types import SamplingParams
from acestep_api.engine.lm.vocab import LMVocab
from acestep_api.engine.loading.errors import LMLoadError
from acestep_api.settings import Settings

CPU = torch.device("cpu")
GREEDY = SamplingParams(temperature=0.0, cfg_scale=1.0)
GREEDY_CFG = SamplingParams(temperature=0.0, cfg_scale=2.5)
SAMPLED = SamplingParams(temperature=1.0, cfg_scale=1.0, top_k=40)
SAMPLED_CFG = SamplingParams(temperature=0.85, cfg_scale=2.5, top_k=50, top_p=0.9)


@pytest.fixture(scope="module")
def loaded(tiny_checkpoints) -> TransformersBackend:
    return load_lm(tiny_checkpoints / DEFAULT_LM_FOLDER, CPU)


def variant(loaded: TransformersBackend, kv_cache: str, compile_config: CompileConfig | None = None):
    """The loaded model and tokenizer behind another decoding choice."""
    return TransformersBackend(loaded.model, loaded.tokenizer, loaded.model_name, CPU, kv_cache=kv_cache,
                               compile_step=compile_config is not None, compile_config=compile_config)


@pytest.fixture(scope="module")
def texts(loaded):
    tok = loaded.tokenizer
    cond = [
        prompts.phase1_prompt(tok, "a slow piano ballad", "[Verse]\nhello"),
        prompts.phase1_prompt(tok, "an energetic rock song with distorted guitars and a huge chorus", "[Instrumental]"),
    ]
    uncond = [
        prompts.phase1_uncond_prompt(tok, "a slow piano ballad", "[Verse]\nhello"),
        prompts.phase1_uncond_prompt(tok, "x", "[Instrumental]", "noisy"),
    ]
    return cond, uncond


def generate(backend, texts, params, cfg, steps=24):
    cond, uncond = texts
    return backend.generate(cond, uncond_prompts=uncond if cfg else None, params=params,
                            max_new_tokens=steps, stop_token_ids=set(), seeds=[3, 4])


def test_the_loaded_backend_uses_the_static_cache_and_no_compiling_on_cpu(loaded):
    assert loaded.kv_cache == "static" and loaded.compile_config is None


@pytest.mark.parametrize(("params", "cfg"), [(GREEDY, False), (GREEDY_CFG, True), (SAMPLED, False), (SAMPLED_CFG, True)],
                         ids=["greedy", "greedy-cfg", "sampled", "sampled-cfg"])
def test_static_cache_gives_the_dynamic_caches_tokens(loaded, texts, params, cfg):
    dynamic = generate(variant(loaded, "dynamic"), texts, params, cfg)
    static = generate(variant(loaded, "static"), texts, params, cfg)
    assert static == dynamic
    assert len(static[0]) == 24 and static[0] != static[1]


def test_static_cache_with_the_real_constraints_and_stops(loaded, texts):
    """Phase 1's metadata constraint and phase 2's codes constraint, with CFG, both caches."""
    tok, vocab = loaded.tokenizer, LMVocab.from_tokenizer(loaded.tokenizer, loaded.vocab_size)
    cond, uncond = texts
    results = {}
    for kv_cache in ("dynamic", "static"):
        backend = variant(loaded, kv_cache)
        metadata = MetadataConstraint(tok, vocab, 2, forced=[{}, {"bpm": 90}], duration_range=(10, 600))
        phase1 = backend.generate(cond, uncond_prompts=uncond, params=SAMPLED_CFG, max_new_tokens=120,
                                  stop_token_ids={tok.convert_tokens_to_ids("</think>"), vocab.eos_id},
                                  constraint=metadata, seeds=[1, 2])
        codes = backend.generate(cond, uncond_prompts=uncond, params=SAMPLED_CFG, max_new_tokens=31,
                                 stop_token_ids={vocab.eos_id}, constraint=CodesConstraint(vocab, 2, 30), seeds=[5, 6])
        results[kv_cache] = (phase1, codes)
    assert results["static"] == results["dynamic"]
    codes = results["static"][1]
    assert [sum(vocab.is_code(t) for t in row) for row in codes] == [30, 30]


def test_the_compiled_step_gives_the_same_tokens(loaded, texts):
    """torch.compile with dynamo's eager backend: the step is traced as a graph (the part that
    can break) without inductor's code generation, which takes tens of seconds on CPU."""
    eager = generate(variant(loaded, "static"), texts, SAMPLED_CFG, True)
    compiled_backend = variant(loaded, "static", CompileConfig(backend="eager", mode=None))
    assert generate(compiled_backend, texts, SAMPLED_CFG, True) == eager
    # Another shape (one row: a new batch size) is traced again and is as right.
    cond, uncond = texts
    alone = compiled_backend.generate(cond[:1], uncond_prompts=uncond[:1], params=SAMPLED_CFG, max_new_tokens=8,
                                      stop_token_ids=set(), seeds=[3])
    assert alone[0] == eager[0][:8]


@pytest.mark.slow
def test_the_inductor_compiled_step_gives_the_same_tokens(loaded, texts):
    eager = generate(variant(loaded, "static"), texts, SAMPLED_CFG, True)
    compiled_backend = variant(loaded, "static", CompileConfig(mode=None))  # inductor; no CUDA graphs on CPU
    assert generate(compiled_backend, texts, SAMPLED_CFG, True) == eager


def test_a_call_at_the_context_budget_fits_its_cache(loaded, texts):
    """The cache is the prompt plus the (budget-capped) new tokens, rounded up to a whole step:
    a call that fills its context exactly to a step's end decodes every token it may."""
    backend = variant(loaded, "static")
    backend.context_tokens = CACHE_LENGTH_STEP  # a small context, so that the test stays quick
    prompt_length = len(loaded.tokenizer(texts[0][0])["input_ids"])
    rows = backend.generate(texts[0][:1], params=GREEDY, max_new_tokens=10_000, stop_token_ids=set())
    assert len(rows[0]) == CACHE_LENGTH_STEP - prompt_length
    assert rows == variant(loaded, "dynamic").generate(texts[0][:1], params=GREEDY,
                                                       max_new_tokens=CACHE_LENGTH_STEP - prompt_length,
                                                       stop_token_ids=set())


def test_compiling_needs_the_static_cache_and_a_known_choice(loaded, tiny_checkpoints):
    with pytest.raises(ValueError, match="static KV cache"):
        TransformersBackend(loaded.model, loaded.tokenizer, "x", CPU, kv_cache="dynamic", compile_step=True)
    with pytest.raises(ValueError, match="kv_cache must be one of static, dynamic"):
        TransformersBackend(loaded.model, loaded.tokenizer, "x", CPU, kv_cache="paged")
    with pytest.raises(LMLoadError, match="unknown LM compile mode"):
        load_lm(tiny_checkpoints / DEFAULT_LM_FOLDER, CPU, compile="sometimes")


def test_compile_auto_means_cuda_only():
    assert compiles_on(torch.device("cuda"), "auto") and not compiles_on(CPU, "auto")
    assert compiles_on(CPU, "on") and not compiles_on(torch.device("cuda"), "off")


def test_the_settings_read_the_decoding_choices(monkeypatch):
    assert (Settings(_env_file=None).lm_kv_cache, Settings(_env_file=None).lm_compile) == ("static", "auto")
    monkeypatch.setenv("ACESTEP_LM_COMPILE", "true")
    monkeypatch.setenv("ACESTEP_LM_KV_CACHE", "dynamic")
    assert (Settings(_env_file=None).lm_kv_cache, Settings(_env_file=None).lm_compile) == ("dynamic", "on")
    monkeypatch.setenv("ACESTEP_LM_COMPILE", "0")
    assert Settings(_env_file=None).lm_compile == "off"
