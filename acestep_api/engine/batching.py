"""Which generation requests may share one DiT call (docs/architecture.md#batching-jobs).

Two requests are compatible when they have the same `BatchKey`: their items can be stacked into
one batch and run through the text encoder, the condition encoder, the denoising loop and the
VAE together, each item keeping its own caption, lyrics, metadata and seed, and each coming out
as it would alone (to float tolerance). The key depends on the request and the engine's fixed
facts only, so it can be computed once, when the job is submitted.

A request gets no key (it runs alone) when its run depends on something the batch cannot share:

- the 5 Hz LM would be asked anything (sample mode, format, thinking, or, with
  ``use_cot_metas``, a missing bpm, key, time signature or duration that phase 1 would fill
  in): the LM runs per job and may change the length, so compatibility is only known after it;
- source or reference audio, audio codes, a task other than text2music, a partial cover
  (``audio_cover_strength`` < 1) or an analysis mode: their inputs are per-job audio, read and
  checked in the run;
- no duration: without the LM the length is drawn at random in the run.
"""

from __future__ import annotations

from dataclasses import dataclass

from acestep_api.engine.request import GenerationRequest
from acestep_api.engine.sampler import build_schedule, guidance_active
from acestep_api.engine.tasks import MIN_LATENT_FRAMES, has_codes, text2music_frames

# phase 1 of the planner fills in whichever of these the request lacks (engine/lm/planner.py).
_PHASE1_FIELDS = ("bpm", "key_scale", "time_signature", "audio_duration")


@dataclass(frozen=True)
class BatchKey:
    """What items of one DiT call must share. Requests with equal keys may be batched."""

    model: str  # the DiT that runs them (the resolved folder name, whatever the request wrote)
    adapter: tuple[str | None, float]  # the LoRA/LoKr adapter and its scale (the default's when none is named)
    task: str
    latent_frames: int  # the length of the latent sequence: the duration at 25 frames per second, at least 128
    timesteps: tuple[float, ...]  # the schedule (steps, shift, custom timesteps, turbo snapping applied)
    renoise_timesteps: tuple[float, ...]
    infer_method: str
    # (guidance_scale, use_adg, cfg_interval_start, cfg_interval_end) when guidance runs, else None
    guidance: tuple[float, bool, float, float] | None
    cover_noise_strength: float


def lm_would_run(request: GenerationRequest, lm_loaded: bool) -> bool:
    """Whether the planner would ask the LM anything for ``request`` (engine/lm/planner.py: plan)."""
    if not lm_loaded or request.skip_lm:
        return False
    if request.needs_lm:
        return True
    return request.use_cot_metas and any(getattr(request, name) in (None, "") for name in _PHASE1_FIELDS)


def batch_key(request: GenerationRequest, *, model: str, adapter: tuple[str | None, float], is_turbo: bool,
              lm_loaded: bool, sample_rate: int, hop: int) -> BatchKey | None:
    """The key of a request the DiT ``model`` would run, or None when it must run alone."""
    alone = (
        request.task_type != "text2music"
        or request.src_audio_path or request.reference_audio_path or has_codes(request)
        or request.audio_cover_strength < 1.0
        or request.analysis_only or request.full_analysis_only or request.extract_codes_only
        or request.audio_duration is None
        or lm_would_run(request, lm_loaded)
    )
    if alone:
        return None
    # The engine rounds the duration to 0.1 s before it computes the frames (MusicEngine._duration).
    frames = max(MIN_LATENT_FRAMES, text2music_frames(round(request.audio_duration, 1), sample_rate, hop))
    schedule = build_schedule(is_turbo, request.inference_steps, request.shift, request.timesteps)
    guidance = None
    if guidance_active(request.guidance_scale, is_turbo):
        guidance = (request.guidance_scale, request.use_adg, request.cfg_interval_start, request.cfg_interval_end)
    return BatchKey(
        model=model,
        adapter=adapter,
        task=request.task_type,
        latent_frames=frames,
        timesteps=tuple(schedule.timesteps),
        renoise_timesteps=tuple(schedule.renoise_timesteps),
        infer_method=request.infer_method,
        guidance=guidance,
        cover_noise_strength=request.cover_noise_strength,
    )
