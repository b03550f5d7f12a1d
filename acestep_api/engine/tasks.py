"""What each task gives the DiT: target and source latents, chunk mask, cover flags, timbre.

Follows the official handler's batch preparation (docs/pipeline.md#audio-tasks), with two
choices of its newer code: an item is a cover when its task is cover or it has audio
codes (not when its instruction text happens to read like the cover one), and lego keeps
its source inside the window (the older code silenced it, erasing the context lego is
meant to build on).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from diffusers.pipelines.ace_step.pipeline_ace_step import TASK_INSTRUCTIONS

from acestep_api.engine import audio, conditioning
from acestep_api.engine.audio_input import is_silent
from acestep_api.engine.lm.vocab import parse_audio_codes
from acestep_api.engine.request import SOURCE_TASK_TYPES, GenerationError, GenerationRequest
from acestep_api.engine.seeds import SEED_MAX

MIN_LATENT_FRAMES = 128  # the DiT runs on at least 5.12 s; shorter outputs are cropped after decoding
FRAMES_PER_CODE = 5  # one 5 Hz code per 5 latent frames
REFERENCE_SECONDS = 30
REFERENCE_WINDOW_SECONDS = 10
WINDOWED_TASKS = ("repaint", "lego")  # tasks whose repainting_start/end make a window
AUTO_CHUNK_MASK = 2.0  # chunk_mask_mode "auto": the value by which the model decides where to generate


def text2music_frames(duration: float, sample_rate: int, hop: int) -> int:
    """The latent frames of a text2music song of ``duration`` seconds (before the 128-frame floor)."""
    return int(duration * sample_rate / hop)


def has_codes(request: GenerationRequest) -> bool:
    return bool(request.audio_code_string.strip() or any(c.strip() for c in request.lm_audio_codes or []))


def item_codes(request: GenerationRequest, batch_size: int) -> list[list[int]] | None:
    """Each item's audio codes: the LM's per item when it wrote them, else the client's for all."""
    if request.lm_audio_codes:
        texts = (list(request.lm_audio_codes) + [request.lm_audio_codes[-1]] * batch_size)[:batch_size]
    else:
        texts = [request.audio_code_string] * batch_size
    codes = [parse_audio_codes(text) for text in texts]
    return codes if any(codes) else None


def resolve_task(request: GenerationRequest) -> GenerationRequest:
    """The request as the official server runs it.

    text2music with audio codes becomes a cover of those codes (with the cover
    instruction, docs/pipeline.md#audio-tasks); text2music without codes does not use a
    source (the newer official handler ignores it: the ACE-Step DAW sends a short silent one
    with every request), so its length is the requested one. A cover with nothing to cover (no
    source, no reference, no codes) becomes text2music. Other tasks need a source; a silent one
    runs on silence frames of its length, as in the official handler.
    """
    if request.task_type == "text2music" and has_codes(request):
        return request.model_copy(update={"task_type": "cover", "instruction": TASK_INSTRUCTIONS["cover"]})
    if request.task_type == "text2music" and request.src_audio_path:
        return request.model_copy(update={"src_audio_path": None})
    has_input = bool(request.src_audio_path or request.reference_audio_path or has_codes(request))
    if request.task_type == "cover" and not has_input:
        return request.model_copy(update={"task_type": "text2music"})
    if request.task_type in SOURCE_TASK_TYPES and not (request.src_audio_path or has_codes(request)):
        raise GenerationError(
            f"task_type {request.task_type!r} needs source audio: send src_audio_path (or a src_audio upload)"
        )
    return request


