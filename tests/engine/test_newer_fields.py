"""The 2026 request fields on the tiny checkpoints: cover-nofsq, chunk_mask_mode, global_caption,
repaint_mode / repaint_strength and the two repaint crossfades (docs/pipeline.md#audio-tasks)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from acestep_api.engine import conditioning
from acestep_api.engine.request import GenerationError, GenerationRequest
from acestep_api.engine.repaint import RepaintSettings, repaint_settings, splice_weights
from acestep_api.engine.tasks import AUTO_CHUNK_MASK, TaskBuilder, resolve_task

from tests.engine.test_tasks import SamplerSpy, request, write_source

RATE = 48000
TURBO = "acestep-v15-turbo"


@pytest.fixture(scope="module")
def source_path(tmp_path_factory):
    return write_source(tmp_path_factory.mktemp("newer-fields") / "source.wav")


@pytest.fixture(scope="module")
def source_wave(source_path) -> torch.Tensor:
    from acestep_api.engine.audio_input import load_audio

    return load_audio(source_path)


@pytest.fixture(scope="module")
def builder(tiny_engine) -> TaskBuilder:
    return TaskBuilder(tiny_engine.dits[TURBO], tiny_engine.vae, tiny_engine.device, tiny_engine.dtype)


def samples(path: str) -> np.ndarray:
    """[channels, samples] as written (wav32: the floats themselves)."""
    return sf.read(path, dtype="float32", always_2d=True)[0].T


# --- repaint_mode / repaint_strength as numbers ----------------------------------------------


@pytest.mark.parametrize("fields,expected", [
    ({"repaint_mode": "aggressive", "repaint_strength": 0.0}, RepaintSettings(0.0, 0, 0.0, False)),
    ({"repaint_mode": "conservative", "repaint_strength": 1.0}, RepaintSettings(1.0, 25, 0.05, True)),
    ({}, RepaintSettings(0.5, 12, 0.025, True)),  # balanced at 0.5, the official defaults
    ({"repaint_strength": 0.0}, RepaintSettings(1.0, 25, 0.05, True)),
    ({"repaint_strength": 1.0}, RepaintSettings(0.0, 0, 0.0, True)),  # still a hard-cut splice
    ({"repaint_latent_crossfade_frames": 3, "repaint_wav_crossfade_sec": 0.5}, RepaintSettings(0.5, 3, 0.5, True)),
])
def test_mode_and_strength_become_the_official_numbers(fields, expected):
    assert repaint_settings(GenerationRequest(**fields)) == pytest.approx(expected)


def test_splice_weights_ramp_outside_the_window_only():
    weights = splice_weights(20, 8, 12, 3)
    assert weights[8:12].eq(1).all() and weights[:5].eq(0).all() and weights[15:].eq(0).all()
    assert torch.allclose(weights[5:8], torch.tensor([0.25, 0.5, 0.75]))
    assert torch.allclose(weights[12:15], torch.tensor([0.75, 0.5, 0.25]))
    assert torch.equal(splice_weights(20, 8, 12, 0)[7:13], torch.tensor([0.0, 1, 1, 1, 1, 0]))


@pytest.mark.parametrize("name,value,words", [
    ("repaint_strength", 1.5, "less than or equal to 1"),
    ("repaint_mode", "wild", "conservative"),
    ("repaint_wav_crossfade_sec", 20.0, "less than or equal to 10"),
    ("repaint_latent_crossfade_frames", 300, "less than or equal to 250"),
    ("chunk_mask_mode", "sometimes", "explicit"),
    ("global_caption", "x" * 5000, "at most 4096 characters"),
])
def test_each_new_field_is_bounded(name, value, words):
    with pytest.raises(ValueError, match=words):
        GenerationRequest(**{name: value})


# --- repaint end to end ----------------------------------------------------------------------


def repaint(tiny_engine, source_path, **fields):
    values = dict(task_type="repaint", src_audio_path=str(source_path), repainting_start=2.0, repainting_end=4.0,
                  seeds=[9], audio_format="wav32")
    values.update(fields)
    return samples(tiny_engine.generate(request(**values)).audio_paths[0])


def test_strength_0_keeps_the_source_recording_outside_the_window(tiny_engine, source_path, source_wave):
    out = repaint(tiny_engine, source_path, repaint_strength=0.0)
    source = source_wave.numpy()
    # Window 2-4 s, splice crossfade 0.05 s: before 1.95 s and from 4.05 s on it is the source itself.
    before, after = int(1.95 * RATE), int(4.05 * RATE)
    assert np.allclose(out[:, :before], source[:, :before], atol=1e-6)
    assert np.allclose(out[:, after:], source[:, after:], atol=1e-6)
    assert not np.allclose(out[:, 2 * RATE:4 * RATE], source[:, 2 * RATE:4 * RATE], atol=1e-2)


def test_aggressive_keeps_no_source_recording(tiny_engine, source_path, source_wave):
    out = repaint(tiny_engine, source_path, repaint_mode="aggressive")
    source = source_wave.numpy()
    # No splice: outside the window is the VAE's decoding, not the recording.
    assert not np.allclose(out[:, :RATE], source[:, :RATE], atol=1e-3)


def test_wav_crossfade_blends_at_the_borders(tiny_engine, source_path, source_wave):
    hard = repaint(tiny_engine, source_path, repaint_wav_crossfade_sec=0.0)
    soft = repaint(tiny_engine, source_path, repaint_wav_crossfade_sec=0.5)
    source = source_wave.numpy()
    ramp = slice(int(1.55 * RATE), int(1.95 * RATE))  # inside the 0.5 s ramp before the window
    assert np.allclose(hard[:, ramp], source[:, ramp], atol=1e-6)  # a hard cut keeps the source there
    assert not np.allclose(soft[:, ramp], source[:, ramp], atol=1e-4)  # the blend brings in generated audio
    far = int(1.45 * RATE)
    assert np.allclose(soft[:, :far], source[:, :far], atol=1e-6)
    # Inside the window the splice changes nothing: both runs made the same audio there.
    assert np.allclose(soft[:, 2 * RATE:4 * RATE], hard[:, 2 * RATE:4 * RATE], atol=1e-6)


def test_strength_sets_the_sampler_reinjection_and_blend(tiny_engine, source_path, monkeypatch):
    spy = SamplerSpy(monkeypatch)
    repaint(tiny_engine, source_path, repaint_strength=0.0)
    repaint(tiny_engine, source_path, repaint_mode="aggressive")
    kept, free = (call["kwargs"]["repaint"] for call in spy.calls[-2:])
    assert (kept.injection_ratio, kept.crossfade_frames) == (1.0, 25)
    assert (free.injection_ratio, free.crossfade_frames) == (0.0, 0)
    assert not torch.allclose(spy.calls[-2]["result"], spy.calls[-1]["result"], atol=1e-4)


# --- cover-nofsq -----------------------------------------------------------------------------


def test_cover_nofsq_sees_the_clean_source_where_cover_sees_it_through_fsq(builder, source_wave):
    cover = builder.build(request(task_type="cover"), seeds=[5], duration=None, source=source_wave)
    nofsq = builder.build(request(task_type="cover-nofsq"), seeds=[5], duration=None, source=source_wave)
    assert cover.is_cover.all() and not nofsq.is_cover.any()
    assert torch.equal(cover.source_latents, nofsq.source_latents)
    assert torch.equal(builder.cover_source(nofsq), nofsq.source_latents)
    assert not torch.allclose(builder.cover_source(cover), cover.source_latents, atol=1e-3)
    assert nofsq.chunk_mask.all() and nofsq.output_samples == source_wave.shape[-1]


def test_cover_nofsq_has_the_cover_instruction_and_differs_from_cover(tiny_engine, source_path):
    nofsq = request(task_type="cover-nofsq", src_audio_path=str(source_path))
    assert conditioning.task_instruction(nofsq) == conditioning.task_instruction(request(task_type="cover"))
    made = {task: samples(tiny_engine.generate(request(task_type=task, src_audio_path=str(source_path),
                                                       audio_format="wav32")).audio_paths[0])
            for task in ("cover", "cover-nofsq")}
    assert made["cover"].shape == made["cover-nofsq"].shape
    assert not np.allclose(made["cover"], made["cover-nofsq"], atol=1e-3)


def test_cover_nofsq_needs_a_source():
    with pytest.raises(GenerationError, match="needs source audio"):
        resolve_task(request(task_type="cover-nofsq"))


# --- chunk_mask_mode -------------------------------------------------------------------------


def test_auto_chunk_mask_is_the_model_decided_value_everywhere(builder, source_wave, tiny_engine, source_path):
    window = dict(task_type="repaint", repainting_start=1.0, repainting_end=3.0)
    explicit = builder.build(request(**window), seeds=[5], duration=None, source=source_wave)
    auto = builder.build(request(**window, chunk_mask_mode="auto"), seeds=[5], duration=None, source=source_wave)
    assert explicit.chunk_mask[:, 25:75].all() and not explicit.chunk_mask[:, :25].any()
    assert auto.chunk_mask.eq(AUTO_CHUNK_MASK).all()
    assert torch.equal(auto.repaint_mask, explicit.repaint_mask)  # the source is still kept outside
    outputs = [samples(tiny_engine.generate(request(**window, src_audio_path=str(source_path), chunk_mask_mode=mode,
                                                    repaint_mode="aggressive", audio_format="wav32")).audio_paths[0])
               for mode in ("explicit", "auto")]
    assert not np.allclose(outputs[0], outputs[1], atol=1e-4)


# --- global_caption --------------------------------------------------------------------------


def test_global_caption_reaches_lego_sft_checkpoints_only(tiny_engine, monkeypatch):
    def song(global_caption: str) -> np.ndarray:
        made = tiny_engine.generate(request(global_caption=global_caption, audio_duration=10.0, audio_format="wav32"))
        return samples(made.audio_paths[0])

    assert np.array_equal(song("a calm ballad"), song("a loud anthem"))  # other checkpoints ignore it
    monkeypatch.setitem(tiny_engine.dits[TURBO].config, "is_lego_sft", True)
    assert not np.allclose(song("a calm ballad"), song("a loud anthem"), atol=1e-4)


def test_lego_sft_caption_block():
    lego = request(task_type="lego", prompt="fuzzy bass", global_caption="a garage rock song", track_name="bass")
    text = conditioning.caption_prompt(lego, 30.0, lego_sft=True)
    assert "Global: a garage rock song\nLocal: fuzzy bass\nMask Control: true" in text
    auto = lego.model_copy(update={"chunk_mask_mode": "auto"})
    assert "Mask Control: false" in conditioning.caption_prompt(auto, 30.0, lego_sft=True)
    segment = lego.model_copy(update={"instruction": "Generate a segment of the BASS track:"})
    assert "Local: fuzzy bass\nMask Control: true" in conditioning.caption_prompt(segment, 30.0, lego_sft=True)
    assert "Global:" not in conditioning.caption_prompt(segment, 30.0, lego_sft=True)
    assert "a garage rock song" not in conditioning.caption_prompt(lego, 30.0)


def test_a_partial_cover_on_a_lego_sft_checkpoint_switches_to_the_plain_caption(tiny_engine, source_path,
                                                                                  monkeypatch):
    captions: list[str] = []
    original = conditioning.caption_prompt

    def recording(req, duration, **options):
        captions.append(original(req, duration, **options))
        return captions[-1]

    monkeypatch.setattr(conditioning, "caption_prompt", recording)
    monkeypatch.setitem(tiny_engine.dits[TURBO].config, "is_lego_sft", True)
    tiny_engine.generate(request(task_type="cover", src_audio_path=str(source_path), audio_cover_strength=0.5,
                                 global_caption="a whole song"))
    assert "Global: a whole song\nLocal: warm synths" in captions[0]
    assert "Global:" not in captions[1] and "warm synths" in captions[1]
