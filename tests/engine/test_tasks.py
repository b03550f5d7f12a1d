"""Audio-input tasks: windows, reference clips, DiT inputs per task, and the engine end to end."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from acestep_api.engine import audio, conditioning
from acestep_api.engine.loading.dit import load_dit_checkpoint
from acestep_api.engine.lm.vocab import format_audio_codes
from acestep_api.engine.request import DEFAULT_INSTRUCTION, GenerationError, GenerationRequest
from acestep_api.engine.sampler import FlowMatchSampler
from acestep_api.engine.tasks import (
    MIN_LATENT_FRAMES,
    TaskBuilder,
    encode_generators,
    item_codes,
    plan_repaint,
    reference_clip,
    resolve_task,
)

RATE = 48000
HOP = 1920
SOURCE_SECONDS = 6.0  # 150 latent frames: above the 128-frame floor
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


def write_source(path: Path, seconds: float = SOURCE_SECONDS, rate: int = RATE) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    left = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
    right = 0.2 * np.sin(2 * np.pi * 330 * t)
    sf.write(path, np.stack([left, right], axis=1).astype(np.float32), rate, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def source_path(tmp_path_factory) -> Path:
    return write_source(tmp_path_factory.mktemp("sources") / "source.wav")


@pytest.fixture(scope="module")
def source_wave(source_path) -> torch.Tensor:
    from acestep_api.engine.audio_input import load_audio

    return load_audio(source_path)


def request(**fields) -> GenerationRequest:
    values = dict(prompt="warm synths", batch_size=1, use_random_seed=False, seeds=[5], audio_format="wav",
                  inference_steps=4)
    values.update(fields)
    return GenerationRequest(**values)


def seconds(path: str) -> float:
    return sf.info(path).duration


def decoded(path: str) -> np.ndarray:
    return sf.read(path, dtype="float32", always_2d=True)[0]


class SamplerSpy:
    """Wraps FlowMatchSampler.__call__ to keep its keyword arguments and its result."""

    def __init__(self, monkeypatch):
        self.calls: list[dict] = []
        original = FlowMatchSampler.__call__
        spy = self

        def recording(sampler, *args, **kwargs):
            result = original(sampler, *args, **kwargs)
            spy.calls.append({"args": args, "kwargs": kwargs, "result": result})
            return result

        monkeypatch.setattr(FlowMatchSampler, "__call__", recording)


# --- Task resolution ----------------------------------------------------------------------


def test_codes_turn_text2music_into_a_cover_with_the_cover_instruction():
    resolved = resolve_task(request(audio_code_string="<|audio_code_3|>"))
    assert resolved.task_type == "cover"
    assert conditioning.task_instruction(resolved) == "Generate audio semantic tokens based on the given conditions:"


def test_cover_with_nothing_to_cover_is_text2music_but_reference_alone_stays_a_cover():
    assert resolve_task(request(task_type="cover")).task_type == "text2music"
    assert resolve_task(request(task_type="cover", reference_audio_path="/x.wav")).task_type == "cover"


@pytest.mark.parametrize("task", ["repaint", "lego", "extract", "complete"])
def test_source_tasks_without_a_source_say_what_is_missing(task):
    with pytest.raises(GenerationError, match=f"task_type '{task}' needs source audio: send src_audio_path"):
        resolve_task(request(task_type=task))


def test_task_instruction_templates():
    def instruction(**fields):
        return conditioning.task_instruction(request(**fields))

    assert instruction(task_type="repaint") == "Repaint the mask area based on the given conditions:"
    assert instruction(task_type="extract", track_name="vocals") == "Extract the VOCALS track from the audio:"
    assert instruction(task_type="extract") == "Extract the track from the audio:"
    assert instruction(task_type="lego") == "Generate the track based on the audio context:"
    assert instruction(task_type="complete", track_classes=["drums", "bass"]) == (
        "Complete the input track with DRUMS | BASS:"
    )
    assert instruction(task_type="complete") == "Complete the input track:"
    # A client's own instruction wins over the template.
    assert instruction(task_type="extract", track_name="vocals", instruction="Keep it") == "Keep it:"


# --- Windows and reference clips ----------------------------------------------------------


@pytest.mark.parametrize("end", [None, 0.0, -1.0])
def test_repaint_end_defaults_to_the_end_of_the_source(end):
    plan = plan_repaint(6.0, 1.0, end)
    assert (plan.left_pad, plan.right_pad, plan.start, plan.end) == (0.0, 0.0, 1.0, 6.0)
    assert plan.frames(RATE, HOP, 150) == (25, 150)


def test_outpainting_pads_both_sides_and_shifts_the_window():
    plan = plan_repaint(6.0, -2.0, 7.5)
    assert (plan.left_pad, plan.right_pad) == (2.0, 1.5)
    assert (plan.start, plan.end) == (0.0, 9.5)
    assert plan.frames(RATE, HOP, 9 * 25 + 12) == (0, 237)


def test_window_frames_are_floored_and_clamped():
    assert plan_repaint(6.0, 1.01, 2.99).frames(RATE, HOP, 150) == (25, 74)
    assert plan_repaint(6.0, 3.0, 3.0).frames(RATE, HOP, 150) is None  # empty: full generation
    assert plan_repaint(6.0, 5.99, 6.0).frames(RATE, HOP, 150) == (149, 150)


def test_reference_clip_takes_one_ten_second_window_per_third():
    rate = 100  # small rate: positions are easy to read
    wave = torch.arange(45 * rate, dtype=torch.float32).repeat(2, 1)
    clip = reference_clip(wave, random.Random(1), rate)
    assert clip.shape == (2, 30 * rate)
    starts = [int(clip[0, k * 10 * rate]) for k in range(3)]
    third = 15 * rate
    for k, start in enumerate(starts):
        assert k * third <= start <= (k + 1) * third - 10 * rate
        assert torch.equal(clip[0, k * 10 * rate : (k + 1) * 10 * rate], wave[0, start : start + 10 * rate])
    assert torch.equal(reference_clip(wave, random.Random(1), rate), clip)
    assert not torch.equal(reference_clip(wave, random.Random(2), rate), clip)


def test_short_reference_is_repeated_to_thirty_seconds():
    rate = 100
    wave = torch.arange(7 * rate, dtype=torch.float32).repeat(2, 1)
    clip = reference_clip(wave, random.Random(0), rate)
    assert clip.shape == (2, 30 * rate)
    assert set(clip[0].long().tolist()) <= set(range(7 * rate))


# --- DiT inputs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def turbo_builder(tiny_engine) -> TaskBuilder:
    return TaskBuilder(tiny_engine.dits["acestep-v15-turbo"], tiny_engine.vae, tiny_engine.device, tiny_engine.dtype)


def independent_encode(engine, wave: torch.Tensor, seed: int) -> torch.Tensor:
    generator = encode_generators([seed], engine.device)[0]
    return audio.encode_audio(engine.vae, wave, generator)[0]


def test_repaint_inputs(turbo_builder, tiny_engine, source_wave):
    inputs = turbo_builder.build(request(task_type="repaint", repainting_start=1.0, repainting_end=3.0),
                                 seeds=[5, 6], duration=None, source=source_wave)
    assert inputs.latent_length == 150 and inputs.output_samples == source_wave.shape[-1]
    assert inputs.chunk_mask[:, 25:75].all() and not inputs.chunk_mask[:, :25].any()
    assert not inputs.chunk_mask[:, 75:].any()
    assert torch.equal(inputs.repaint_mask, inputs.chunk_mask)
    assert not inputs.is_cover.any()
    # Each item's source is its own seeded VAE sample; the window is silenced in the DiT source.
    for item, seed in enumerate([5, 6]):
        assert torch.equal(inputs.target_latents[item], independent_encode(tiny_engine, source_wave, seed))
    assert not torch.equal(inputs.target_latents[0], inputs.target_latents[1])
    silence = turbo_builder.silence_frames(150)
    assert torch.equal(inputs.source_latents[:, 25:75], silence[25:75].expand(2, -1, -1))
    assert torch.equal(inputs.source_latents[:, :25], inputs.target_latents[:, :25])
    assert torch.equal(inputs.source_latents[:, 75:], inputs.target_latents[:, 75:])
    assert inputs.caption_duration == pytest.approx(SOURCE_SECONDS)


def test_lego_keeps_its_source_inside_the_window(tiny_engine, source_wave):
    base = tiny_engine.dits["acestep-v15-base"]
    builder = TaskBuilder(base, tiny_engine.vae, tiny_engine.device, tiny_engine.dtype)
    inputs = builder.build(request(task_type="lego", model="acestep-v15-base", repainting_start=2.0),
                           seeds=[5], duration=None, source=source_wave)
    assert inputs.chunk_mask[0, 50:].all() and not inputs.chunk_mask[0, :50].any()
    assert torch.equal(inputs.source_latents, inputs.target_latents)
    assert inputs.repaint_mask is not None


@pytest.mark.parametrize("task", ["extract", "complete", "cover"])
def test_whole_source_tasks(turbo_builder, source_wave, task):
    inputs = turbo_builder.build(request(task_type=task), seeds=[5], duration=None, source=source_wave)
    assert inputs.chunk_mask.all() and inputs.repaint_mask is None
    assert torch.equal(inputs.source_latents, inputs.target_latents)
    assert inputs.is_cover.tolist() == [task == "cover"]


def test_short_source_is_padded_to_128_frames_with_silence_from_frame_zero(turbo_builder, source_wave):
    short = source_wave[:, : 2 * RATE]
    inputs = turbo_builder.build(request(task_type="cover"), seeds=[5], duration=None, source=short)
    assert inputs.latent_length == MIN_LATENT_FRAMES and inputs.output_samples == 2 * RATE
    assert torch.equal(inputs.target_latents[0, 50:], turbo_builder.silence_frames(MIN_LATENT_FRAMES - 50))


def test_silent_source_gives_silence_latents(turbo_builder):
    inputs = turbo_builder.build(request(task_type="extract"), seeds=[5], duration=None,
                                 source=torch.zeros(2, 6 * RATE))
    assert torch.equal(inputs.target_latents[0], turbo_builder.silence_frames(150))
    assert torch.equal(inputs.source_latents[0], turbo_builder.silence_frames(150))


def test_codes_decode_to_five_frames_each(turbo_builder, tiny_engine):
    dit = tiny_engine.dits["acestep-v15-turbo"]
    codes = [7, 63999, 12800, 0] * 10
    inputs = turbo_builder.build(resolve_task(request(audio_code_string=format_audio_codes(codes))),
                                 seeds=[5], duration=None, codes=[codes])
    expected = conditioning.codes_to_latents(dit.audio_tokenizer, dit.audio_detokenizer, codes)[0]
    assert expected.shape[0] == 5 * len(codes)
    assert torch.equal(inputs.target_latents[0, :200], expected)
    assert inputs.output_samples == 200 * HOP and inputs.caption_duration == 8.0
    assert inputs.is_cover.all()
    # The cover source is the decoded codes themselves, not a second trip through the tokenizer.
    assert torch.equal(turbo_builder.cover_source(inputs), inputs.target_latents)


def test_reference_timbre_is_the_seeded_encode_of_the_clip_and_silence_without_one(
    turbo_builder, source_wave, monkeypatch
):
    none = turbo_builder.build(request(), seeds=[5, 6], duration=10.0)
    assert torch.equal(none.timbre, conditioning.silence_timbre(turbo_builder.silence, 2))

    # A real 30 s encode takes seconds on CPU (the engine test below does one): here the VAE
    # encode is replaced by a stand-in that records what it was given.
    seen = []

    def fake_encode(vae, wave, generator=None, **kwargs):
        seen.append((wave, generator.initial_seed()))
        return torch.full((1, 750, none.timbre.shape[-1]), float(len(seen)))

    monkeypatch.setattr(audio, "encode_audio", fake_encode)
    given = turbo_builder.build(request(), seeds=[5, 6], duration=10.0, reference=source_wave)
    clip = reference_clip(source_wave, random.Random(5), RATE)  # the clip is drawn once, from item 0's seed
    assert [seed for _, seed in seen] == [6, 7]  # one encode per item, each with its own generator
    assert all(torch.equal(wave, clip) for wave, _ in seen)
    assert given.timbre[:, 0, 0].tolist() == [1.0, 2.0]
    silent = turbo_builder.build(request(), seeds=[5], duration=10.0, reference=torch.zeros(2, RATE))
    assert torch.equal(silent.timbre, conditioning.silence_timbre(turbo_builder.silence, 1))


@pytest.mark.skipif(not (GOLDEN / "golden_generate.safetensors").is_file(), reason="golden data not present")
def test_cover_is_decided_per_item_like_the_official_model(tiny_engine):
    """Golden 'cover' case: is_covers [0, 1]; only item 1's source goes through the FSQ round trip."""
    from safetensors.torch import load_file

    from acestep_api.engine.tasks import TaskInputs

    golden = {k.removeprefix("generate.cover."): v for k, v in load_file(GOLDEN / "golden_generate.safetensors").items()
              if k.startswith("generate.cover.")}
    dit = load_dit_checkpoint(GOLDEN / "acestep-v15-tiny")
    builder = TaskBuilder(dit, tiny_engine.vae, torch.device("cpu"), torch.float32)
    chunk_mask = golden["chunk_masks"][..., 0].bool()
    inputs = TaskInputs(target_latents=golden["src_latents"], source_latents=golden["src_latents"],
                        chunk_mask=chunk_mask, is_cover=golden["is_covers"].bool(), timbre=torch.empty(0),
                        hints=None, repaint_mask=None, output_samples=0, caption_duration=0.0)
    context = conditioning.context_latents(builder.cover_source(inputs), chunk_mask)
    assert torch.allclose(context, golden["context_latents"], rtol=1e-4, atol=1e-5)
    assert torch.equal(context[0, :, :8], golden["src_latents"][0])
    assert not torch.allclose(context[1, :, :8], golden["src_latents"][1])


