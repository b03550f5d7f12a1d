"""``MusicEngine``: the loaded models, and one call that turns a request into audio files.

The engine knows nothing about HTTP or jobs. ``generate`` blocks; the worker runs it in a
thread. Its steps follow the official handler's text2music path without the 5 Hz LM
(model-pipeline.md 2.2 "pure dit mode").
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from acestep_api.engine import audio, conditioning, seeds
from acestep_api.engine.checkpoints import (
    DitCheckpoint,
    load_dit_checkpoint,
    load_text_encoder,
    load_vae,
    resolve_dit_folder,
)
from acestep_api.engine.request import GenerationError, GenerationRequest, GenerationResult
from acestep_api.engine.sampler import FlowMatchSampler, GuidanceInterval, build_schedule, guidance_active
from acestep_api.engine.tiny import DEMO_MARKER

TEXT_ENCODER_FOLDER = "Qwen3-Embedding-0.6B"
VAE_FOLDER = "vae"
RANDOM_DURATION_RANGE = (10.0, 120.0)  # no duration and no LM: the official DiT picks one at random
MIN_LATENT_FRAMES = 128

Progress = Callable[[float, str], None]

# Progress fractions at which each stage starts; diffusion fills the span up to decoding.
PROGRESS_TEXT, PROGRESS_DIFFUSION, PROGRESS_DECODING, PROGRESS_ENCODING = 0.02, 0.10, 0.85, 0.93


def resolve_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def compute_dtypes(device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(model dtype, VAE dtype), as the official handler picks them (model-pipeline.md 2.1)."""
    if device.type == "cuda":
        return torch.bfloat16, torch.bfloat16
    if device.type == "mps":
        return torch.float16, torch.float16
    return torch.float32, torch.float32


def audio_file_stem(request: GenerationRequest, seed: int, index: int, nonce: str) -> str:
    """A UUID-formatted SHA-256 of the request, the item's seed and index, and a per-call nonce
    (so two jobs with the same parameters never share a file)."""
    payload = {"params": request.model_dump(mode="json"), "seed": seed, "index": index, "nonce": nonce}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()
    return str(uuid.UUID(digest[:32]))


@dataclass
class StageClock:
    """Seconds spent per stage, in the order the stages ran."""

    started: float = field(default_factory=time.perf_counter)
    seconds: dict[str, float] = field(default_factory=dict)
    _mark: float = field(default_factory=time.perf_counter)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._mark
        self._mark = now

    def total(self) -> float:
        return time.perf_counter() - self.started


def generation_info(metas: dict, timings: dict[str, float], seeds_used: list[int], steps: int) -> str:
    """The markdown summary the official server returns as ``generation_info``."""

    def seconds(value: Any) -> str:
        return f"{value:g} seconds" if isinstance(value, (int, float)) else str(value)

    return "\n".join(
        [
            "**🎵 Generation Complete**",
            "",
            f"- **BPM:** {metas['bpm']}",
            f"- **Duration:** {seconds(metas['duration'])}",
            f"- **Key Scale:** {metas['keyscale']}",
            f"- **Time Signature:** {metas['timesignature']}",
            "",
            "**⏱️ Time Costs:**",
            f"  - Text Encoding: {timings['text_encoding']:.2f}s",
            f"  - DiT Diffusion: {timings['diffusion']:.2f}s",
            f"  - VAE Decoding: {timings['decoding']:.2f}s",
            f"  - Audio Encoding: {timings['encoding']:.2f}s",
            "",
            f"**Seeds:** {','.join(str(s) for s in seeds_used)}",
            f"**Steps:** {steps}",
            f"**Audio Count:** {len(seeds_used)}",
            "",
            f"**⏱️ Total Time: {timings['total']:.2f}s**",
        ]
    )


