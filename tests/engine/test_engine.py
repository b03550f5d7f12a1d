"""MusicEngine end to end on the tiny checkpoints: files, seeds, models, tasks, progress."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from acestep_api.engine import conditioning
from acestep_api.dialects import official
from acestep_api.engine.encoding import FILE_EXTENSIONS
from acestep_api.engine.engine import MusicEngine
from acestep_api.engine.request import AUDIO_FORMATS, GenerationError, GenerationRequest, SongMetas
from acestep_api.engine.sampler import FlowMatchSampler
from acestep_api.engine.seeds import SEED_MAX, initial_noise, item_generators, resolve_seeds
from tests.audio_files import AAC_FRAME, read_audio

LATENT_FRAME_SECONDS = 1 / 25


def fixed(**fields) -> GenerationRequest:
    """A short, seeded, single-item request; fields override."""
    values = dict(prompt="calm piano", lyrics="[verse]\nla la", audio_duration=10.0, batch_size=1,
                  use_random_seed=False, seeds=[11], audio_format="wav")
    values.update(fields)
    return GenerationRequest(**values)


def read(path: str) -> tuple[np.ndarray, int]:
    return sf.read(path, dtype="float32", always_2d=True)


# --- Seeds --------------------------------------------------------------------------------


def test_random_seeds_when_asked_or_given_minus_one():
    for chosen in (resolve_seeds(True, [5, 6], 3), resolve_seeds(False, [-1, -1, -1], 3)):
        assert len(chosen) == 3
        assert all(0 <= s <= SEED_MAX for s in chosen)
    # use_random_seed wins over given seeds (a clash has probability 2**-32).
    assert resolve_seeds(True, [5, 6], 2) != [5, 6]


def test_single_seed_fixes_item_zero_only_and_lists_map_item_by_item():
    single = resolve_seeds(False, [42], 3)
    assert single[0] == 42 and len(single) == 3
    assert all(0 <= s <= SEED_MAX for s in single[1:])
    mapped = resolve_seeds(False, [7, -1, 9, 10, 11], 3)
    assert mapped[0] == 7 and mapped[2] == 9 and len(mapped) == 3
    assert len(resolve_seeds(False, [], 2)) == 2


def test_item_noise_depends_only_on_its_own_seed():
    pair = initial_noise(item_generators([5, 7], "cpu"), 20, 8, "cpu", torch.float32)
    alone = initial_noise(item_generators([7], "cpu"), 20, 8, "cpu", torch.float32)
    expected = torch.randn((1, 20, 8), generator=torch.Generator("cpu").manual_seed(7))
    assert pair.shape == (2, 20, 8)
    assert torch.equal(pair[1:], alone)
    assert torch.equal(alone, expected)


# --- Prompts ------------------------------------------------------------------------------


def test_caption_prompt_layout_and_metas():
    request = fixed(prompt="lofi beat", bpm=90, time_signature="4")
    text = conditioning.caption_prompt(request, 30.7)
    assert text == (
        "# Instruction\nFill the audio semantic mask based on the given conditions:\n\n"
        "# Caption\nlofi beat\n\n# Metas\n- bpm: 90\n- timesignature: 4\n- keyscale: N/A\n"
        "- duration: 30 seconds\n<|endoftext|>\n"
    )


def test_instruction_follows_the_task_unless_custom():
    assert conditioning.task_instruction(fixed(task_type="cover")).startswith("Generate audio semantic tokens")
    lego = fixed(task_type="lego", track_name="drums")
    assert conditioning.task_instruction(lego) == "Generate the DRUMS track based on the audio context:"
    assert conditioning.task_instruction(fixed(instruction="Do this")) == "Do this:"


def test_lyrics_prompt_marks_instrumentals():
    assert conditioning.lyrics_prompt(fixed(lyrics="[inst]", vocal_language="de")) == (
        "# Languages\nde\n\n# Lyric\n[Instrumental]<|endoftext|>"
    )
    assert "# Lyric\n[verse]\nla la<|endoftext|>" in conditioning.lyrics_prompt(fixed())


def test_tokens_are_right_padded_with_the_pad_id(tiny_engine):
    tokenizer = tiny_engine.tokenizer
    ids, mask = conditioning.tokenize_right_padded(tokenizer, ["a", "a much longer text here"], 256, "cpu")
    short = mask[0].sum().item()
    assert mask[0, :short].all() and not mask[0, short:].any()
    assert (ids[0, short:] == tokenizer.pad_token_id).all()
    assert mask[1].all()


# --- Engine -------------------------------------------------------------------------------


def test_engine_attributes(tiny_engine: MusicEngine):
    assert tiny_engine.model_names == ["acestep-v15-turbo", "acestep-v15-base"]
    assert tiny_engine.default_model == "acestep-v15-turbo"
    assert tiny_engine.is_demo is True
    assert tiny_engine.lm_available is False
    assert tiny_engine.device == torch.device("cpu")
    served = tiny_engine.served()
    inventory = {m.name: m for m in served.models}
    assert served.default_model == "acestep-v15-turbo" and inventory["acestep-v15-turbo"].is_turbo
    assert inventory["acestep-v15-base"].supported_task_types == (
        "text2music", "repaint", "cover", "cover-nofsq", "extract", "lego", "complete"
    )
    assert not inventory["acestep-v15-base"].is_turbo
    assert (served.lm_available, served.is_demo, served.device) == (False, True, "cpu")
    assert served.select("/some/path/acestep-v15-base").name == "acestep-v15-base"
    assert served.select("no-such-model").name == "acestep-v15-turbo"


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_turbo_run_writes_48k_stereo_files_of_the_requested_duration(tiny_engine, fmt):
    result = tiny_engine.generate(fixed(audio_format=fmt, audio_duration=10.3))
    assert len(result.audio_paths) == 1 and result.seeds == [11]
    path = Path(result.audio_paths[0])
    assert path.is_absolute() and path.suffix == FILE_EXTENSIONS[fmt] and path.parent == tiny_engine.output_dir
    data, rate = read_audio(path)
    assert rate == 48000 and data.shape[1] == 2
    # AAC decodes with its priming and last-frame padding (tests/audio_files.py) on top.
    slack = 2 * AAC_FRAME / 48000 if fmt == "aac" else 0.0
    assert -LATENT_FRAME_SECONDS <= len(data) / rate - 10.3 <= LATENT_FRAME_SECONDS + slack
    assert result.dit_model == "acestep-v15-turbo"


@pytest.fixture(scope="module")
def seeded_pair(tiny_engine):
    """Two runs with the same seeds, batch of two items with different seeds."""
    request = fixed(batch_size=2, seeds=[1, 2])
    return tiny_engine.generate(request), tiny_engine.generate(request)


def test_same_seeds_give_identical_audio_in_distinct_files(seeded_pair):
    first, second = seeded_pair
    assert first.seeds == second.seeds == [1, 2]
    assert set(first.audio_paths).isdisjoint(second.audio_paths)
    for a, b in zip(first.audio_paths, second.audio_paths):
        assert np.array_equal(read(a)[0], read(b)[0])


def test_different_seeds_give_different_audio(seeded_pair):
    first, _ = seeded_pair
    item0, item1 = (read(p)[0] for p in first.audio_paths)
    assert not np.allclose(item0, item1)


def test_result_fields(seeded_pair):
    result, _ = seeded_pair
    # The engine returns data (None where unknown); the official dialect words it.
    assert result.metas == SongMetas(duration=10.0)
    assert official.shown_metas(result.metas) == {"bpm": "N/A", "duration": 10.0, "genres": "N/A",
                                                  "keyscale": "N/A", "timesignature": "N/A"}
    assert result.prompt == "calm piano" and result.lyrics == "[verse]\nla la"
    timings = {name: value for name, value in dataclasses.asdict(result.timings).items() if value is not None}
    assert set(timings) == {"text_encoding", "diffusion", "decoding", "encoding", "total"}
    assert all(v >= 0 for v in timings.values())
    assert result.steps == 8 and result.lm_metas == {} and result.analysis is None
    info = official.generation_info(result)
    for line in ("- **BPM:** N/A", "- **Duration:** 10 seconds", "- **Key Scale:** N/A",
                 "- **Time Signature:** N/A", "**Seeds:** 1,2", "**Steps:** 8", "**Audio Count:** 2"):
        assert line in info
    assert re.search(r"\*\*⏱️ Total Time: \d+\.\d\ds\*\*$", info)


def test_base_model_with_guidance_and_adg_runs(tiny_engine):
    guided = tiny_engine.generate(fixed(model="acestep-v15-base", inference_steps=4, guidance_scale=5.0))
    plain = tiny_engine.generate(fixed(model="acestep-v15-base", inference_steps=4, guidance_scale=1.0))
    adg = tiny_engine.generate(fixed(model="acestep-v15-base", inference_steps=4, guidance_scale=5.0, use_adg=True))
    assert guided.dit_model == "acestep-v15-base"
    assert "**Steps:** 4" in official.generation_info(guided)
    waves = [read(r.audio_paths[0])[0] for r in (guided, plain, adg)]
    assert all(np.isfinite(w).all() for w in waves)
    assert not np.allclose(waves[0], waves[1])
    assert not np.allclose(waves[0], waves[2])


def test_sde_runs_and_is_reproducible(tiny_engine):
    first = tiny_engine.generate(fixed(infer_method="sde"))
    again = tiny_engine.generate(fixed(infer_method="sde"))
    ode = tiny_engine.generate(fixed(infer_method="ode"))
    assert np.array_equal(read(first.audio_paths[0])[0], read(again.audio_paths[0])[0])
    assert not np.allclose(read(first.audio_paths[0])[0], read(ode.audio_paths[0])[0])


def test_progress_fractions_increase_through_the_stages(tiny_engine):
    events: list[tuple[float, str]] = []
    tiny_engine.generate(fixed(), progress=lambda fraction, stage: events.append((fraction, stage)))
    fractions = [f for f, _ in events]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] == 1.0
    stages = [s for _, s in events]
    assert "text encoding" in stages and "decoding" in stages and "encoding" in stages
    steps = [s for s in stages if s.startswith("diffusion step")]
    assert steps[-1] == "diffusion step 8/8" and "diffusion step 1/8" in steps
    assert stages.index("text encoding") < stages.index("diffusion step 1/8") < stages.index("decoding")


def test_unknown_model_falls_back_to_primary(tiny_engine):
    assert tiny_engine.generate(fixed(model="no-such-model")).dit_model == "acestep-v15-turbo"
    assert tiny_engine.select_model("/some/path/acestep-v15-base").name == "acestep-v15-base"


def test_unsupported_task_names_the_model_and_its_tasks(tiny_engine):
    with pytest.raises(GenerationError, match=r"'extract'.*'acestep-v15-turbo'.*text2music, repaint, cover"):
        tiny_engine.generate(fixed(task_type="extract"))


def test_requests_needing_the_lm_fail_cleanly(tiny_engine):
    with pytest.raises(GenerationError, match="^5Hz LM init failed"):
        tiny_engine.generate(fixed(thinking=True))


def test_source_tasks_without_a_source_fail_cleanly(tiny_engine):
    with pytest.raises(GenerationError, match="task_type 'repaint' needs source audio"):
        tiny_engine.generate(fixed(task_type="repaint"))


def test_unreadable_input_audio_names_the_field(tiny_engine, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all" * 10)
    with pytest.raises(GenerationError, match="^reference_audio_path: .*could not be decoded"):
        tiny_engine.generate(fixed(reference_audio_path=str(broken)))


def test_cover_without_audio_falls_back_to_text2music(tiny_engine):
    cover = tiny_engine.generate(fixed(task_type="cover"))
    plain = tiny_engine.generate(fixed())
    assert np.array_equal(read(cover.audio_paths[0])[0], read(plain.audio_paths[0])[0])


def test_nan_latents_fail_with_a_readable_error(tiny_engine, monkeypatch):
    def nan_sampler(self, noise, *args, **kwargs):
        return torch.full_like(noise, float("nan"))

    monkeypatch.setattr(FlowMatchSampler, "__call__", nan_sampler)
    with pytest.raises(GenerationError, match="NaN or Inf"):
        tiny_engine.generate(fixed())


def test_batch_size_is_clamped_to_max_batch(tiny_engine, monkeypatch):
    monkeypatch.setattr(tiny_engine, "max_batch", 1)
    assert len(tiny_engine.generate(fixed(batch_size=3, seeds=[1, 2, 3])).audio_paths) == 1
