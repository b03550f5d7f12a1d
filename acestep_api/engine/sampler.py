"""The flow-matching sampler around diffusers' ACE-Step DiT, with the official semantics.

Convention (docs/pipeline.md#flow-matching-convention): ``x_t = t*noise + (1-t)*x0``, the DiT predicts
``v = noise - x0``, and sampling integrates from t=1 down to 0. The x0 estimate at t is
``x - v*t``; the last step returns it, which is the same as an Euler step to t=0.

We own the loop (instead of calling ``AceStepPipeline.__call__``) because the official
server differs from diffusers in the turbo schedule (fixed 8-step tables, shift snapping,
custom timesteps snapping), the guidance interval (gated on t itself), ADG and SDE, the
``audio_cover_strength`` condition switch, repaint source re-injection with its boundary
crossfade, and the noised-source start of ``cover_noise_strength`` (docs/pipeline.md#the-dit-sampler).
APG itself is diffusers' ``normalized_guidance``, which is the official ``apg_forward``.

diffusers' transformer has no cross-attention K/V cache, so every step recomputes the
cross-attention keys and values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Callable

import torch
from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer, normalized_guidance

from acestep_api.engine.cross_attention import masked_cross_attention

TURBO_SHIFTS = (1.0, 2.0, 3.0)
TURBO_STEPS = 8
MAX_CUSTOM_TIMESTEPS = 20
APG_MOMENTUM = -0.75
APG_NORM_THRESHOLD = 2.5
# The official ADG clips the rotation at 3.14/6 (not math.pi/6); keep the same constant.
ADG_ANGLE_CLIP = 3.14 / 6


def shift_timestep(t: float, shift: float) -> float:
    """The flow-matching shift transform ``s*t/(1+(s-1)*t)``."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def turbo_table(shift: float) -> list[float]:
    """The fixed 8-step turbo table for one of the shifts 1, 2, 3 (terminal 0 excluded)."""
    return [shift_timestep(1.0 - k / TURBO_STEPS, shift) for k in range(TURBO_STEPS)]


TURBO_TABLES: dict[float, list[float]] = {s: turbo_table(s) for s in TURBO_SHIFTS}
# The 20 distinct values of the three tables: custom turbo timesteps snap to these.
TURBO_ALLOWED_TIMESTEPS: list[float] = sorted(
    {round(t, 9): t for table in TURBO_TABLES.values() for t in table}.values(), reverse=True
)


def snap_turbo_shift(shift: float) -> float:
    """Nearest of 1, 2, 3; a tie goes to the smaller shift (2.5 -> 2), as in the official code."""
    return min(TURBO_SHIFTS, key=lambda s: abs(s - shift))


def snap_custom_timesteps(timesteps: list[float]) -> list[float]:
    """Strip trailing zeros, keep at most 20 values, snap each to the nearest allowed turbo value."""
    values = list(timesteps)
    while values and values[-1] == 0:
        values.pop()
    values = values[:MAX_CUSTOM_TIMESTEPS]
    return [min(TURBO_ALLOWED_TIMESTEPS, key=lambda allowed: abs(allowed - t)) for t in values]


@dataclass(frozen=True)
class Schedule:
    """The t value of every step, and where SDE re-noises to after each step."""

    timesteps: list[float]
    renoise_timesteps: list[float]

    def __len__(self) -> int:
        return len(self.timesteps)


def turbo_schedule(shift: float, timesteps: list[float] | None = None) -> Schedule:
    """Turbo: custom timesteps when given (snapped), else the fixed table of the snapped shift.

    ``inference_steps`` does not exist here on purpose: the official turbo model ignores it.
    """
    values = snap_custom_timesteps(timesteps) if timesteps else []
    if not values:
        values = TURBO_TABLES[snap_turbo_shift(shift)]
    # SDE re-noises to the next schedule value (0 after the last step).
    return Schedule(timesteps=list(values), renoise_timesteps=list(values[1:]) + [0.0])


def base_schedule(steps: int, shift: float) -> Schedule:
    """Base/SFT: ``linspace(1, 0, steps+1)`` shifted when shift != 1; custom timesteps are ignored."""
    grid = torch.linspace(1.0, 0.0, steps + 1).tolist()
    if shift != 1.0:
        grid = [shift_timestep(t, shift) for t in grid]
    # The official base SDE re-noises to the unshifted linear t, whatever the shift.
    renoise = [1.0 - (k + 1) / steps for k in range(steps)]
    return Schedule(timesteps=grid[:-1], renoise_timesteps=renoise)


def build_schedule(
    is_turbo: bool, inference_steps: int, shift: float, timesteps: list[float] | None = None
) -> Schedule:
    if is_turbo:
        return turbo_schedule(shift, timesteps)
    return base_schedule(inference_steps, shift)