class MusicEngine:
    """The text encoder, the VAE and every configured DiT, loaded once."""

    lm_available = False  # the 5 Hz LM is not part of this engine yet

    def __init__(
        self,
        tokenizer: Any,
        text_encoder: torch.nn.Module,
        vae: torch.nn.Module,
        dits: list[DitCheckpoint],
        output_dir: Path,
        device: torch.device,
        dtype: torch.dtype,
        max_batch: int = 8,
        lm_model: str = "acestep-5Hz-lm-0.6B",
        is_demo: bool = False,
    ):
        if not dits:
            raise ValueError("MusicEngine needs at least one DiT checkpoint")
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.vae = vae
        self.dits = {dit.name: dit for dit in dits}
        self.model_names = [dit.name for dit in dits]
        self.default_model = self.model_names[0]
        self.output_dir = Path(output_dir)
        self.device = device
        self.dtype = dtype
        self.max_batch = max_batch
        self.lm_model = lm_model
        self.is_demo = is_demo
        self.sample_rate = int(vae.config.sampling_rate)
        self.hop_length = math.prod(vae.config.downsampling_ratios)

    @classmethod
    def from_checkpoints(
        cls,
        checkpoint_dir: str | Path,
        config_paths: list[str],
        output_dir: Path,
        device: str = "auto",
        max_batch: int = 8,
        lm_model: str = "acestep-5Hz-lm-0.6B",
    ) -> "MusicEngine":
        """Load the shared text encoder and VAE, then each DiT in ``config_paths`` (primary first)."""
        checkpoint_dir = Path(checkpoint_dir)
        torch_device = resolve_device(device)
        dtype, vae_dtype = compute_dtypes(torch_device)
        tokenizer, text_encoder = load_text_encoder(checkpoint_dir / TEXT_ENCODER_FOLDER, torch_device, dtype)
        vae = load_vae(checkpoint_dir / VAE_FOLDER, torch_device, vae_dtype)
        dits = [
            load_dit_checkpoint(resolve_dit_folder(checkpoint_dir, name), torch_device, dtype)
            for name in dict.fromkeys(config_paths)  # a name configured twice loads once
        ]
        return cls(
            tokenizer,
            text_encoder,
            vae,
            dits,
            output_dir=output_dir,
            device=torch_device,
            dtype=dtype,
            max_batch=max_batch,
            lm_model=lm_model,
            is_demo=(checkpoint_dir / DEMO_MARKER).exists(),
        )

    # --- Inventory ----------------------------------------------------------------------

    def model_inventory(self) -> list[dict]:
        return [
            {
                "name": name,
                "is_default": name == self.default_model,
                "is_loaded": True,
                "is_turbo": self.dits[name].is_turbo,
                "supported_task_types": list(self.dits[name].supported_task_types),
            }
            for name in self.model_names
        ]

    def select_model(self, requested: str | None) -> DitCheckpoint:
        """The DiT named by the request (by folder name or path); unknown or none -> primary."""
        if requested:
            for candidate in (requested, Path(requested).name):
                if candidate in self.dits:
                    return self.dits[candidate]
        return self.dits[self.default_model]

    # --- Generation ---------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, request: GenerationRequest, progress: Progress | None = None) -> GenerationResult:
        clock = StageClock()
        report = progress or (lambda fraction, stage: None)

        # 1. Model, task and capability checks.
        dit = self.select_model(request.model)
        request = self._check_request(request, dit)
        batch_size = min(request.batch_size, self.max_batch)

        # 2. Duration and latent length.
        duration = round(request.audio_duration or random.uniform(*RANDOM_DURATION_RANGE), 1)
        latents_per_second = self.sample_rate / self.hop_length
        frames = int(duration * latents_per_second)
        # The DiT runs on at least 128 frames (padded with silence); the audio is cropped back.
        latent_length = max(frames, MIN_LATENT_FRAMES)

        # 3. Seeds and initial noise.
        seeds_used = seeds.resolve_seeds(request.use_random_seed, request.seeds, batch_size)
        generators = seeds.item_generators(seeds_used, self.device)
        channels = dit.transformer.config.audio_acoustic_hidden_dim
        noise = seeds.initial_noise(generators, latent_length, channels, self.device, self.dtype)

        # 4. Text encoding (identical texts for every item: encode once, repeat).
        report(PROGRESS_TEXT, "text encoding")
        caption = conditioning.caption_prompt(request, duration)
        lyrics = conditioning.lyrics_prompt(request)
        texts = conditioning.encode_texts(self.tokenizer, self.text_encoder, [caption], [lyrics]).repeat(batch_size)

        # 5. Condition encoder: packed cross-attention sequence and context latents.
        conditions = conditioning.build_text2music_conditions(
            dit.condition_encoder, texts, dit.silence_latent, latent_length
        )
        clock.lap("text_encoding")

        # 6. Denoising loop.
        schedule = build_schedule(dit.is_turbo, request.inference_steps, request.shift, request.timesteps)
        guided = guidance_active(request.guidance_scale, dit.is_turbo)
        diffusion_span = PROGRESS_DECODING - PROGRESS_DIFFUSION
        report(PROGRESS_DIFFUSION, f"diffusion step 0/{len(schedule)}")

        def on_step(done: int, total: int) -> None:
            report(PROGRESS_DIFFUSION + diffusion_span * done / total, f"diffusion step {done}/{total}")

        sampler = FlowMatchSampler(dit.transformer, getattr(dit.condition_encoder, "null_condition_emb", None))
        latents = sampler(
            noise,
            conditions.encoder_hidden_states,
            conditions.context_latents,
            schedule,
            guidance_scale=request.guidance_scale if guided else 1.0,
            use_adg=request.use_adg,
            guidance_interval=GuidanceInterval(request.cfg_interval_start, request.cfg_interval_end),
            infer_method=request.infer_method,
            generators=generators,
            on_step=on_step,
        )
        clock.lap("diffusion")

        # 7. Checks, VAE decode, crop to the requested length, peak guard.
        report(PROGRESS_DECODING, "decoding")
        audio.check_latents(latents)
        waves = audio.decode_latents(self.vae, latents)
        waves = audio.peak_guard(waves[..., : frames * self.hop_length])
        clock.lap("decoding")

        # 8. Audio files.
        report(PROGRESS_ENCODING, "encoding")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        nonce = secrets.token_hex(8)
        targets = [
            self.output_dir / f"{audio_file_stem(request, seed, i, nonce)}.{request.audio_format}"
            for i, seed in enumerate(seeds_used)
        ]
        # libsndfile releases the GIL while encoding: the items of a batch encode in parallel.
        with ThreadPoolExecutor(max_workers=min(len(targets), os.cpu_count() or 1)) as pool:
            written = pool.map(
                lambda item: audio.write_audio(item[0], item[1], request.audio_format, self.sample_rate),
                zip(waves, targets),
            )
            paths = [path.resolve() for path in written]
        clock.lap("encoding")

        # 9. Result.
        timings = {**clock.seconds, "total": clock.total()}
        metas = {
            "bpm": request.bpm if request.bpm is not None else "N/A",
            "duration": duration,
            "genres": "N/A",
            "keyscale": request.key_scale or "N/A",
            "timesignature": request.time_signature or "N/A",
        }
        report(1.0, "done")
        return GenerationResult(
            audio_paths=[str(p) for p in paths],
            seeds=seeds_used,
            prompt=request.prompt,
            lyrics=request.lyrics,
            metas=metas,
            dit_model=dit.name,
            lm_model=self.lm_model,
            generation_info=generation_info(metas, timings, seeds_used, len(schedule)),
            timings=timings,
            sample_rate=self.sample_rate,
        )

    def _check_request(self, request: GenerationRequest, dit: DitCheckpoint) -> GenerationRequest:
        """Refuse what this engine cannot serve, with the reason; return the request to run."""
        if request.task_type not in dit.supported_task_types:
            raise GenerationError(
                f"task_type {request.task_type!r} is not supported by model {dit.name!r}; "
                f"it supports: {', '.join(dit.supported_task_types)}"
            )
        if request.needs_lm and not self.lm_available:
            raise GenerationError(
                "5Hz LM init failed: the 5Hz language model is not initialized on this server, "
                "so thinking, sample mode, format and analysis requests cannot run. "
                "Send the request without them, or start the server with the LM enabled."
            )
        has_audio_input = bool(request.src_audio_path or request.reference_audio_path or request.audio_code_string)
        if request.task_type == "cover" and not has_audio_input:
            # Official behaviour: a cover with nothing to cover falls back to text2music.
            return request.model_copy(update={"task_type": "text2music"})
        if request.task_type != "text2music" or has_audio_input:
            what = f"task_type {request.task_type!r}" if request.task_type != "text2music" else "audio input"
            raise GenerationError(
                f"{what} needs audio input support (source audio, reference audio or audio codes), "
                "which this server does not have yet"
            )
        return request