# --- The engine, end to end -----------------------------------------------------------------


def test_cover_and_repaint_last_as_long_as_the_source(tiny_engine, source_path):
    for task in ("cover", "repaint"):
        result = tiny_engine.generate(request(task_type=task, src_audio_path=str(source_path), repainting_start=2.0,
                                              audio_duration=30.0))
        assert seconds(result.audio_paths[0]) == pytest.approx(SOURCE_SECONDS)
        assert result.metas.duration == pytest.approx(SOURCE_SECONDS)


def test_repaint_keeps_the_source_latents_outside_the_window(tiny_engine, source_path, source_wave, monkeypatch):
    spy = SamplerSpy(monkeypatch)
    tiny_engine.generate(request(task_type="repaint", src_audio_path=str(source_path), repainting_start=2.0,
                                 repainting_end=4.0, seeds=[9]))
    latents = spy.calls[-1]["result"]
    source = independent_encode(tiny_engine, source_wave, 9)
    # Window 50..100; balanced at strength 0.5 blends round(25 * 0.5) = 12 frames on each side:
    # frames before 38 and from 112 on are the source.
    assert torch.allclose(latents[0, :38], source[:38], atol=1e-6)
    assert torch.allclose(latents[0, 112:], source[112:], atol=1e-6)
    assert not torch.allclose(latents[0, 50:100], source[50:100], atol=1e-2)
    assert spy.calls[-1]["kwargs"]["repaint"].crossfade_frames == 12