class APG:
    """Adaptive projected guidance with momentum (the official default for base/SFT)."""

    def __init__(self, guidance_scale: float):
        self.guidance_scale = guidance_scale
        self.momentum = MomentumBuffer(momentum=APG_MOMENTUM)

    def __call__(self, v_cond: torch.Tensor, v_uncond: torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
        # The official call normalises over dim 1 (time), per (batch, channel).
        return normalized_guidance(
            pred_cond=v_cond,
            pred_uncond=v_uncond,
            guidance_scale=self.guidance_scale - 1.0,
            momentum_buffer=self.momentum,
            eta=0.0,
            norm_threshold=APG_NORM_THRESHOLD,
            use_original_formulation=True,
            norm_dim=(1,),
        )

    def keep(self, rows: torch.Tensor) -> None:
        """Only these batch rows go on (the others' jobs left the batch)."""
        if isinstance(self.momentum.running_average, torch.Tensor):
            self.momentum.running_average = self.momentum.running_average[rows]


class ADG:
    """Angle-based dynamic guidance: rotates the x0 estimate away from the unconditional one.

    For every (batch, frame) the angle between the conditional and unconditional x0
    estimates (over channels) is scaled by ``max(w-1, 0) + 1e-3`` and clipped; the
    conditional estimate is rotated by that angle along the direction of the condition's
    difference that is perpendicular to the unconditional estimate.
    """

    def __init__(self, guidance_scale: float):
        self.weight = max(guidance_scale - 1.0, 0.0) + 1e-3

    def keep(self, rows: torch.Tensor) -> None:
        """Stateless: nothing to drop."""

    def __call__(self, v_cond: torch.Tensor, v_uncond: torch.Tensor, x: torch.Tensor, t: float) -> torch.Tensor:
        x0_cond = (x - t * v_cond).double()
        x0_uncond = (x - t * v_uncond).double()
        cos = torch.nn.functional.cosine_similarity(x0_cond, x0_uncond, dim=-1, eps=0.0)
        theta = torch.acos(cos.clamp(-1.0 + 1e-6, 1.0 - 1e-6)).unsqueeze(-1)
        theta_new = (self.weight * theta).clamp(-ADG_ANGLE_CLIP, ADG_ANGLE_CLIP)

        diff = x0_cond - x0_uncond
        along_uncond = (diff * x0_uncond).sum(-1, keepdim=True) / (x0_uncond.square().sum(-1, keepdim=True) + 1e-8)
        perpendicular = diff - along_uncond * x0_uncond
        sin_theta = torch.sin(theta)
        # Where the two estimates are (nearly) parallel, sin(theta) vanishes: scale linearly instead.
        perpendicular_scale = torch.where(
            sin_theta > 1e-3, torch.sin(theta_new) / sin_theta.clamp(min=1e-3), torch.full_like(theta, self.weight)
        )
        x0_new = torch.cos(theta_new) * x0_cond + perpendicular_scale * perpendicular
        return ((x.double() - x0_new) / t).to(x.dtype)


class GuidanceInterval:
    """Guidance applies only while ``start <= t <= end`` (t itself, as the official loop checks)."""

    def __init__(self, start: float = 0.0, end: float = 1.0):
        self.start, self.end = start, end

    def __contains__(self, t: float) -> bool:
        return self.start <= t <= self.end


# Called after each step with (steps done, steps in all). It may return the batch rows that go
# on (indices into the current batch, in order): the others are dropped from the next step on.
StepCallback = Callable[[int, int], Sequence[int] | None]

REPAINT_INJECTION_RATIO = 0.5  # the official default: re-inject the source during the first half
REPAINT_CROSSFADE_FRAMES = 10


@dataclass(frozen=True)
class ConditionSwitch:
    """The second condition set of a partial cover (``audio_cover_strength`` < 1).

    The first ``int(steps * strength)`` steps see the cover conditions; the rest see these
    (text2music instruction, silence source, not cover), as the official loop does.
    """

    strength: float
    encoder_hidden_states: torch.Tensor
    context_latents: torch.Tensor

    def first_step(self, num_steps: int) -> int:
        return int(num_steps * self.strength)

    def keep(self, rows: torch.Tensor) -> "ConditionSwitch":
        return replace(self, encoder_hidden_states=self.encoder_hidden_states[rows],
                       context_latents=self.context_latents[rows])


@dataclass(frozen=True)
class RepaintGuide:
    """Keeps a repaint's source outside its window.

    ``mask`` [B, T] is True where the model generates. After each of the first
    ``round(injection_ratio * steps)`` steps the frames outside the mask are replaced by the
    clean source noised to the step's new t (with the run's initial noise); at the end the
    result is blended into the source with linear ramps ``crossfade_frames`` wide just
    outside the window, so everything further out is the source itself (with 0 frames
    there is no final blend, as in the official loop).
    """

    mask: torch.Tensor
    clean_latents: torch.Tensor
    crossfade_frames: int = REPAINT_CROSSFADE_FRAMES
    injection_ratio: float = REPAINT_INJECTION_RATIO

    def injection_steps(self, num_steps: int) -> int:
        return round(self.injection_ratio * num_steps)

    def keep(self, rows: torch.Tensor) -> "RepaintGuide":
        return replace(self, mask=self.mask[rows], clean_latents=self.clean_latents[rows])

    def inject(self, x: torch.Tensor, t_next: float, noise: torch.Tensor) -> torch.Tensor:
        noised_source = t_next * noise + (1.0 - t_next) * self.clean_latents
        return torch.where(self.mask.unsqueeze(-1), x, noised_source)

    def blend_weights(self) -> torch.Tensor:
        """Per-frame weight of the generated latents [B, T]: 1 in the window, ramps beside it, 0 elsewhere."""
        mask = self.mask.cpu()
        weights = mask.float()
        frames = weights.shape[1]
        for row, item_mask in zip(weights, mask):
            if item_mask.all() or not item_mask.any():
                continue
            inside = torch.nonzero(item_mask).squeeze(-1)
            left, right = int(inside[0]), int(inside[-1]) + 1
            ramp_start = max(left - self.crossfade_frames, 0)
            if left > ramp_start:
                # Endpoints excluded: the ramp never reaches pure source nor pure generation.
                row[ramp_start:left] = torch.linspace(0, 1, left - ramp_start + 2)[1:-1]
            ramp_end = min(right + self.crossfade_frames, frames)
            if ramp_end > right:
                row[right:ramp_end] = torch.linspace(1, 0, ramp_end - right + 2)[1:-1]
        return weights

    def blend(self, x: torch.Tensor) -> torch.Tensor:
        if self.crossfade_frames <= 0:
            return x  # the official loop blends only when a crossfade is asked for
        weights = self.blend_weights().to(device=x.device, dtype=x.dtype).unsqueeze(-1)
        return weights * x + (1.0 - weights) * self.clean_latents


def start_from_source(
    schedule: Schedule, noise: torch.Tensor, source: torch.Tensor, strength: float
) -> tuple[torch.Tensor, Schedule]:
    """``cover_noise_strength``: start from the source noised to the schedule value nearest
    ``1 - strength`` and run only the steps from there on (1 = closest to the source)."""
    target = 1.0 - strength
    start = min(range(len(schedule)), key=lambda k: abs(schedule.timesteps[k] - target))
    t = schedule.timesteps[start]
    x = t * noise + (1.0 - t) * source
    return x, Schedule(schedule.timesteps[start:], schedule.renoise_timesteps[start:])


class FlowMatchSampler:
    """Runs the denoising loop of one DiT: Euler (ODE) or x0-then-renoise (SDE) steps,
    with APG/ADG guidance against the learned null condition when guidance_scale > 1."""

    def __init__(self, transformer: torch.nn.Module, null_condition_emb: torch.Tensor | None = None):
        self.transformer = transformer
        self.null_condition_emb = null_condition_emb

    def predict_velocity(
        self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor, context_latents: torch.Tensor,
        encoder_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The DiT's velocity; ``encoder_mask`` [B, S] (True = a real token) hides the padding
        of a batch whose items' condition sequences differ in length."""
        timestep = t.expand(x.shape[0])
        with masked_cross_attention(self.transformer, encoder_mask):
            return self.transformer(
                hidden_states=x,
                timestep=timestep,
                timestep_r=timestep,
                encoder_hidden_states=encoder_hidden_states,
                context_latents=context_latents,
                return_dict=False,
            )[0]

    @torch.no_grad()
    def __call__(
        self,
        noise: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        context_latents: torch.Tensor,
        schedule: Schedule,
        guidance_scale: float = 1.0,
        use_adg: bool = False,
        guidance_interval: GuidanceInterval | None = None,
        infer_method: str = "ode",
        generators: list[torch.Generator] | None = None,
        on_step: StepCallback | None = None,
        switch: ConditionSwitch | None = None,
        repaint: RepaintGuide | None = None,
        start: torch.Tensor | None = None,
        encoder_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoise ``noise`` [B, T, C] into clean latents [B, T, C].

        ``generators`` (one per batch item) supply the SDE re-noising noise. The official
        server draws it from the global unseeded RNG; we continue each item's seeded
        generator instead, so an SDE run is reproducible from its seeds.

        ``switch`` changes the conditions part-way (partial cover), ``repaint`` keeps the
        source outside a repaint window, and ``start`` replaces the pure-noise start (a
        noised source, with ``schedule`` already cut to match; ``noise`` stays the noise
        that repaint re-injects).

        ``encoder_mask`` [B, S] marks the real tokens of ``encoder_hidden_states`` when the
        items' sequences were padded to one length (items of different jobs). ``on_step`` may
        return the rows that go on; the result then holds those rows only.
        """
        device, dtype = noise.device, noise.dtype
        guidance_interval = guidance_interval or GuidanceInterval()
        num_steps = len(schedule)
        switch_step = switch.first_step(num_steps) if switch is not None else num_steps
        injection_steps = repaint.injection_steps(num_steps) if repaint is not None else 0

        # 1. Guidance: only when asked for and the checkpoint carries a null condition.
        guidance = None
        if guidance_scale > 1.0 and self.null_condition_emb is not None:
            guidance = ADG(guidance_scale) if use_adg else APG(guidance_scale)
        doubled_states, doubled_context = self._doubled(guidance, encoder_hidden_states, context_latents)

        # 2. The schedule runs in the model dtype, like the official loop (bf16 on CUDA).
        timesteps = torch.tensor(schedule.timesteps + [0.0], device=device, dtype=dtype)
        x = noise if start is None else start

        # 3. Denoising loop.
        for k in range(num_steps):
            if k == switch_step:
                encoder_hidden_states, context_latents = switch.encoder_hidden_states, switch.context_latents
                doubled_states, doubled_context = self._doubled(guidance, encoder_hidden_states, context_latents)
            t, t_next = timesteps[k], timesteps[k + 1]
            t_value = float(t)
            if guidance is not None and t_value in guidance_interval:
                doubled_mask = None if encoder_mask is None else torch.cat([encoder_mask, encoder_mask], dim=0)
                v_cond, v_uncond = self.predict_velocity(
                    torch.cat([x, x], dim=0), t, doubled_states, doubled_context, doubled_mask
                ).chunk(2, dim=0)
                v = guidance(v_cond, v_uncond, x, t_value)
            else:
                # Outside the interval the official result is v_cond; the unconditional half
                # would be computed and discarded, so it is skipped.
                v = self.predict_velocity(x, t, encoder_hidden_states, context_latents, encoder_mask)

            if k == num_steps - 1:
                x = x - v * t
            elif infer_method == "sde":
                x0 = x - v * t
                renoise_t = schedule.renoise_timesteps[k]
                x = renoise_t * self._fresh_noise(x, generators) + (1.0 - renoise_t) * x0
            else:
                x = x - v * (t - t_next)
            if k < min(injection_steps, num_steps - 1):
                renoised_to = schedule.renoise_timesteps[k] if infer_method == "sde" else t_next
                x = repaint.inject(x, float(renoised_to), noise)

            if on_step is not None:
                kept = on_step(k + 1, num_steps)
                if kept is not None and len(kept) < x.shape[0]:
                    if not kept:
                        return x[:0]
                    rows = torch.tensor(list(kept), dtype=torch.long, device=device)
                    x, noise = x[rows], noise[rows]
                    encoder_hidden_states, context_latents = encoder_hidden_states[rows], context_latents[rows]
                    doubled_states, doubled_context = self._doubled(guidance, encoder_hidden_states, context_latents)
                    encoder_mask = None if encoder_mask is None else encoder_mask[rows]
                    generators = [generators[i] for i in kept] if generators else generators
                    if guidance is not None:
                        guidance.keep(rows)
                    if switch is not None:
                        switch = switch.keep(rows)
                    if repaint is not None:
                        repaint = repaint.keep(rows)
        if repaint is not None:
            x = repaint.blend(x)
        return x

    def _doubled(
        self, guidance, encoder_hidden_states: torch.Tensor, context_latents: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The conditional and unconditional halves of a guided batch (None when unguided)."""
        if guidance is None:
            return None, None
        null_states = self.null_condition_emb.to(
            device=encoder_hidden_states.device, dtype=encoder_hidden_states.dtype
        ).expand_as(encoder_hidden_states)
        return (
            torch.cat([encoder_hidden_states, null_states], dim=0),
            torch.cat([context_latents, context_latents], dim=0),
        )

    @staticmethod
    def _fresh_noise(like: torch.Tensor, generators: list[torch.Generator] | None) -> torch.Tensor:
        if not generators:
            return torch.randn_like(like)
        item_shape = (1,) + tuple(like.shape[1:])
        return torch.cat(
            [torch.randn(item_shape, generator=g, device=like.device, dtype=like.dtype) for g in generators], dim=0
        )


def guidance_active(guidance_scale: float, is_turbo: bool) -> bool:
    """Turbo checkpoints are guidance-distilled: the official turbo loop ignores every CFG argument."""
    return guidance_scale > 1.0 and not is_turbo

