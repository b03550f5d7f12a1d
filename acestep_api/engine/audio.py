"""Between waveforms and latents: VAE encode of input audio, checks, VAE decode, peak guard, writing.

Follows docs/pipeline.md#vae-decoding and #output-encoding. Files are written with soundfile (libsndfile), which
encodes mp3, wav (16-bit and 32-bit float), flac and ogg/opus itself, and AAC (ADTS) with PyAV,
whose wheel carries FFmpeg's libraries, so no ffmpeg program is needed; each is written under a
temporary name and renamed when complete (acestep_api.atomic_files). The engine's files go
through engine/encoding.py (parallel pieces); ``write_audio`` writes one file the same way.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from acestep_api.engine import encoding
from acestep_api.engine.encoding import EncodePlan, carry_out, check_format
from acestep_api.engine.request import GenerationError

SAMPLE_RATE = 48000
LATENT_RATE = 25
DECODE_CHUNK = 512
DECODE_OVERLAP = 64
# The formats the engine writes and their files' extensions (engine/encoding.py); retention and
# tests read them here too.
FILE_FORMATS = encoding.FILE_FORMATS
FILE_EXTENSIONS = encoding.FILE_EXTENSIONS
# Tiled encode windows, in seconds of audio (docs/pipeline.md#vae-encoding).
ENCODE_CHUNK_SECONDS = 30.0
ENCODE_OVERLAP_SECONDS = 2.0

def hop_length(vae: torch.nn.Module) -> int:
    """Audio samples per latent frame (1920 for the ACE-Step VAE)."""
    return math.prod(vae.config.downsampling_ratios)


def encode_audio(
    vae: torch.nn.Module,
    wave: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    sample: bool = True,
    chunk_seconds: float = ENCODE_CHUNK_SECONDS,
    overlap_seconds: float = ENCODE_OVERLAP_SECONDS,
) -> torch.Tensor:
    """VAE-encode one waveform [channels, samples] into latents [1, T, C], T = samples // hop.

    ``sample`` draws from the latent distribution (``mean + std*eps``, eps from
    ``generator``), as the official handler does; otherwise the mean is returned. Audio
    longer than ``chunk_seconds`` is encoded in overlapping windows whose cores are
    kept (overlap-discard), so a 10-minute source fits in memory. Window edges fall on
    latent-frame boundaries, so the frame count equals a one-shot encode's.
    """
    hop = hop_length(vae)
    rate = int(vae.config.sampling_rate)
    device = next(vae.parameters()).device
    audio = wave.unsqueeze(0).to(device=device, dtype=vae.dtype)
    total = audio.shape[-1] // hop
    chunk = max(1, int(chunk_seconds * rate) // hop)
    overlap = int(overlap_seconds * rate) // hop
    stride = max(1, chunk - 2 * overlap)

    def encode(piece: torch.Tensor) -> torch.Tensor:
        dist = vae.encode(piece).latent_dist
        return dist.sample(generator=generator) if sample else dist.mean

    with torch.no_grad():
        if total <= chunk:
            latents = encode(audio)
        else:
            pieces = []
            for core_start in range(0, total, stride):
                core_end = min(core_start + stride, total)
                window_start = max(0, core_start - overlap)
                window_end = min(total, core_end + overlap)
                # The last window takes the leftover samples too (fewer than one hop).
                sample_end = audio.shape[-1] if window_end == total else window_end * hop
                encoded = encode(audio[..., window_start * hop : sample_end])
                keep_from = core_start - window_start
                pieces.append(encoded[..., keep_from : keep_from + core_end - core_start])
            latents = torch.cat(pieces, dim=-1)
    return latents.transpose(1, 2)


def check_latents(latents: torch.Tensor) -> None:
    """Refuse latents that cannot decode to music, with a message a client can read."""
    if not torch.isfinite(latents).all():
        raise GenerationError(
            "Generation produced NaN or Inf values in the latents; the model output is unusable. "
            "Try another seed, fewer steps or a lower guidance scale."
        )
    if not latents.any():
        raise GenerationError("Generation produced all-zero (silent) latents; nothing to decode.")


def decode_latents(
    vae: torch.nn.Module,
    latents: torch.Tensor,
    chunk: int = DECODE_CHUNK,
    overlap: int = DECODE_OVERLAP,
) -> torch.Tensor:
    """VAE-decode latents [B, T, C] into float32 waveforms [B, channels, samples] on the CPU.

    Sequences longer than ``chunk`` frames are decoded in overlapping windows and only each
    window's core is kept (overlap-discard), so a 10-minute song fits in memory.
    """
    z = latents.transpose(1, 2).to(dtype=vae.dtype)
    length = z.shape[-1]
    with torch.no_grad():
        if length <= chunk:
            return vae.decode(z).sample.float().cpu()

        stride = chunk - 2 * overlap
        pieces = []
        for core_start in range(0, length, stride):
            core_end = min(core_start + stride, length)
            window_start = max(0, core_start - overlap)
            window_end = min(length, core_end + overlap)
            wave = vae.decode(z[..., window_start:window_end]).sample
            # The upsample factor is measured, not assumed (1920 for the ACE-Step VAE).
            upsample = wave.shape[-1] // (window_end - window_start)
            keep_from = (core_start - window_start) * upsample
            keep_to = keep_from + (core_end - core_start) * upsample
            pieces.append(wave[..., keep_from:keep_to].float().cpu())
        return torch.cat(pieces, dim=-1)


def peak_guard(audio: torch.Tensor) -> torch.Tensor:
    """Scale an item down only if it clips: divide by max(peak, 1). No loudness normalisation."""
    peak = audio.abs().amax(dim=tuple(range(1, audio.dim())), keepdim=True)
    return audio / peak.clamp(min=1.0)


def write_audio(wave: torch.Tensor | np.ndarray, path: str | Path, fmt: str, sample_rate: int = SAMPLE_RATE,
                workers: int | None = None) -> Path:
    """Write a [channels, samples] float waveform in ``fmt`` (mp3, wav, wav32, flac, opus or aac),
    atomically; a long MP3 is encoded in parallel chunks on ``workers`` threads (None: one per core)."""
    check_format(fmt)
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().float().cpu().numpy()
    plan = EncodePlan(fmt, sample_rate, (Path(path),), (wave,))
    return carry_out(plan, workers=workers)[0]
