"""How much of its source a repaint keeps: the mode and strength as numbers, and the
waveform splice after decoding (docs/pipeline.md#audio-tasks).

The official handler turns ``repaint_mode`` / ``repaint_strength`` into three numbers: how
long the clean source is re-injected outside the window during sampling, how wide the
final latent blend at the window's edges is, and how wide the crossfade of the splice that,
after decoding, puts the source recording itself back outside the window. "aggressive" keeps
nothing (no re-injection, no blend, no splice), "conservative" keeps the most, "balanced"
goes linearly between them with the strength (0 = conservative, 1 = no re-injection and no
blend, but still a hard-cut splice).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from acestep_api.engine.request import GenerationRequest

MAX_CROSSFADE_FRAMES = 25  # latent frames (1 s at 25 Hz), the conservative blend
MAX_WAV_CROSSFADE_SEC = 0.05  # the conservative splice crossfade


@dataclass(frozen=True)
class RepaintSettings:
    injection_ratio: float  # fraction of the steps after which the source is re-injected
    crossfade_frames: int  # latent blend width on each side of the window
    wav_crossfade_sec: float  # splice crossfade on each side of the window
    splice: bool  # put the source waveform back outside the window after decoding


def repaint_settings(request: GenerationRequest) -> RepaintSettings:
    """The request's mode and strength as numbers; the two crossfade fields, when given, win."""
    if request.repaint_mode == "aggressive":
        keep = 0.0
    elif request.repaint_mode == "conservative":
        keep = 1.0
    else:
        keep = 1.0 - request.repaint_strength
    frames = round(MAX_CROSSFADE_FRAMES * keep)
    wav_seconds = MAX_WAV_CROSSFADE_SEC * keep
    if request.repaint_latent_crossfade_frames is not None:
        frames = request.repaint_latent_crossfade_frames
    if request.repaint_wav_crossfade_sec is not None:
        wav_seconds = request.repaint_wav_crossfade_sec
    return RepaintSettings(keep, frames, wav_seconds, request.repaint_mode != "aggressive")


def splice_weights(samples: int, start: int, end: int, crossfade: int) -> torch.Tensor:
    """Per-sample weight of the generated audio [samples]: 1 inside [start, end), linear ramps
    ``crossfade`` samples wide outside it (endpoints excluded), 0 further out."""
    weights = torch.zeros(samples)
    weights[start:end] = 1.0
    if crossfade > 0:
        left = max(start - crossfade, 0)
        if start > left:
            weights[left:start] = torch.linspace(0.0, 1.0, start - left + 2)[1:-1]
        right = min(end + crossfade, samples)
        if right > end:
            weights[end:right] = torch.linspace(1.0, 0.0, right - end + 2)[1:-1]
    return weights


def splice_source(
    generated: torch.Tensor, source: torch.Tensor, window: tuple[float, float], sample_rate: int, crossfade_sec: float
) -> torch.Tensor:
    """``generated`` [B, 2, n] with the ``source`` recording [2, m] put back outside ``window``
    (seconds); a window covering everything leaves it as it is."""
    samples = min(generated.shape[-1], source.shape[-1])
    start = max(0, min(int(window[0] * sample_rate), samples))
    end = max(start, min(int(window[1] * sample_rate), samples))
    if start == 0 and end >= samples:
        return generated
    weights = splice_weights(samples, start, end, int(crossfade_sec * sample_rate))
    weights = weights.to(device=generated.device, dtype=generated.dtype)
    kept = source[..., :samples].to(device=generated.device, dtype=generated.dtype)
    spliced = generated.clone()
    spliced[..., :samples] = weights * generated[..., :samples] + (1.0 - weights) * kept
    return spliced