def test_repaint_crossfade_frames_come_from_the_request(tiny_engine, source_path, source_wave, monkeypatch):
    spy = SamplerSpy(monkeypatch)
    tiny_engine.generate(request(task_type="repaint", src_audio_path=str(source_path), repainting_start=2.0,
                                 repainting_end=4.0, seeds=[9], repaint_latent_crossfade_frames=2))
    latents = spy.calls[-1]["result"]
    source = independent_encode(tiny_engine, source_wave, 9)
    assert torch.allclose(latents[0, :48], source[:48], atol=1e-6)
    assert not torch.allclose(latents[0, 48:50], source[48:50], atol=1e-3)


def test_outpainting_extends_the_output(tiny_engine, source_path):
    result = tiny_engine.generate(request(task_type="repaint", src_audio_path=str(source_path),
                                          repainting_start=-1.0, repainting_end=8.0))
    assert seconds(result.audio_paths[0]) == pytest.approx(SOURCE_SECONDS + 3.0)


def test_cover_strength_switches_to_the_text2music_condition_part_way(tiny_engine, source_path, monkeypatch):
    transformer = tiny_engine.dits["acestep-v15-turbo"].transformer
    contexts: list[torch.Tensor] = []
    original = transformer.forward

    def recording(*args, **kwargs):
        contexts.append(kwargs["context_latents"].clone())
        return original(*args, **kwargs)

    monkeypatch.setattr(transformer, "forward", recording)
    tiny_engine.generate(request(task_type="cover", src_audio_path=str(source_path), audio_cover_strength=0.4))
    assert len(contexts) == 8
    channels = contexts[0].shape[-1] // 2
    silence = conditioning.silence_frames(tiny_engine.dits["acestep-v15-turbo"].silence_latent, 150)[0]
    on_silence = [torch.equal(c[0, :, :channels], silence) for c in contexts]
    assert on_silence == [False] * 3 + [True] * 5  # int(8 * 0.4) = 3 cover steps


