"""The planner on the tiny random LM: constrained metadata, user values forced, exact code counts,
and the sample / format / understand paths. The model is random, so only the constraints make
its output valid: these tests fail if a constraint or the parsing is broken."""

from __future__ import annotations

import pytest

from acestep_api.engine.lm.constraints import MetadataConstraint
from acestep_api.engine.lm.cot import KEYSCALES, LANGUAGES, parse_cot
from acestep_api.engine.lm.planner import LMPlanner, description_hints
from acestep_api.engine.lm import prompts
from acestep_api.engine.lm.types import SamplingParams
from acestep_api.engine.lm.vocab import parse_audio_codes
from acestep_api.engine.request import GenerationRequest


@pytest.fixture(scope="module")
def planner(tiny_lm_planner) -> LMPlanner:
    return tiny_lm_planner


def assert_valid(metas: dict, duration_range=(10, 600)) -> None:
    assert isinstance(metas["bpm"], int) and 30 <= metas["bpm"] <= 300, metas
    assert metas["keyscale"] in KEYSCALES, metas
    assert metas["timesignature"] in ("2", "3", "4", "6"), metas
    assert metas["language"] in LANGUAGES, metas
    assert duration_range[0] <= metas["duration"] <= duration_range[1], metas
    assert isinstance(metas["caption"], str)


@pytest.mark.slow  # a property loop: all 50 seeds, in the full run only
def test_phase1_on_50_seeds_always_parses_to_valid_metadata(planner):
    seeds = list(range(50))
    tokenizer = planner.tokenizer
    prompt = prompts.phase1_prompt(tokenizer, "a song", "[Instrumental]")
    uncond = prompts.phase1_uncond_prompt(tokenizer, "a song", "[Instrumental]", "NO USER INPUT")
    constraint = MetadataConstraint(tokenizer, planner.vocab, len(seeds), forced=[{}] * len(seeds),
                                    duration_range=(10, 600), max_caption_tokens=48)
    outputs = planner.backend.generate(
        [prompt] * len(seeds), uncond_prompts=[uncond] * len(seeds), params=SamplingParams(temperature=1.0),
        max_new_tokens=1024, stop_token_ids={planner.vocab.eos_id}, constraint=constraint, seeds=seeds,
    )
    texts = [tokenizer.decode(tokens, skip_special_tokens=False) for tokens in outputs]
    for text in texts:
        assert_valid(parse_cot(text).metas)
    assert len(set(texts)) > 10  # the seeds really vary the output


def test_phase1_forces_every_user_value(planner):
    given = {"bpm": 97, "keyscale": "F# minor", "timesignature": "3", "duration": 42}
    request = GenerationRequest(prompt="waltz", lyrics="[verse]\n月が綺麗", bpm=97, key_scale="F# minor",
                                time_signature="3/4", audio_duration=42)
    for seed in range(5):
        metas = planner._phase1(request, given, SamplingParams(), seed)
        assert {k: metas[k] for k in given} == given
        assert_valid(metas)


def test_plan_with_thinking_writes_exactly_five_codes_per_second_per_item(planner):
    for duration, batch in ((10, 2), (13, 1)):
        request = GenerationRequest(prompt="drum and bass", thinking=True, audio_duration=duration, batch_size=batch)
        plan = planner.plan(request, seeds=list(range(batch)))
        codes = plan.request.lm_audio_codes
        assert codes is not None and len(codes) == batch
        assert [len(parse_audio_codes(c)) for c in codes] == [duration * 5] * batch
        assert plan.request.audio_duration == duration
        assert {"phase1", "phase2"} <= plan.seconds.keys()


def test_plan_items_use_their_own_seeds(planner):
    request = GenerationRequest(prompt="x", thinking=True, audio_duration=10, batch_size=2)
    first = planner.plan(request, seeds=[1, 2]).request.lm_audio_codes
    again = planner.plan(request, seeds=[1, 3]).request.lm_audio_codes
    assert first[0] == again[0] and first[1] != again[1]


