"""Schedules, guidance and the denoising loop, on synthetic tensors and a stand-in DiT."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from acestep_api.engine import seeds
from acestep_api.engine.sampler import (
    ADG,
    ADG_ANGLE_CLIP,
    APG,
    TURBO_ALLOWED_TIMESTEPS,
    TURBO_TABLES,
    ConditionSwitch,
    FlowMatchSampler,
    GuidanceInterval,
    RepaintGuide,
    base_schedule,
    build_schedule,
    guidance_active,
    snap_custom_timesteps,
    snap_turbo_shift,
    start_from_source,
    turbo_schedule,
)

# docs/pipeline.md#turbo-schedule, as published (4 decimals).
DOCUMENTED_TURBO_TABLES = {
    1.0: [1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125],
    2.0: [1, 0.9333, 0.8571, 0.7692, 0.6667, 0.5455, 0.4, 0.2222],
    3.0: [1, 0.9545, 0.9, 0.8333, 0.75, 0.6429, 0.5, 0.3],
}


# --- Schedules ----------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [1.0, 2.0, 3.0])
def test_turbo_tables_match_the_documented_values(shift):
    assert TURBO_TABLES[shift] == pytest.approx(DOCUMENTED_TURBO_TABLES[shift], abs=5e-5)
    assert turbo_schedule(shift).timesteps == TURBO_TABLES[shift]


@pytest.mark.parametrize(
    "shift, snapped", [(2.5, 2.0), (1.5, 1.0), (1.49, 1.0), (2.51, 3.0), (0.3, 1.0), (5.0, 3.0), (3.0, 3.0)]
)
def test_turbo_shift_snaps_to_nearest_table_with_ties_going_down(shift, snapped):
    assert snap_turbo_shift(shift) == snapped
    assert turbo_schedule(shift).timesteps == TURBO_TABLES[snapped]


def test_turbo_ignores_inference_steps():
    schedule = build_schedule(is_turbo=True, inference_steps=50, shift=3.0)
    assert len(schedule) == 8
    assert schedule.timesteps == TURBO_TABLES[3.0]


def test_allowed_turbo_timesteps_are_the_twenty_table_values():
    assert len(TURBO_ALLOWED_TIMESTEPS) == 20
    for table in TURBO_TABLES.values():
        for t in table:
            assert any(math.isclose(t, allowed) for allowed in TURBO_ALLOWED_TIMESTEPS)


def test_custom_timesteps_strip_trailing_zeros_and_snap():
    snapped = snap_custom_timesteps([0.97, 0.52, 0.31, 0.0, 0.0])
    assert snapped == pytest.approx([0.9545454545, 0.5, 0.3])
    # A zero inside the list is not trailing: it stays and snaps to the smallest value.
    assert snap_custom_timesteps([0.5, 0.0, 0.3, 0.0]) == pytest.approx([0.5, 0.125, 0.3])


def test_custom_timesteps_keep_at_most_twenty():
    values = [1.0 - i / 30 for i in range(25)]
    assert len(snap_custom_timesteps(values)) == 20


def test_turbo_schedule_uses_custom_timesteps_and_falls_back_when_all_zero():
    schedule = turbo_schedule(3.0, [0.9, 0.42, 0.0])
    assert schedule.timesteps == pytest.approx([0.9, 0.4])
    assert schedule.renoise_timesteps == pytest.approx([0.4, 0.0])
    assert turbo_schedule(1.0, [0.0, 0.0]).timesteps == TURBO_TABLES[1.0]


def test_base_schedule_is_linspace_then_shift():
    plain = base_schedule(4, 1.0)
    assert plain.timesteps == pytest.approx([1.0, 0.75, 0.5, 0.25])
    shifted = base_schedule(4, 3.0)
    assert shifted.timesteps == pytest.approx([3 * t / (1 + 2 * t) for t in (1.0, 0.75, 0.5, 0.25)])
    # SDE re-noising on base follows the unshifted linear grid, whatever the shift.
    assert shifted.renoise_timesteps == pytest.approx([0.75, 0.5, 0.25, 0.0])
    assert len(build_schedule(is_turbo=False, inference_steps=30, shift=3.0, timesteps=[0.5])) == 30


def test_guidance_only_for_non_turbo_above_one():
    assert guidance_active(7.0, is_turbo=False)
    assert not guidance_active(7.0, is_turbo=True)
    assert not guidance_active(1.0, is_turbo=False)


# --- APG ----------------------------------------------------------------------------------


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_apg_vanishes_when_condition_difference_is_parallel_to_v_cond():
    v_cond = _randn(2, 16, 4)
    v_uncond = 0.4 * v_cond  # difference = 0.6 * v_cond, entirely parallel
    guided = APG(7.0)(v_cond, v_uncond, x=torch.zeros_like(v_cond), t=0.5)
    assert torch.allclose(guided, v_cond, atol=1e-6)


def test_apg_adds_the_orthogonal_part_scaled_by_w_minus_one():
    # Along time, per (batch, channel): v_cond = [1,1,1,1], difference = [a,-a,a,-a] (orthogonal).
    v_cond = torch.ones(1, 4, 2)
    difference = torch.tensor([0.5, -0.5, 0.5, -0.5]).view(1, 4, 1).expand(1, 4, 2)
    guided = APG(3.0)(v_cond, v_cond - difference, x=torch.zeros_like(v_cond), t=0.5)
    assert torch.allclose(guided, v_cond + 2.0 * difference, atol=1e-6)


def test_apg_clips_the_difference_norm_over_time_per_channel():
    v_cond = torch.ones(1, 4, 2)
    pattern = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, 4, 1)
    # Channel 0: norm 40 (clipped to 2.5); channel 1: norm 1 (kept).
    difference = torch.cat([20.0 * pattern, 0.5 * pattern], dim=-1)
    update = (APG(2.0)(v_cond, v_cond - difference, x=torch.zeros_like(v_cond), t=0.5) - v_cond)
    norms = update.norm(dim=1).squeeze(0)
    assert norms[0].item() == pytest.approx(2.5, rel=1e-5)
    assert norms[1].item() == pytest.approx(1.0, rel=1e-5)


def test_apg_momentum_accumulates_with_minus_three_quarters():
    apg = APG(5.0)
    v_cond = _randn(1, 8, 3, seed=1)
    first, second = _randn(1, 8, 3, seed=2), _randn(1, 8, 3, seed=3)
    apg(v_cond, v_cond - first, x=v_cond, t=0.5)
    assert torch.allclose(apg.momentum.running_average, first)
    apg(v_cond, v_cond - second, x=v_cond, t=0.5)
    assert torch.allclose(apg.momentum.running_average, second - 0.75 * first, atol=1e-6)


# --- ADG ----------------------------------------------------------------------------------


def test_adg_is_identity_when_both_predictions_agree():
    v = _randn(1, 5, 4)
    x = _randn(1, 5, 4, seed=9)
    # Not exact: like the official code, cos(theta) is clamped below 1, so theta is never quite 0.
    assert torch.allclose(ADG(7.0)(v, v.clone(), x, t=0.7), v, atol=1e-3)


def test_adg_rotates_by_the_clipped_scaled_angle():
    # One frame, two channels. With x = 0 and t = 1 the x0 estimates are -v.
    angle = 0.1
    x0_uncond = torch.tensor([1.0, 0.0])
    x0_cond = torch.tensor([math.cos(angle), math.sin(angle)])
    x = torch.zeros(1, 1, 2)
    for scale, expected_angle in [(2.0, 1.001 * angle), (9.0, ADG_ANGLE_CLIP)]:
        v = ADG(scale)(-x0_cond.view(1, 1, 2), -x0_uncond.view(1, 1, 2), x, t=1.0)
        x0_new = -v.view(2).double()
        # cos(new) * x0_cond + sin(new)/sin(angle) * (part of the difference orthogonal to x0_uncond)
        expected = math.cos(expected_angle) * x0_cond.double() + torch.tensor([0.0, 1.0], dtype=torch.float64) * (
            math.sin(expected_angle)
        )
        assert torch.allclose(x0_new, expected, atol=1e-5)


# --- The loop -----------------------------------------------------------------------------


class ExactVelocityDiT(torch.nn.Module):
    """A stand-in DiT that knows the clean sample: it returns the exact velocity (x - x0)/t,
    plus an error that depends on the conditioning, so guided and unguided runs differ.
    It records the batch size of every call."""

    def __init__(self, x0: torch.Tensor, condition_effect: float = 0.0):
        super().__init__()
        self.x0 = x0
        self.condition_effect = condition_effect
        self.batch_sizes: list[int] = []
        self.timesteps: list[float] = []

    def forward(self, hidden_states, timestep, timestep_r, encoder_hidden_states, context_latents, return_dict):
        self.batch_sizes.append(hidden_states.shape[0])
        self.timesteps.append(float(timestep[0]))
        t = timestep.view(-1, 1, 1)
        repeats = hidden_states.shape[0] // self.x0.shape[0]
        velocity = (hidden_states - self.x0.repeat(repeats, 1, 1)) / t
        # The error scales with x, so the x0 estimate depends on x (and on SDE's fresh noise).
        condition = encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1)
        velocity = velocity + self.condition_effect * condition * hidden_states
        return (velocity,)


def _inputs(batch=2, frames=12, channels=4, seed=0):
    x0 = _randn(batch, frames, channels, seed=seed)
    noise = _randn(batch, frames, channels, seed=seed + 100)
    states = _randn(batch, 5, 6, seed=seed + 200)
    context = torch.zeros(batch, frames, 2 * channels)
    return x0, noise, states, context


@pytest.mark.parametrize("infer_method", ["ode", "sde"])
@pytest.mark.parametrize("is_turbo", [True, False])
def test_loop_recovers_the_clean_sample_from_an_exact_model(infer_method, is_turbo):
    x0, noise, states, context = _inputs()
    sampler = FlowMatchSampler(ExactVelocityDiT(x0))
    schedule = build_schedule(is_turbo, inference_steps=6, shift=3.0)
    generators = seeds.item_generators([1, 2], "cpu")
    out = sampler(noise, states, context, schedule, infer_method=infer_method, generators=generators)
    assert torch.allclose(out, x0, atol=1e-5)


def test_loop_steps_through_the_schedule_and_reports_each_step():
    x0, noise, states, context = _inputs()
    dit = ExactVelocityDiT(x0)
    seen = []
    FlowMatchSampler(dit)(noise, states, context, turbo_schedule(2.0), on_step=lambda k, n: seen.append((k, n)))
    assert dit.timesteps == pytest.approx(TURBO_TABLES[2.0])
    assert seen == [(k, 8) for k in range(1, 9)]


def test_sde_is_reproducible_from_its_generators_and_differs_from_ode():
    x0, noise, states, context = _inputs()
    # An imperfect model (condition offset) so the re-noising leaves a trace in the result.
    sampler = FlowMatchSampler(ExactVelocityDiT(x0, condition_effect=0.5))
    schedule = turbo_schedule(3.0)

    def run(seed_list, method="sde"):
        return sampler(noise, states, context, schedule, infer_method=method,
                       generators=seeds.item_generators(seed_list, "cpu"))

    first, again, other = run([1, 2]), run([1, 2]), run([3, 4])
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert not torch.allclose(first, run([1, 2], method="ode"))


def test_guidance_doubles_the_batch_only_inside_the_interval():
    x0, noise, states, context = _inputs()
    dit = ExactVelocityDiT(x0, condition_effect=1.0)
    null = torch.full((1, 1, 6), 3.0)
    schedule = base_schedule(4, 1.0)  # t = 1, .75, .5, .25
    FlowMatchSampler(dit, null)(
        noise, states, context, schedule, guidance_scale=4.0, guidance_interval=GuidanceInterval(0.0, 0.5)
    )
    assert dit.batch_sizes == [2, 2, 4, 4]


def test_guidance_changes_the_result_and_momentum_moves_only_on_guided_steps(monkeypatch):
    x0, noise, states, context = _inputs()
    null = torch.full((1, 1, 6), 3.0)
    schedule = base_schedule(4, 1.0)

    def run(scale, interval=GuidanceInterval()):
        return FlowMatchSampler(ExactVelocityDiT(x0, condition_effect=1.0), null)(
            noise, states, context, schedule, guidance_scale=scale, guidance_interval=interval
        )

    unguided = run(1.0)
    assert not torch.allclose(run(4.0), unguided)
    # An interval that contains no step leaves the run unguided.
    assert torch.allclose(run(4.0, GuidanceInterval(0.1, 0.2)), unguided)

    updates = []
    original = APG.__call__

    def counting(self, *args, **kwargs):
        updates.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(APG, "__call__", counting)
    run(4.0, GuidanceInterval(0.6, 1.0))
    assert len(updates) == 2  # t = 1 and .75


def test_adg_is_used_when_asked():
    x0, noise, states, context = _inputs()
    null = torch.full((1, 1, 6), 3.0)
    schedule = base_schedule(4, 1.0)

    def run(use_adg):
        return FlowMatchSampler(ExactVelocityDiT(x0, condition_effect=1.0), null)(
            noise, states, context, schedule, guidance_scale=4.0, use_adg=use_adg
        )

    apg, adg = run(False), run(True)
    assert torch.isfinite(adg).all()
    assert not torch.allclose(apg, adg)


# --- Partial cover, repaint, noised-source start -----------------------------------------


class RecordingDiT(ExactVelocityDiT):
    """Also records the encoder states, context and input of every call."""

    def __init__(self, x0, condition_effect=0.0):
        super().__init__(x0, condition_effect)
        self.states, self.contexts, self.inputs = [], [], []

    def forward(self, hidden_states, timestep, timestep_r, encoder_hidden_states, context_latents, return_dict):
        self.states.append(encoder_hidden_states.clone())
        self.contexts.append(context_latents.clone())
        self.inputs.append(hidden_states.clone())
        return super().forward(hidden_states, timestep, timestep_r, encoder_hidden_states, context_latents, return_dict)


@pytest.mark.parametrize("strength, first_step", [(0.5, 4), (0.3, 2), (0.99, 7), (0.0, 0)])
def test_cover_strength_switches_conditions_after_int_steps_times_strength(strength, first_step):
    x0, noise, states, context = _inputs()
    other_states, other_context = states + 10.0, context + 1.0
    dit = RecordingDiT(x0)
    switch = ConditionSwitch(strength, other_states, other_context)
    FlowMatchSampler(dit)(noise, states, context, turbo_schedule(3.0), switch=switch)
    seen = [torch.equal(s, other_states) and torch.equal(c, other_context) for s, c in zip(dit.states, dit.contexts)]
    assert seen == [False] * first_step + [True] * (8 - first_step)


def test_cover_strength_switch_under_guidance_keeps_the_null_half():
    x0, noise, states, context = _inputs()
    null = torch.full((1, 1, 6), 3.0)
    dit = RecordingDiT(x0, condition_effect=1.0)
    switch = ConditionSwitch(0.5, states + 10.0, context + 1.0)
    FlowMatchSampler(dit, null)(noise, states, context, base_schedule(4, 1.0), guidance_scale=4.0, switch=switch)
    assert [s.shape[0] for s in dit.states] == [4, 4, 4, 4]
    for step, recorded in enumerate(dit.states):
        expected = states + 10.0 if step >= 2 else states
        assert torch.equal(recorded[:2], expected)
        assert torch.equal(recorded[2:], null.expand_as(states))


def _repaint_case(frames=40):
    x0, noise, states, context = _inputs(frames=frames)
    clean = _randn(2, frames, 4, seed=7)
    mask = torch.zeros(2, frames, dtype=torch.bool)
    mask[:, 15:25] = True
    return x0, noise, states, context, clean, mask


def test_repaint_reinjects_the_noised_source_during_the_first_half_only():
    x0, noise, states, context, clean, mask = _repaint_case()
    dit = RecordingDiT(x0)
    guide = RepaintGuide(mask, clean, crossfade_frames=10)
    schedule = turbo_schedule(1.0)  # t = 1, .875, ..., .125
    FlowMatchSampler(dit)(noise, states, context, schedule, repaint=guide)
    outside = ~mask
    for step in range(1, 8):
        t = schedule.timesteps[step]
        expected = t * noise + (1 - t) * clean
        injected = torch.allclose(dit.inputs[step][outside], expected[outside], atol=1e-6)
        # Steps 0..3 are followed by an injection (round(0.5 * 8) = 4): the inputs of steps 1..4.
        assert injected == (step <= 4), step
    # Inside the window the model's own trajectory is kept.
    assert not torch.allclose(dit.inputs[1][mask], (0.875 * noise + 0.125 * clean)[mask])


def test_repaint_result_is_the_source_outside_the_window_and_crossfades_at_its_edges():
    x0, noise, states, context, clean, mask = _repaint_case()
    guide = RepaintGuide(mask, clean, crossfade_frames=10)
    out = FlowMatchSampler(ExactVelocityDiT(x0))(noise, states, context, turbo_schedule(3.0), repaint=guide)
    # The exact model lands on x0 inside; the blend restores the source outside the ramps.
    assert torch.equal(out[:, :5], clean[:, :5]) and torch.equal(out[:, 35:], clean[:, 35:])
    assert torch.allclose(out[:, 15:25], x0[:, 15:25], atol=1e-5)
    weights = guide.blend_weights()[0]
    assert weights[5:15].tolist() == pytest.approx([k / 11 for k in range(1, 11)])
    assert weights[25:35].tolist() == pytest.approx([1 - k / 11 for k in range(1, 11)])
    assert torch.allclose(out[:, 10], weights[10] * x0[:, 10] + (1 - weights[10]) * clean[:, 10], atol=1e-5)


def test_repaint_crossfade_width_and_window_at_the_edge():
    mask = torch.zeros(1, 30, dtype=torch.bool)
    mask[:, :12] = True  # window at the very start: only a right ramp
    weights = RepaintGuide(mask, torch.zeros(1, 30, 2), crossfade_frames=3).blend_weights()[0]
    assert weights[:12].tolist() == [1.0] * 12
    assert weights[12:15].tolist() == pytest.approx([0.75, 0.5, 0.25])
    assert weights[15:].tolist() == [0.0] * 15
    # A window covering everything leaves the result untouched.
    full = torch.ones(1, 30, dtype=torch.bool)
    assert RepaintGuide(full, torch.zeros(1, 30, 2)).blend_weights().eq(1).all()


def test_start_from_source_picks_the_nearest_schedule_value_and_cuts_the_schedule():
    noise, source = _randn(1, 6, 2, seed=1), _randn(1, 6, 2, seed=2)
    schedule = turbo_schedule(3.0)  # 1, .9545, .9, .8333, .75, .6429, .5, .3
    x, cut = start_from_source(schedule, noise, source, strength=0.3)  # 1 - 0.3 = 0.7 -> 0.75
    assert cut.timesteps == schedule.timesteps[4:] and cut.renoise_timesteps == schedule.renoise_timesteps[4:]
    assert torch.allclose(x, 0.75 * noise + 0.25 * source)
    dit = RecordingDiT(source)
    out = FlowMatchSampler(dit)(noise, _randn(1, 5, 6), torch.zeros(1, 6, 4), cut, start=x)
    assert torch.equal(dit.inputs[0], x) and len(dit.inputs) == 4
    assert torch.allclose(out, source, atol=1e-5)


# --- Against the official model code (tests/data/golden, docs/pipeline.md#checkpoints) ------------

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"


@pytest.mark.skipif(not (GOLDEN / "golden_generate.safetensors").is_file(), reason="golden data not present")
def test_text2music_matches_the_official_turbo_run():
    """Seeds -> noise, silence conditions, and the 8-step turbo loop, against official outputs."""
    from safetensors.torch import load_file

    from acestep_api.engine.loading.dit import load_dit_checkpoint
    from acestep_api.engine.conditioning import TextEncoding, build_text2music_conditions

    golden = {k.removeprefix("generate.t2m."): v for k, v in load_file(GOLDEN / "golden_generate.safetensors").items()
              if k.startswith("generate.t2m.")}
    dit = load_dit_checkpoint(GOLDEN / "acestep-v15-tiny")
    frames, channels = golden["noise"].shape[1:]

    noise = seeds.initial_noise(seeds.item_generators([11, 22], "cpu"), frames, channels, "cpu", torch.float32)
    assert torch.equal(noise, golden["noise"])

    texts = TextEncoding(golden["text_hidden_states"], golden["text_attention_mask"].bool(),
                         golden["lyric_hidden_states"], golden["lyric_attention_mask"].bool())
    timbre_frames = golden["refer_audio_acoustic_hidden_states_packed"].shape[1]
    conditions = build_text2music_conditions(dit.condition_encoder, texts, dit.silence_latent, frames, timbre_frames)
    assert torch.equal(conditions.context_latents, golden["context_latents"])

    steps_seen = []
    latents = FlowMatchSampler(dit.transformer, dit.condition_encoder.null_condition_emb)(
        noise, conditions.encoder_hidden_states, conditions.context_latents, turbo_schedule(3.0),
        on_step=lambda k, n: steps_seen.append(k),
    )
    assert turbo_schedule(3.0).timesteps == pytest.approx(golden["timesteps"].tolist(), abs=1e-7)
    assert steps_seen == list(range(1, 9))
    assert torch.allclose(latents, golden["target_latents"], rtol=1e-4, atol=1e-5)