def test_full_cover_strength_never_switches(tiny_engine, source_path, monkeypatch):
    spy = SamplerSpy(monkeypatch)
    tiny_engine.generate(request(task_type="cover", src_audio_path=str(source_path)))
    assert spy.calls[-1]["kwargs"]["switch"] is None


def test_partial_cover_second_set_uses_the_text2music_instruction(tiny_engine, source_path, monkeypatch):
    captions: list[str] = []
    original = conditioning.caption_prompt

    def recording(req, duration, **options):
        captions.append(original(req, duration, **options))
        return captions[-1]

    monkeypatch.setattr(conditioning, "caption_prompt", recording)
    tiny_engine.generate(request(task_type="cover", src_audio_path=str(source_path), audio_cover_strength=0.5))
    assert captions[0].startswith("# Instruction\nGenerate audio semantic tokens")
    assert captions[1].startswith(f"# Instruction\n{DEFAULT_INSTRUCTION}")


def test_reference_audio_changes_the_output(tiny_engine, source_path):
    plain = tiny_engine.generate(request(audio_duration=10.0))
    referenced = tiny_engine.generate(request(audio_duration=10.0, reference_audio_path=str(source_path)))
    assert seconds(referenced.audio_paths[0]) == pytest.approx(10.0)
    assert not np.allclose(decoded(plain.audio_paths[0]), decoded(referenced.audio_paths[0]))