def test_client_codes_skip_phase2_and_audio_tasks_skip_the_lm(planner):
    request = GenerationRequest(prompt="x", thinking=True, audio_duration=10, audio_code_string="<|audio_code_5|>")
    assert "phase2" not in planner.plan(request, seeds=[0]).seconds
    cover = GenerationRequest(prompt="x", thinking=True, task_type="repaint", src_audio_path="/tmp/x.wav")
    plan = planner.plan(cover, seeds=[0])
    assert not plan.used and plan.request is cover


def test_all_metadata_given_skips_phase1(planner):
    request = GenerationRequest(prompt="x", bpm=100, key_scale="C major", time_signature="4", audio_duration=10)
    plan = planner.plan(request, seeds=[0])
    assert "phase1" not in plan.seconds
    assert plan.request.bpm == 100 and plan.request.prompt == "x"


def test_cot_caption_and_language_options(planner):
    request = GenerationRequest(prompt="my caption", vocal_language="en", audio_duration=10,
                                use_cot_caption=False, use_cot_language=False)
    plan = planner.plan(request, seeds=[0])
    assert plan.request.prompt == "my caption" and plan.request.vocal_language == "en"
    rewritten = planner.plan(request.model_copy(update={"use_cot_caption": True}), seeds=[0]).request
    assert rewritten.prompt == plan.lm_metas.get("caption", rewritten.prompt)


def test_create_sample_and_format_sample(planner):
    sample = planner.create_sample("an instrumental lullaby", instrumental=True, vocal_language="ja", seed=3)
    assert sample["lyrics"] == "[Instrumental]" and sample["language"] == "ja"
    assert_valid(sample)
    formatted = planner.format_sample("rock", "[verse]\nhello", metadata={"bpm": 120, "duration": 30}, seed=3)
    assert formatted["bpm"] == 120 and formatted["duration"] == 30
    assert_valid(formatted)
    assert isinstance(formatted["lyrics"], str) and formatted["lyrics"]


def test_understand_codes(planner):
    metas = planner.understand_codes("".join(f"<|audio_code_{i}|>" for i in range(50)), seed=0)
    assert_valid(metas)
    assert "<|audio_code_" not in metas["lyrics"]


@pytest.mark.parametrize(
    "text, language, instrumental",
    [("Pop rock. English", "en", False), ("piano solo", None, True), ("a 日本語 ballad", "ja", False),
     ("an instrumental track", None, True), ("spanish guitar, no vocals", "es", True), ("chill", None, False)],
)
def test_description_hints(text, language, instrumental):
    assert description_hints(text) == (language, instrumental)


def test_load_planner_modes(tiny_checkpoints, tmp_path):
    from acestep_api.engine.lm.planner import load_planner

    assert load_planner(tiny_checkpoints, "acestep-5Hz-lm-0.6B", mode="off") == (None, None)
    assert load_planner(tmp_path, "acestep-5Hz-lm-0.6B", mode="auto") == (None, None)
    planner, error = load_planner(tmp_path, "acestep-5Hz-lm-1.7B", mode="on")
    assert planner is None and "acestep-5Hz-lm-1.7B" in error
    # "auto" serves the LM that is there when the named one is missing.
    planner, error = load_planner(tiny_checkpoints, "acestep-5Hz-lm-1.7B", mode="auto")
    assert error is None and planner.model_name == "acestep-5Hz-lm-0.6B"


def test_use_cot_metas_false_writes_no_metadata(planner):
    request = GenerationRequest(prompt="my caption", audio_duration=10, use_cot_metas=False)
    plan = planner.plan(request, seeds=[0])
    assert "phase1" not in plan.seconds and plan.lm_metas == {}
    assert plan.request.bpm is None and plan.request.key_scale == "" and plan.request.prompt == "my caption"
    assert "phase1" in planner.plan(request.model_copy(update={"use_cot_metas": True}), seeds=[0]).seconds


def test_cover_nofsq_skips_the_lm(planner):
    request = GenerationRequest(prompt="x", thinking=True, task_type="cover-nofsq", src_audio_path="/tmp/x.wav")
    plan = planner.plan(request, seeds=[0])
    assert not plan.used and plan.request is request