# --- Windows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepaintPlan:
    """Where a repaint/lego window lies, in seconds of the source.

    ``left_pad``/``right_pad`` are the silent seconds added for outpainting; ``start``
    and ``end`` are the window in the padded audio.
    """

    left_pad: float
    right_pad: float
    start: float
    end: float

    def frames(self, sample_rate: int, hop: int, latent_length: int) -> tuple[int, int] | None:
        """The window in latent frames, clamped to the sequence; None when it is empty (end <= start)."""
        if self.end <= self.start:
            return None
        start = int(self.start * sample_rate // hop)
        end = int(self.end * sample_rate // hop)
        start = max(0, min(start, latent_length - 1))
        end = max(start + 1, min(end, latent_length))
        return start, end


def plan_repaint(source_seconds: float, start: float, end: float | None) -> RepaintPlan:
    """The official rule: end None/0/negative = the end of the source; a negative start or an
    end past the source pads the source with silence (outpainting)."""
    if not end or end < 0:
        end = source_seconds
    left_pad = max(0.0, -start)
    right_pad = max(0.0, end - source_seconds)
    return RepaintPlan(left_pad=left_pad, right_pad=right_pad, start=start + left_pad, end=end + left_pad)


def pad_for_outpainting(wave: torch.Tensor, plan: RepaintPlan, sample_rate: int) -> torch.Tensor:
    left, right = int(plan.left_pad * sample_rate), int(plan.right_pad * sample_rate)
    if left or right:
        return torch.nn.functional.pad(wave, (left, right))
    return wave


# --- Reference audio ----------------------------------------------------------------------


def reference_clip(wave: torch.Tensor, rng: random.Random, sample_rate: int) -> torch.Tensor:
    """30 s of a reference [2, samples]: repeated until at least 30 s long, then one random
    10 s window from each third (front, middle, back), end to end (docs/pipeline.md#conditioning)."""
    target = REFERENCE_SECONDS * sample_rate
    window = REFERENCE_WINDOW_SECONDS * sample_rate
    if wave.shape[-1] < target:
        wave = wave.repeat(1, -(-target // wave.shape[-1]))
    total = wave.shape[-1]
    third = total // 3
    front = rng.randint(0, max(0, third - window))
    middle = third + rng.randint(0, max(0, third - window))
    back = 2 * third + rng.randint(0, max(0, total - 2 * third - window))
    return torch.cat([wave[:, s : s + window] for s in (front, middle, back)], dim=-1)


# --- DiT inputs ---------------------------------------------------------------------------


@dataclass
class TaskInputs:
    """Everything per item that the conditions and the sampler need besides the texts."""

    target_latents: torch.Tensor  # [B, T, C] the clean source latents (padded with silence)
    source_latents: torch.Tensor  # [B, T, C] the DiT's source: target with a repaint window silenced
    chunk_mask: torch.Tensor  # [B, T] bool, True = generate; float 2.0 everywhere for chunk_mask_mode "auto"
    is_cover: torch.Tensor  # [B] bool
    timbre: torch.Tensor  # [B, 750, C] reference latents, or silence
    hints: torch.Tensor | None  # [B, T, C] decoded audio codes; None = tokenize the source for covers
    repaint_mask: torch.Tensor | None  # [B, T] bool where a window exists, else None
    output_samples: int  # samples kept after decoding
    caption_duration: float  # the duration the caption's metas state
    # A repaint/lego window over a source recording: the recording [2, samples] (padded for
    # outpainting) and the window in its seconds, for the splice after decoding.
    source_wave: torch.Tensor | None = None
    window_seconds: tuple[float, float] | None = None

    @property
    def latent_length(self) -> int:
        return self.target_latents.shape[1]


def encode_generators(seeds: list[int], device: torch.device) -> list[torch.Generator]:
    """One generator per item for the VAE's latent sampling, seeded one past the item's seed so
    its stream differs from the item's initial noise."""
    return [torch.Generator(device=device).manual_seed((seed + 1) % (SEED_MAX + 1)) for seed in seeds]


class TaskBuilder:
    """Builds :class:`TaskInputs` for one DiT and the shared VAE."""

    def __init__(self, dit, vae: torch.nn.Module, device: torch.device, dtype: torch.dtype):
        self.dit = dit
        self.vae = vae
        self.device = device
        self.dtype = dtype
        self.sample_rate = int(vae.config.sampling_rate)
        self.hop = audio.hop_length(vae)
        self.silence = dit.silence_latent.to(device=device, dtype=dtype)

    def silence_frames(self, length: int) -> torch.Tensor:
        return conditioning.silence_frames(self.silence, length)[0]

    def encode(self, wave: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """[2, samples] -> [T, C] in the model dtype; a silent wave gives silence frames."""
        if is_silent(wave):
            return self.silence_frames(wave.shape[-1] // self.hop)
        return audio.encode_audio(self.vae, wave, generator)[0].to(self.dtype)

    def timbre(
        self, reference: torch.Tensor | None, rng: random.Random, generators: list[torch.Generator]
    ) -> torch.Tensor:
        """Per item: the VAE latents of a 30 s reference clip, or 30 s of silence without one."""
        if reference is None or is_silent(reference):
            return conditioning.silence_timbre(self.silence, len(generators))
        clip = reference_clip(reference, rng, self.sample_rate)
        return torch.stack([audio.encode_audio(self.vae, clip, g)[0].to(self.dtype) for g in generators])

    def build(
        self,
        request: GenerationRequest,
        *,
        seeds: list[int],
        duration: float | None,
        source: torch.Tensor | None = None,
        reference: torch.Tensor | None = None,
        codes: list[list[int]] | None = None,
    ) -> TaskInputs:
        """The DiT inputs of ``request`` (already through :func:`resolve_task`) for every item.

        ``duration`` is the text2music length (ignored when a source or codes set it);
        ``source`` and ``reference`` are [2, samples] 48 kHz waveforms, ``codes`` each item's
        parsed audio codes (:func:`item_codes`; they take the source's place, as in the
        official server).
        """
        batch_size = len(seeds)
        generators = encode_generators(seeds, self.device)
        timbre = self.timbre(reference, random.Random(seeds[0]), generators)
        task = request.task_type
        plan: RepaintPlan | None = None
        hints = None

        # 1. Per-item target latents, and what the output keeps.
        if codes:
            targets = [
                conditioning.codes_to_latents(self.dit.audio_tokenizer, self.dit.audio_detokenizer, item)[0].to(
                    self.dtype
                )
                for item in codes
            ]
            longest = max(t.shape[0] for t in targets)
            source_seconds = longest * self.hop / self.sample_rate
            caption_duration = request.audio_duration or source_seconds
            output_samples = longest * self.hop
            has_audio = True
            if task in WINDOWED_TASKS:
                plan = plan_repaint(source_seconds, max(request.repainting_start, 0.0), request.repainting_end)
        elif source is not None:
            source_seconds = source.shape[-1] / self.sample_rate
            caption_duration = source_seconds
            if task in WINDOWED_TASKS:
                plan = plan_repaint(source_seconds, request.repainting_start, request.repainting_end)
                source = pad_for_outpainting(source, plan, self.sample_rate)
            targets = [self.encode(source, g) for g in generators]
            output_samples = source.shape[-1]
            has_audio = not is_silent(source)
        else:
            caption_duration = duration
            frames = text2music_frames(duration, self.sample_rate, self.hop)
            targets = [self.silence_frames(frames)] * batch_size
            output_samples = frames * self.hop
            has_audio = False

        # 2. One length for the batch, at least 128 frames, padded with silence from frame 0.
        latent_length = max(MIN_LATENT_FRAMES, max(t.shape[0] for t in targets))
        target_latents = torch.stack(
            [torch.cat([t, self.silence_frames(latent_length - t.shape[0])]) for t in targets]
        )
        if codes:
            hints = target_latents

        # 3. Window, chunk mask, cover flags and source latents.
        window = plan.frames(self.sample_rate, self.hop, latent_length) if plan is not None else None
        chunk_mask = torch.ones(batch_size, latent_length, dtype=torch.bool, device=self.device)
        repaint_mask = None
        if has_audio:
            source_latents = target_latents.clone()
        else:
            source_latents = self.silence_frames(latent_length).expand(batch_size, -1, -1).clone()
        if window is not None:
            start, end = window
            chunk_mask[:, :] = False
            chunk_mask[:, start:end] = True
            repaint_mask = chunk_mask.clone()
            if has_audio and task != "lego":
                source_latents[:, start:end] = self.silence_frames(latent_length)[start:end]
            is_cover = torch.zeros(batch_size, dtype=torch.bool, device=self.device)
        else:
            # cover-nofsq is not a cover here: its source reaches the DiT as clean VAE latents,
            # not through the FSQ bottleneck; audio codes are always a cover's hints.
            covering = task == "cover" or bool(codes)
            is_cover = torch.full((batch_size,), covering, dtype=torch.bool, device=self.device)
        if request.chunk_mask_mode == "auto":
            chunk_mask = torch.full((batch_size, latent_length), AUTO_CHUNK_MASK, device=self.device)
        spliceable = window is not None and has_audio and source is not None and not codes

        return TaskInputs(
            target_latents=target_latents,
            source_latents=source_latents,
            chunk_mask=chunk_mask,
            is_cover=is_cover,
            timbre=timbre,
            hints=hints,
            repaint_mask=repaint_mask,
            output_samples=output_samples,
            caption_duration=caption_duration,
            source_wave=source if spliceable else None,
            window_seconds=(plan.start, plan.end) if spliceable else None,
        )

    def cover_source(self, inputs: TaskInputs) -> torch.Tensor:
        """The source the DiT sees: for cover items the hints (decoded codes, or the source
        through the FSQ bottleneck), for the others the source latents."""
        if not inputs.is_cover.any():
            return inputs.source_latents
        hints = inputs.hints
        if hints is None:
            hints = conditioning.cover_hints(
                self.dit.audio_tokenizer, self.dit.audio_detokenizer, inputs.source_latents, self.silence
            )
        return torch.where(inputs.is_cover.view(-1, 1, 1), hints, inputs.source_latents)

    def non_cover_source(self, inputs: TaskInputs) -> torch.Tensor:
        """The source of a partial cover's second condition set: silence."""
        return self.silence_frames(inputs.latent_length).expand(inputs.source_latents.shape[0], -1, -1)