def test_audio_codes_give_codes_over_five_seconds(tiny_engine):
    codes = format_audio_codes([11, 222, 3333, 44444] * 9)  # 36 codes -> 7.2 s
    result = tiny_engine.generate(request(audio_code_string=codes))
    assert seconds(result.audio_paths[0]) == pytest.approx(7.2)
    assert result.metas.duration == pytest.approx(7.2)


def test_lm_codes_apply_item_by_item(turbo_builder, tiny_engine):
    req = request(lm_audio_codes=[format_audio_codes([1] * 30), format_audio_codes([2] * 20)], batch_size=2)
    codes = item_codes(req, 2)
    assert codes == [[1] * 30, [2] * 20]
    inputs = turbo_builder.build(resolve_task(req), seeds=[5, 6], duration=None, codes=codes)
    dit = tiny_engine.dits["acestep-v15-turbo"]
    second = conditioning.codes_to_latents(dit.audio_tokenizer, dit.audio_detokenizer, [2] * 20)[0]
    assert torch.equal(inputs.target_latents[1, :100], second)
    assert torch.equal(inputs.target_latents[1, 100:], turbo_builder.silence_frames(150 - 100))
    assert inputs.output_samples == 150 * HOP and inputs.is_cover.all()
    assert item_codes(request(), 2) is None


