"""MusicEngine.render_batch on the tiny checkpoints: every request of a batch comes out as it does
alone with the same seeds, to float tolerance; which requests may share a batch (batch_key);
a request that leaves mid-loop or fails on its own input ends alone."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from acestep_api.engine.encoding import Rendered
from acestep_api.engine.request import GenerationError, GenerationRequest

# Why not exact: the batch runs other matrix shapes than a request alone (more rows, captions
# and lyrics padded to the longest, the padding masked in the condition encoder and the DiT's
# cross-attention), so float32 sums are taken in another order. On these waveforms (peaks
# about 0.5) the difference measured is under 1e-6; the masked padding itself weighs exactly 0.
TOLERANCE = 1e-5


def song(prompt: str, lyrics: str, seeds: list[int], duration: float = 10.0, **fields) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, lyrics=lyrics, audio_duration=duration, use_random_seed=False,
                             seeds=seeds, batch_size=len(seeds), audio_format="wav32", **fields)


def mixed_songs(**fields) -> list[GenerationRequest]:
    """Three compatible requests whose texts differ in length, of 1 or 2 items, and whose
    durations (10.0 s and 10.02 s, rounded to 10.0) give one latent length."""
    return [
        song("calm piano", "[verse]\nhello world, a long line of words to pad the others", [1], **fields),
        song("loud rock with drums, guitars and a choir singing over it", "", [3], **fields),
        song("x", "la la", [4, 5], duration=10.02, bpm=90, key_scale="C major", **fields),
    ]


def assert_same_audio(alone: Rendered, batched: Rendered) -> None:
    assert isinstance(batched, Rendered), batched
    assert batched.result.seeds == alone.result.seeds
    assert len(batched.plan.waves) == len(alone.plan.waves)
    for wave_alone, wave_batched in zip(alone.plan.waves, batched.plan.waves):
        assert wave_alone.shape == wave_batched.shape
        assert np.abs(wave_alone).max() > 0.1  # real audio, not silence
        assert np.abs(wave_alone - wave_batched).max() < TOLERANCE


@pytest.mark.parametrize("fields", [
    {},  # the turbo DiT, no guidance
    {"model": "acestep-v15-base", "inference_steps": 4, "guidance_scale": 5.0},  # APG with its momentum
    {"model": "acestep-v15-base", "inference_steps": 3, "guidance_scale": 4.0, "use_adg": True, "infer_method": "sde"},
], ids=["turbo", "base-apg", "base-adg-sde"])
def test_each_request_of_a_batch_sounds_as_it_does_alone(tiny_engine, fields):
    requests = mixed_songs(**fields)
    assert len({tiny_engine.batch_key(r) for r in requests}) == 1
    alone = [tiny_engine.render(r) for r in requests]
    batched = tiny_engine.render_batch(requests, [None] * len(requests))
    for one, many in zip(alone, batched):
        assert_same_audio(one, many)
    # each keeps its own texts and metadata
    assert [r.result.prompt for r in batched] == [r.prompt for r in requests]
    assert [r.result.lyrics for r in batched] == [r.lyrics for r in requests]
    assert batched[2].result.metas.bpm == 90 and batched[0].result.metas.bpm is None
    assert [r.result.metas.duration for r in batched] == [10.0, 10.0, 10.0]


def test_without_the_mask_the_padding_would_change_the_shorter_texts(tiny_engine, monkeypatch):
    """The cross-attention mask is what makes the batch exact: the same batch with the padding
    attended to drifts far beyond the tolerance."""
    import contextlib

    import acestep_api.engine.sampler as sampler

    requests = mixed_songs()
    alone = [tiny_engine.render(r) for r in requests]
    monkeypatch.setattr(sampler, "masked_cross_attention", lambda transformer, mask: contextlib.nullcontext())
    batched = tiny_engine.render_batch(requests, [None] * len(requests))
    drift = max(np.abs(a - b).max() for one, many in zip(alone, batched)
                for a, b in zip(one.plan.waves, many.plan.waves))
    assert drift > 100 * TOLERANCE


def test_a_request_that_leaves_mid_loop_drops_out_and_the_others_are_unchanged(tiny_engine):
    requests = mixed_songs()
    alone = [tiny_engine.render(r) for r in requests]
    seen: dict[int, list[str]] = {0: [], 1: [], 2: []}

    class Cancelled(GenerationError):
        pass

    def progress_of(index: int):
        def progress(fraction: float, stage: str) -> None:
            seen[index].append(stage)
            if index == 1 and stage == "diffusion step 3/8":
                raise Cancelled("Cancelled by request")
        return progress

    batched = tiny_engine.render_batch(requests, [progress_of(i) for i in range(3)])
    assert isinstance(batched[1], Cancelled)
    assert seen[1][-1] == "diffusion step 3/8"  # it heard of no step after it left
    assert seen[0][-2:] == ["decoding", "encoding"] and "diffusion step 8/8" in seen[0]
    assert_same_audio(alone[0], batched[0])
    assert_same_audio(alone[2], batched[2])


def test_a_request_whose_own_input_fails_ends_alone(tiny_engine):
    requests = mixed_songs()
    requests[1] = requests[1].model_copy(update={"thinking": True})  # this engine has no LM
    alone = [tiny_engine.render(requests[0]), tiny_engine.render(requests[2])]
    batched = tiny_engine.render_batch(requests, [None] * 3)
    assert isinstance(batched[1], GenerationError) and "5Hz LM" in str(batched[1])
    assert_same_audio(alone[0], batched[0])
    assert_same_audio(alone[1], batched[2])


def test_a_request_of_another_key_is_rendered_alone_after_the_batch(tiny_engine):
    requests = [song("a", "", [1]), song("b", "", [2], duration=20.0), song("c", "", [3])]
    alone = [tiny_engine.render(r) for r in requests]
    batched = tiny_engine.render_batch(requests, [None] * 3)
    for one, many in zip(alone, batched):
        assert_same_audio(one, many)


def key(engine, **fields):
    base = dict(prompt="p", audio_duration=10.0)
    base.update(fields)
    return engine.batch_key(GenerationRequest(**base))


def test_the_batch_key_rule(tiny_engine, tiny_lm_engine):
    plain = key(tiny_engine)
    assert plain is not None
    # what may differ: texts, metadata, seeds, items, the output format, a duration in the same frame
    assert key(tiny_engine, prompt="other", lyrics="la", bpm=120, key_scale="A minor", seeds=[5],
               use_random_seed=False, batch_size=4, audio_format="flac", audio_duration=10.02) == plain
    # turbo ignores steps and guidance: the same schedule
    assert key(tiny_engine, inference_steps=20, guidance_scale=3.0) == plain
    assert key(tiny_engine, model="acestep-v15-turbo") == plain
    # what may not
    for fields in ({"audio_duration": 10.1}, {"shift": 1.0}, {"model": "acestep-v15-base"},
                   {"infer_method": "sde"}, {"timesteps": [0.9, 0.5, 0.2]}, {"cover_noise_strength": 0.5}):
        assert key(tiny_engine, **fields) != plain, fields
    base = key(tiny_engine, model="acestep-v15-base", inference_steps=8)
    assert base != key(tiny_engine, model="acestep-v15-base", inference_steps=9)
    assert base != key(tiny_engine, model="acestep-v15-base", inference_steps=8, guidance_scale=3.0)
    # requests that run alone
    for fields in ({"audio_duration": None}, {"task_type": "cover"}, {"src_audio_path": "/x.wav"},
                   {"reference_audio_path": "/x.wav"}, {"audio_code_string": "<|audio_code_1|>"},
                   {"audio_cover_strength": 0.5}, {"analysis_only": True}):
        assert key(tiny_engine, **fields) is None, fields
    # with the LM loaded: only requests it would not work on
    full = dict(bpm=100, key_scale="C major", time_signature="4")
    assert key(tiny_lm_engine, **full) is not None
    assert key(tiny_lm_engine) is None  # phase 1 would fill in bpm, key and time signature
    assert key(tiny_lm_engine, **full, thinking=True) is None
    assert key(tiny_lm_engine, skip_lm=True) is not None  # a replay: the LM's work is settled
    assert key(tiny_lm_engine, use_cot_metas=False) is not None  # phase 1 writes no metadata


def test_a_batch_with_the_lm_loaded_but_idle_matches_alone(tiny_lm_engine):
    full = dict(bpm=100, key_scale="C major", time_signature="4")
    requests = [song("a", "la", [1], **full), song("b b b", "", [2, 3], **full)]
    engine = copy.copy(tiny_lm_engine)
    alone = [engine.render(r) for r in requests]
    batched = engine.render_batch(requests, [None, None])
    for one, many in zip(alone, batched):
        assert_same_audio(one, many)
        assert many.result.lm_model == one.result.lm_model


def test_requests_with_an_adapter_share_a_batch_only_with_the_same_adapter_and_scale(tiny_engine, tmp_path):
    from acestep_api.engine.adapters import AdapterManager
    from acestep_api.engine.tiny import write_tiny_adapter

    write_tiny_adapter(tmp_path / "loras" / "first", seed=11)
    write_tiny_adapter(tmp_path / "loras" / "second", seed=12)
    engine = copy.copy(tiny_engine)
    engine.dits = {name: copy.deepcopy(dit) for name, dit in tiny_engine.dits.items()}  # adapters change layers
    engine.adapters = AdapterManager(tmp_path / "loras", 4)

    first = key(engine, lora_name="first")
    assert first is not None and first != key(engine)
    assert first != key(engine, lora_name="second") and first != key(engine, lora_name="first", lora_scale=0.5)
    assert key(engine, lora_name="first", lora_scale=0.0) == key(engine)  # scale 0: no adapter on

    requests = [song("a", "la", [1], lora_name="first"), song("b b b", "", [2], lora_name="first")]
    alone = [engine.render(r) for r in requests]
    plain = engine.render(requests[0].model_copy(update={"lora_name": None}))
    assert np.abs(plain.plan.waves[0] - alone[0].plan.waves[0]).max() > 100 * TOLERANCE  # the adapter counts
    batched = engine.render_batch(requests, [None, None])
    for one, many in zip(alone, batched):
        assert_same_audio(one, many)
        assert many.result.resolved.lora_name == "first"