def test_codes_win_over_source_audio(tiny_engine, source_path):
    codes = format_audio_codes([5] * 40)
    result = tiny_engine.generate(request(task_type="cover", audio_code_string=codes,
                                          src_audio_path=str(source_path)))
    assert seconds(result.audio_paths[0]) == pytest.approx(8.0)


@pytest.mark.parametrize("task", ["lego", "extract", "complete"])
def test_base_only_tasks_run_on_base(tiny_engine, source_path, task):
    result = tiny_engine.generate(request(task_type=task, model="acestep-v15-base", src_audio_path=str(source_path),
                                          track_name="drums", track_classes=["bass"], guidance_scale=3.0))
    assert result.dit_model == "acestep-v15-base"
    assert seconds(result.audio_paths[0]) == pytest.approx(SOURCE_SECONDS)
    assert np.isfinite(decoded(result.audio_paths[0])).all()


def test_turbo_refuses_lego_naming_what_it_supports(tiny_engine, source_path):
    with pytest.raises(GenerationError, match=r"'lego'.*'acestep-v15-turbo'.*it supports: text2music, repaint, cover"):
        tiny_engine.generate(request(task_type="lego", src_audio_path=str(source_path)))


def test_cover_noise_strength_starts_from_the_noised_source(tiny_engine, source_path, monkeypatch):
    spy = SamplerSpy(monkeypatch)
    tiny_engine.generate(request(task_type="cover", src_audio_path=str(source_path), cover_noise_strength=0.5))
    call = spy.calls[-1]
    schedule = call["args"][3]
    assert schedule.timesteps[0] == pytest.approx(0.5) and len(schedule) == 2  # shift 3: ..., .5, .3
    assert call["kwargs"]["start"] is not None


def test_missing_source_file_fails_with_the_field_name(tiny_engine, tmp_path):
    with pytest.raises(GenerationError, match="^src_audio_path: audio file 'gone.wav' does not exist"):
        tiny_engine.generate(request(task_type="cover", src_audio_path=str(tmp_path / "gone.wav")))
    # An upload is named by the field it came in as, never by the file name the server chose.
    upload = str(tmp_path / "3f2a9c0e.wav")
    with pytest.raises(GenerationError) as failed:
        tiny_engine.generate(request(task_type="cover", src_audio_path=upload,
                                     upload_fields={"src_audio_path": "src_audio"}))
    assert str(failed.value) == "src_audio: audio file does not exist"


def test_text2music_does_not_use_a_source(tiny_engine, tmp_path):
    """As the newer official handler: the ACE-Step DAW sends a short silent source with every
    text2music request; the song is as long as asked."""
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros((4800, 2), dtype=np.float32), RATE)
    assert resolve_task(request(src_audio_path=str(silence))).src_audio_path is None
    result = tiny_engine.generate(request(src_audio_path=str(silence), audio_duration=10.0))
    assert seconds(result.audio_paths[0]) == pytest.approx(10.0, abs=HOP / RATE)


def test_tiled_encode_matches_one_shot_and_keeps_the_frame_count(tiny_engine, source_wave):
    wave = source_wave[:, : 6 * RATE - 700]  # not a whole number of frames
    whole = audio.encode_audio(tiny_engine.vae, wave, sample=False)
    tiled = audio.encode_audio(tiny_engine.vae, wave, sample=False, chunk_seconds=2.0, overlap_seconds=0.4)
    assert whole.shape[1] == tiled.shape[1] == wave.shape[-1] // HOP
    assert torch.allclose(tiled, whole, atol=1e-4)
    # Sampling draws from the generator: same seed, same latents.
    first = audio.encode_audio(tiny_engine.vae, wave, torch.Generator().manual_seed(3))
    again = audio.encode_audio(tiny_engine.vae, wave, torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and not torch.allclose(first, whole)
