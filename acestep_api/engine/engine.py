"""``MusicEngine``: the loaded models, and one call that turns a request into audio files.

The engine knows nothing about HTTP or jobs. ``generate`` blocks until the files are written.
``render`` stops once the audio is decoded and returns it with its encode plan
(engine/encoding.py): the job worker runs ``render`` on its engine thread and hands the
encoding to a CPU pool. Its steps follow the official handler without the 5 Hz LM (docs/pipeline.md#overview,
"pure dit mode"), for every task: text2music, cover, cover-nofsq, repaint, lego, extract, complete,
reference timbre and audio codes (docs/pipeline.md#audio-tasks).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Callable

import torch

from acestep_api.engine import audio, conditioning, seeds
from acestep_api.engine.adapter_tasks import AdapterAnswer, AdapterTask
from acestep_api.engine.adapters import DEFAULT_CACHE_SIZE, AdapterManager
from acestep_api.engine.batching import BatchKey, batch_key
from acestep_api.engine.encoding import FILE_EXTENSIONS, PROGRESS_ENCODING, EncodePlan, Rendered
from acestep_api.engine.audio_input import AudioInputError, load_audio
from acestep_api.engine.loading.dit import DitCheckpoint
from acestep_api.engine.loading.folders import resolve_dit_folder
from acestep_api.engine.loading.text_encoder import load_text_encoder
from acestep_api.engine.loading.vae import load_vae
from acestep_api.engine.layout import DEFAULT_LM_FOLDER, LORA_FOLDER, TEXT_ENCODER_FOLDER, VAE_FOLDER, is_demo_folder
from acestep_api.engine.lm_tasks import LMRequest, LMTaskResult, run_lm_task
from acestep_api.engine.model_requests import ModelRequest, ModelResult
from acestep_api.engine.model_slots import LM_UNIT, ModelOptions, ModelSlots, SlotBacked, dit_unit, load_dit
from acestep_api.engine.placement import TEXT_ENCODER, VAE
from acestep_api.engine.served import ServedModels
from acestep_api.engine.request import (
    DEFAULT_INSTRUCTION,
    Analysis,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    SongMetas,
    Timings,
)
from acestep_api.engine.sampler import (
    ConditionSwitch,
    FlowMatchSampler,
    GuidanceInterval,
    RepaintGuide,
    build_schedule,
    guidance_active,
    start_from_source,
)
from acestep_api.engine.tasks import TaskBuilder, item_codes, resolve_task
from acestep_api.engine.repaint import repaint_settings, splice_source
from acestep_api.engine.lm.planner import DEMO_TEXT_LIMITS, LMPlanner, Plan, TextLimits, load_planner
from acestep_api.engine.lm.vocab import format_audio_codes

RANDOM_DURATION_RANGE = (10.0, 120.0)  # no duration and no LM: the official DiT picks one at random

Progress = Callable[[float, str], None]

# Progress fractions at which each stage starts; diffusion fills the span up to decoding.
# (PROGRESS_ENCODING, in engine/encoding.py, starts at 0.93.)
PROGRESS_LM, PROGRESS_TEXT, PROGRESS_DIFFUSION, PROGRESS_DECODING = 0.01, 0.02, 0.10, 0.85
LM_NOT_LOADED = (
    "the 5Hz language model is not initialized on this server, so thinking, sample mode, format and "
    "analysis requests cannot run. Send the request without them, or start the server with the LM enabled."
)


def resolve_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def compute_dtypes(device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(model dtype, VAE dtype), as the official handler picks them (docs/pipeline.md#compute-dtypes)."""
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


@dataclass(eq=False)
class _Member:
    """One request of ``render_batch``: what its steps made, and how it ended (None: still in)."""

    request: GenerationRequest
    progress: Progress | None
    batched: bool = False
    outcome: Rendered | Exception | None = None
    dit: DitCheckpoint | None = None
    plan: Plan | None = None
    resolved: GenerationRequest | None = None  # after the plan and resolve_task
    seeds: list[int] = field(default_factory=list)  # one per item
    duration: float | None = None
    generators: list[torch.Generator] = field(default_factory=list)
    builder: TaskBuilder | None = None
    inputs: Any = None  # tasks.TaskInputs
    noise: torch.Tensor | None = None

    @property
    def live(self) -> bool:
        return self.outcome is None

    def report(self, fraction: float, stage: str) -> None:
        """Progress to this request's callback; one that raises (a cancel) ends this request only."""
        if self.outcome is not None or self.progress is None:
            return
        try:
            self.progress(fraction, stage)
        except Exception as error:  # noqa: BLE001 - recorded as this request's outcome
            self.outcome = error


def _live(members: list[_Member]) -> list[_Member]:
    return [member for member in members if member.live]


def stage_timings(clock: StageClock, plan: Plan) -> Timings:
    """The clock's stages and the LM's phases (when the LM was asked anything) as Timings."""
    lm = plan.seconds if plan.used else {}
    return Timings(
        text_encoding=clock.seconds.get("text_encoding"),
        diffusion=clock.seconds.get("diffusion"),
        decoding=clock.seconds.get("decoding"),
        encoding=clock.seconds.get("encoding"),
        lm=clock.seconds.get("lm"),
        lm_sample=lm.get("sample"),
        lm_format=lm.get("format"),
        lm_metadata=lm.get("phase1"),
        lm_codes=lm.get("phase2"),
        total=clock.total(),
    )


class MusicEngine(SlotBacked):
    """The text encoder, the VAE and every configured DiT, loaded once."""

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
        lm_model: str = DEFAULT_LM_FOLDER,
        is_demo: bool = False,
        planner: LMPlanner | None = None,
        lm_error: str | None = None,
        adapters: AdapterManager | None = None,
        options: ModelOptions | None = None,
    ):
        if not dits:
            raise ValueError("MusicEngine needs at least one DiT checkpoint")
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.vae = vae
        self.output_dir = Path(output_dir)
        self.device = device
        self.dtype = dtype
        self.max_batch = max_batch
        self.is_demo = is_demo
        # The DiTs by slot and the LM, loaded and swapped at run time (engine/model_slots.py);
        # lm_error: why the LM is not available, when it was asked for and failed.
        self.slots = ModelSlots(dits, planner, planner.model_name if planner else lm_model, lm_error,
                                device, dtype, options)
        self.placement = self.slots.placement
        self.placement.register(TEXT_ENCODER, TEXT_ENCODER, [text_encoder])
        self.placement.register(VAE, VAE, [vae])
        self.sample_rate = int(vae.config.sampling_rate)
        self.hop_length = math.prod(vae.config.downsampling_ratios)
        self.adapters = adapters or AdapterManager(None)  # LoRA / LoKr on the DiT

    @classmethod
    def from_checkpoints(
        cls,
        checkpoint_dir: str | Path,
        config_paths: list[str],
        output_dir: Path,
        device: str = "auto",
        max_batch: int = 8,
        lm_model: str = DEFAULT_LM_FOLDER,
        *,
        init_llm: str = "auto",
        lm_backend: str = "transformers",
        lm_device: str = "auto",
        lm_kv_cache: str = "static",
        lm_compile: str = "auto",
        lm_max_duration: float = 600.0,
        lora_dir: str | Path | None = None,
        lora_cache_size: int = DEFAULT_CACHE_SIZE,
        options: ModelOptions | None = None,
    ) -> "MusicEngine":
        """Load the shared text encoder and VAE, each DiT in ``config_paths`` (primary first), and
        the 5 Hz LM (``init_llm``: "auto" when its folder exists, "on", or "off"). ``options``:
        loading at run time and memory placement (engine/model_slots.py)."""
        checkpoint_dir = Path(checkpoint_dir)
        torch_device = resolve_device(device)
        dtype, vae_dtype = compute_dtypes(torch_device)
        is_demo = is_demo_folder(checkpoint_dir)
        options = options or ModelOptions()
        options.checkpoint_dir = options.checkpoint_dir or checkpoint_dir
        options.lm_name, options.lm_mode, options.lm_backend = lm_model, init_llm, lm_backend
        options.lm_device = torch_device if lm_device == "auto" else resolve_device(lm_device)
        options.lm_duration_max = lm_max_duration
        options.lm_kv_cache, options.lm_compile = lm_kv_cache, lm_compile
        options.lm_limits = DEMO_TEXT_LIMITS if is_demo else TextLimits()
        # A model that waits on the CPU is read there: a small GPU holds one model at a time.
        cpu, policy = torch.device("cpu"), options.policy
        tokenizer, text_encoder = load_text_encoder(checkpoint_dir / TEXT_ENCODER_FOLDER,
                                                    cpu if policy.text_encoder else torch_device, dtype)
        vae = load_vae(checkpoint_dir / VAE_FOLDER, cpu if policy.vae else torch_device, vae_dtype)
        dits = [
            load_dit(resolve_dit_folder(checkpoint_dir, name), torch_device, dtype, policy)
            for name in dict.fromkeys(config_paths)  # a name configured twice loads once
        ]
        planner, lm_error = load_planner(
            checkpoint_dir, lm_model, mode=init_llm, backend=lm_backend, device=options.lm_device,
            duration_max=lm_max_duration, limits=options.lm_limits,
            kv_cache=options.lm_kv_cache, compile=options.lm_compile,
        )
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
            is_demo=is_demo,
            planner=planner,
            lm_error=lm_error,
            adapters=AdapterManager(Path(lora_dir) if lora_dir else checkpoint_dir / LORA_FOLDER, lora_cache_size),
            options=options,
        )

    @property
    def lm_available(self) -> bool:
        return self.planner is not None

    # --- Inventory ----------------------------------------------------------------------

    def served(self) -> ServedModels:
        """What this engine serves, as data the HTTP layer may hold (engine/served.py)."""
        return ServedModels(
            models=tuple(self.slots.served_model(name) for name in self.model_names),
            lm_model=self.lm_model, lm_available=self.lm_available, lm_error=self.lm_error,
            lm_backend=self.planner.backend.name if self.planner else "transformers",
            lm_guidance=bool(getattr(self.planner.backend, "supports_cfg", True)) if self.planner else True,
            is_demo=self.is_demo, device=str(self.device), lora_dir=self.adapters.lora_dir,
            **self.slots.served_fields(),
        )

    def watch_served(self, watcher: Callable[[ServedModels], None]) -> None:
        """Call ``watcher`` with what the engine serves whenever a model is loaded or unloaded."""
        self.slots.watchers.append(lambda: watcher(self.served()))

    def select_model(self, requested: str | None) -> DitCheckpoint:
        """The DiT named by the request (by folder name or path), loaded now when it must be
        and may be (engine/model_slots.py); unknown or none -> primary."""
        return self.slots.dit_for(requested)

    def run_lm_task(self, task: LMRequest) -> LMTaskResult:
        """An LM-only job (format, sample): the 5 Hz LM's answer, or a GenerationError."""
        if self.planner is None:
            raise GenerationError(f"LLM init failed: {self.lm_error}" if self.lm_error else LM_NOT_LOADED)
        with self.placement.use(LM_UNIT):
            return run_lm_task(self.planner, task)

    def run_model_task(self, task: ModelRequest) -> ModelResult:
        """A model job: POST /v1/init or /v1/reinitialize (engine/model_requests.py)."""
        return self.slots.init(task) if task.action == "init" else self.slots.reinitialize()

    def run_adapter_task(self, task: AdapterTask) -> AdapterAnswer:
        """A change to the default adapters (the /v1/lora/* routes), checked on the primary DiT."""
        return self.adapters.run(task, self.dits[self.default_model].transformer)

    # --- Generation ---------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, request: GenerationRequest, progress: Progress | None = None) -> GenerationResult:
        """Steps 1-11 (``render``), then 12: the files encoded and written; they exist on return."""
        return self.render(request, progress).write(progress=progress)

    @torch.inference_mode()
    def render(self, request: GenerationRequest, progress: Progress | None = None) -> Rendered:
        """Everything up to the files: the result naming them, and the decoded audio to write."""
        clock = StageClock()
        report = progress or (lambda fraction, stage: None)

        # 1. Model (loaded now if it must be), LM, task and capability checks; one seed per batch item.
        dit = self.select_model(request.model)
        if not request.skip_lm:  # a replay never runs the LM: nothing to load for it
            self.slots.planner_for(request.lm_model_path)
        self._check_request(request, dit)
        batch_size = min(request.batch_size, self.max_batch)
        seeds_used = seeds.resolve_seeds(request.use_random_seed, request.seeds, batch_size)

        # Analysis of a source recording: its audio codes, and with the LM what they describe.
        if request.extract_codes_only or request.full_analysis_only:
            return Rendered(self._analyse_source(request, dit, seeds_used, report))

        # The adapter: the one named, else the default; loaded now, recorded in the request.
        request = self._with_adapter(request, dit)

        # 2. The 5 Hz LM plans: sample / format, metadata, and with thinking the audio codes.
        plan = self._plan(request, seeds_used, report, clock)
        if plan.request.analysis_only:
            return Rendered(self._analysis_result(plan, seeds_used, clock))
        request = resolve_task(plan.request)

        # 3. Duration (text2music only: a source or audio codes set their own), noise generators.
        codes = item_codes(request, batch_size)
        duration = self._duration(request, codes)
        generators = seeds.item_generators(seeds_used, self.device)

        # 4. Audio inputs -> the task's DiT inputs (target/source latents, masks, timbre).
        with self.placement.use(VAE, dit_unit(dit.name)):
            builder, inputs = self._prepare_inputs(request, dit, seeds_used, duration, codes, report)

        # 5. Initial noise.
        noise = self._initial_noise(dit, generators, inputs)

        # 6. Text encoding, 7. condition encoder (and a partial cover's second set, a repaint guide).
        with self.placement.use(TEXT_ENCODER, dit_unit(dit.name)):
            conditions, switch, repaint = self._conditions(request, dit, builder, inputs, batch_size, report)
        clock.lap("text_encoding")

        # 8. Denoising loop, with the job's adapter on (and every adapter off after it).
        with self.placement.use(dit_unit(dit.name)), \
                self.adapters.applied(dit.transformer, request.lora_name, request.lora_scale or 0.0):
            latents, steps = self._denoise(request, dit, noise, inputs, conditions, switch, repaint, generators, report)
        clock.lap("diffusion")

        # 9. Checks, VAE decode, crop to the output length, a repaint's source spliced back, peak guard.
        with self.placement.use(VAE):
            waves = self._decode(request, latents, inputs, report)
        clock.lap("decoding")

        # 10. The encode plan: each item's file name and waveform (written by Rendered.write).
        encode_plan = self._encode_plan(request, seeds_used, waves)

        # 11. Result: data only; the dialects word it. Timings.encoding is added once written.
        length = duration if duration is not None else round(waves.shape[-1] / self.sample_rate, 2)
        result = self._result(request, dit, plan, seeds_used, list(encode_plan.targets), length, steps, clock)
        report(PROGRESS_ENCODING, "encoding")
        return Rendered(result, encode_plan)

    # --- Several requests in one batch (docs/architecture.md#batching-jobs) -----------------

    def batch_items(self, request: GenerationRequest) -> int:
        """The batch items ``request`` runs: its batch_size, clamped to the engine's maximum."""
        return min(request.batch_size, self.max_batch)

    def batch_key(self, request: GenerationRequest) -> BatchKey | None:
        """Requests with equal keys may share one DiT call (``render_batch``); None: run alone."""
        dit = self.select_model(request.model)
        name, scale = self.adapters.choose(request.lora_name, request.lora_scale)
        adapter = (name, scale) if name and scale > 0 else (None, 0.0)  # scale 0: every adapter off
        return batch_key(request, model=dit.name, adapter=adapter, is_turbo=dit.is_turbo,
                         lm_loaded=self.planner is not None, sample_rate=self.sample_rate, hop=self.hop_length)

    @torch.inference_mode()
    def render_batch(
        self, requests: Sequence[GenerationRequest], progresses: Sequence[Progress | None]
    ) -> list[Rendered | Exception]:
        """``render`` for several requests at once, one outcome per request, in order.

        Requests with the same ``batch_key`` share one run of steps 6-9: their items are stacked
        into one batch (each item keeps its request's caption, lyrics, metadata and its own seed)
        and come out as they would alone, to float tolerance. Each request reports to its own
        ``progress``; one whose report raises (a cancel) or whose own input fails drops out with
        that exception as its outcome and the others go on. A request with no key, or another
        key than the first, is rendered alone after the batch.
        """
        clock = StageClock()
        members = [_Member(request, progress) for request, progress in zip(requests, progresses, strict=True)]
        key = None
        for member in members:
            try:
                member_key = self.batch_key(member.request)
            except Exception:  # noqa: BLE001 - e.g. an adapter name it cannot use: its own render says why
                member_key = None
            if member_key is None or (key is not None and member_key != key):
                continue
            key = member_key
            member.batched = True
            try:
                self._prepare_member(member, clock)
            except Exception as error:  # noqa: BLE001 - this request's fault ends this request only
                member.outcome = error
        batched = [member for member in members if member.live and member.batched]
        if batched:
            try:
                self._run_members(batched, clock)
            except Exception as error:  # noqa: BLE001 - a failure of the shared steps ends every request in them
                for member in batched:
                    if member.outcome is None:
                        member.outcome = error
        for member in members:
            if not member.batched:
                try:
                    member.outcome = self.render(member.request, member.progress)
                except Exception as error:  # noqa: BLE001
                    member.outcome = error
        return [member.outcome for member in members]

    def _prepare_member(self, member: "_Member", clock: StageClock) -> None:
        """Steps 1-5 of ``render`` for one request of a batch: checks, seeds, plan, inputs, noise."""
        request = member.request
        dit = self.select_model(request.model)
        self._check_request(request, dit)
        seeds_used = seeds.resolve_seeds(request.use_random_seed, request.seeds, self.batch_items(request))
        request = self._with_adapter(request, dit)
        # The batch key admits no request the LM would work on; the planner still settles the plan.
        plan = self._plan(request, seeds_used, member.report, clock)
        request = resolve_task(plan.request)
        codes = item_codes(request, len(seeds_used))
        duration = self._duration(request, codes)
        generators = seeds.item_generators(seeds_used, self.device)
        builder, inputs = self._prepare_inputs(request, dit, seeds_used, duration, codes, member.report)
        member.dit, member.plan, member.resolved, member.seeds = dit, plan, request, seeds_used
        member.duration, member.generators, member.builder, member.inputs = duration, generators, builder, inputs
        member.noise = self._initial_noise(dit, generators, inputs)

    def _run_members(self, members: list["_Member"], clock: StageClock) -> None:
        """Steps 6-11 of ``render`` for the prepared requests of a batch, their items stacked."""
        dit = members[0].dit
        lengths = {member.inputs.latent_length for member in members}
        if len(lengths) != 1 or any(member.dit is not dit for member in members):
            raise ValueError("render_batch: the requests' latent lengths or models differ")  # the key rules this out

        # 6-7. Each request's caption and lyrics encoded once, repeated for its items; then the
        # condition encoder on every item (its sequences padded to the longest, with a mask).
        for member in members:
            member.report(PROGRESS_TEXT, "text encoding")
        members = _live(members)
        if not members:
            return
        texts = conditioning.encode_texts(
            self.tokenizer, self.text_encoder,
            [conditioning.caption_prompt(m.resolved, m.inputs.caption_duration, lego_sft=self._lego_sft(dit))
             for m in members],
            [conditioning.lyrics_prompt(m.resolved) for m in members],
        )
        owners = torch.tensor([j for j, m in enumerate(members) for _ in m.seeds], device=texts.caption_states.device)
        texts = conditioning.TextEncoding(*(t[owners] for t in vars(texts).values()))

        def stacked(name: str) -> torch.Tensor:
            return torch.cat([getattr(m.inputs, name) for m in members], dim=0)

        conditions = conditioning.build_conditions(
            dit.condition_encoder, texts, stacked("timbre"),
            torch.cat([m.builder.cover_source(m.inputs) for m in members], dim=0), stacked("chunk_mask"),
        )
        clock.lap("text_encoding")

        # 8. One denoising loop; a request that leaves is dropped from the next step on.
        request = members[0].resolved  # the sampling settings are part of the key: the same for all
        noise = torch.cat([m.noise for m in members], dim=0)
        schedule = build_schedule(dit.is_turbo, request.inference_steps, request.shift, request.timesteps)
        start = None
        if request.cover_noise_strength > 0.0:
            start, schedule = start_from_source(schedule, noise, stacked("source_latents"), request.cover_noise_strength)
        guided = guidance_active(request.guidance_scale, dit.is_turbo)
        diffusion_span = PROGRESS_DECODING - PROGRESS_DIFFUSION
        for member in members:
            member.report(PROGRESS_DIFFUSION, f"diffusion step 0/{len(schedule)}")

        def on_step(done: int, total: int) -> list[int] | None:
            nonlocal in_batch
            for member in in_batch:
                member.report(PROGRESS_DIFFUSION + diffusion_span * done / total, f"diffusion step {done}/{total}")
            if all(member.live for member in in_batch):
                return None
            rows, offset = [], 0
            for member in in_batch:
                if member.live:
                    rows.extend(range(offset, offset + len(member.seeds)))
                offset += len(member.seeds)
            in_batch = _live(in_batch)
            return rows

        # A request that left before the loop starts is not in it.
        rows = torch.tensor([m.live for m in members for _ in m.seeds], dtype=torch.bool, device=noise.device)
        in_batch = _live(members)
        sampler = FlowMatchSampler(dit.transformer, getattr(dit.condition_encoder, "null_condition_emb", None))
        latents = noise[:0]
        if in_batch:  # the adapter is part of the key too
            with self.adapters.applied(dit.transformer, request.lora_name, request.lora_scale or 0.0):
                latents = sampler(
                    noise[rows], conditions.encoder_hidden_states[rows], conditions.context_latents[rows], schedule,
                    guidance_scale=request.guidance_scale if guided else 1.0,
                    use_adg=request.use_adg,
                    guidance_interval=GuidanceInterval(request.cfg_interval_start, request.cfg_interval_end),
                    infer_method=request.infer_method,
                    generators=[g for m in in_batch for g in m.generators],
                    on_step=on_step,
                    start=None if start is None else start[rows],
                    encoder_mask=conditions.encoder_attention_mask[rows],
                )
        clock.lap("diffusion")

        # 9. Each request's latents checked, then the VAE decode; each crops to its own length.
        for member in in_batch:
            member.report(PROGRESS_DECODING, "decoding")
        pieces = dict(zip(map(id, in_batch), latents.split([len(m.seeds) for m in in_batch])))
        for member in in_batch:
            if member.live:
                try:
                    audio.check_latents(pieces[id(member)])
                except GenerationError as error:
                    member.outcome = error
        in_batch = _live(in_batch)
        if not in_batch:
            return
        if self.device.type == "cpu":
            # On a CPU the VAE is memory-bound: one call of 8 items measured twice as slow as 8
            # calls of one. Each request's items are decoded in one call, as they are alone.
            waves = torch.cat([audio.decode_latents(self.vae, pieces[id(m)]) for m in in_batch], dim=0)
        else:
            waves = audio.decode_latents(self.vae, torch.cat([pieces[id(m)] for m in in_batch], dim=0))
        clock.lap("decoding")

        # 10-11. Each request's encode plan and result.
        for member, member_waves in zip(in_batch, waves.split([len(m.seeds) for m in in_batch])):
            member_waves = audio.peak_guard(member_waves[..., : member.inputs.output_samples])
            encode_plan = self._encode_plan(member.resolved, member.seeds, member_waves)
            result = self._result(member.resolved, dit, member.plan, member.seeds, list(encode_plan.targets),
                                  member.duration, len(schedule), clock)
            member.report(PROGRESS_ENCODING, "encoding")
            if member.live:
                member.outcome = Rendered(result, encode_plan)

    # --- The steps of generate -------------------------------------------------------------

    def _with_adapter(self, request: GenerationRequest, dit: DitCheckpoint) -> GenerationRequest:
        name, scale = self.adapters.choose(request.lora_name, request.lora_scale)
        self.adapters.prepare(dit.transformer, name)
        return request.model_copy(update={"lora_name": name, "lora_scale": scale})

    def _plan(self, request: GenerationRequest, seeds_used: list[int], report: Progress, clock: StageClock) -> Plan:
        """The LM's plan, or the request unchanged without an LM (analysis_only never thinks)."""
        if self.planner is None or request.skip_lm:
            return Plan(request=request)
        planned = request.model_copy(update={"thinking": False}) if request.analysis_only else request
        with self.placement.use(LM_UNIT):
            plan = self.planner.plan(planned, seeds_used, progress=lambda stage: report(PROGRESS_LM, stage))
        clock.lap("lm")
        return plan

    @staticmethod
    def _duration(request: GenerationRequest, codes: list[list[int]] | None) -> float | None:
        """text2music's length: the request's, or (no LM, none asked) a random one, as official."""
        if codes or request.src_audio_path:
            return None
        return round(request.audio_duration or random.uniform(*RANDOM_DURATION_RANGE), 1)

    def _prepare_inputs(self, request: GenerationRequest, dit: DitCheckpoint, seeds_used: list[int],
                        duration: float | None, codes: list[list[int]] | None, report: Progress):
        report(PROGRESS_TEXT, "preparing inputs")
        builder = TaskBuilder(dit, self.vae, self.device, self.dtype)
        inputs = builder.build(
            request,
            seeds=seeds_used,
            duration=duration,
            # Audio codes take the source's place, as in the official server.
            source=None if codes else self._read_audio(request, "src_audio_path"),
            reference=self._read_audio(request, "reference_audio_path"),
            codes=codes,
        )
        return builder, inputs

    def _initial_noise(self, dit: DitCheckpoint, generators: list[torch.Generator], inputs) -> torch.Tensor:
        channels = dit.transformer.config.audio_acoustic_hidden_dim
        return seeds.initial_noise(generators, inputs.latent_length, channels, self.device, self.dtype)

    def _conditions(self, request: GenerationRequest, dit: DitCheckpoint, builder: TaskBuilder, inputs,
                    batch_size: int, report: Progress):
        """The packed cross-attention sequence and context latents; a partial cover also gets the
        text2music set it switches to part-way (docs/pipeline.md#audio-tasks)."""
        # Identical texts for every item: encode once, repeat.
        report(PROGRESS_TEXT, "text encoding")
        lyrics = conditioning.lyrics_prompt(request)

        def encode(task_request: GenerationRequest, lego_sft: bool = False) -> conditioning.TextEncoding:
            caption = conditioning.caption_prompt(task_request, inputs.caption_duration, lego_sft=lego_sft)
            return conditioning.encode_texts(self.tokenizer, self.text_encoder, [caption], [lyrics]).repeat(batch_size)

        conditions = conditioning.build_conditions(
            dit.condition_encoder, encode(request, lego_sft=self._lego_sft(dit)),
            inputs.timbre, builder.cover_source(inputs), inputs.chunk_mask,
        )
        switch = None
        if request.audio_cover_strength < 1.0:
            # The second set has the plain caption, also on a lego-SFT checkpoint (as official).
            plain = request.model_copy(update={"task_type": "text2music", "instruction": DEFAULT_INSTRUCTION})
            second = conditioning.build_conditions(
                dit.condition_encoder, encode(plain), inputs.timbre, builder.non_cover_source(inputs), inputs.chunk_mask
            )
            switch = ConditionSwitch(request.audio_cover_strength, second.encoder_hidden_states, second.context_latents)
        repaint = None
        if inputs.repaint_mask is not None:
            settings = repaint_settings(request)
            repaint = RepaintGuide(
                inputs.repaint_mask, inputs.target_latents, settings.crossfade_frames, settings.injection_ratio
            )
        return conditions, switch, repaint

    @staticmethod
    def _lego_sft(dit: DitCheckpoint) -> bool:
        """Whether the checkpoint reads captions in the lego-SFT Global/Local block."""
        return bool(dit.config.get("is_lego_sft", False))

    def _denoise(self, request: GenerationRequest, dit: DitCheckpoint, noise: torch.Tensor, inputs, conditions,
                 switch: ConditionSwitch | None, repaint: RepaintGuide | None, generators: list[torch.Generator],
                 report: Progress) -> tuple[torch.Tensor, int]:
        """The sampler over the schedule: the final latents and the number of steps run."""
        schedule = build_schedule(dit.is_turbo, request.inference_steps, request.shift, request.timesteps)
        start = None
        if request.cover_noise_strength > 0.0:
            start, schedule = start_from_source(schedule, noise, inputs.source_latents, request.cover_noise_strength)
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
            switch=switch,
            repaint=repaint,
            start=start,
        )
        return latents, len(schedule)

    def _decode(self, request: GenerationRequest, latents: torch.Tensor, inputs, report: Progress) -> torch.Tensor:
        report(PROGRESS_DECODING, "decoding")
        audio.check_latents(latents)
        waves = audio.decode_latents(self.vae, latents)[..., : inputs.output_samples]
        settings = repaint_settings(request)
        if inputs.window_seconds is not None and settings.splice:
            # Outside a repaint window the source recording itself, not its VAE reconstruction.
            waves = splice_source(waves, inputs.source_wave, inputs.window_seconds, self.sample_rate,
                                  settings.wav_crossfade_sec)
        return audio.peak_guard(waves)

    def _encode_plan(self, request: GenerationRequest, seeds_used: list[int], waves: torch.Tensor) -> EncodePlan:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        nonce = secrets.token_hex(8)
        extension = FILE_EXTENSIONS[request.audio_format]
        targets = tuple(
            (self.output_dir / f"{audio_file_stem(request, seed, i, nonce)}{extension}").resolve()
            for i, seed in enumerate(seeds_used)
        )
        return EncodePlan(request.audio_format, self.sample_rate, targets, tuple(wave.numpy() for wave in waves))

    def _result(self, request: GenerationRequest, dit: DitCheckpoint, plan: Plan, seeds_used: list[int],
                paths: list[Path], duration: float, steps: int, clock: StageClock) -> GenerationResult:
        return GenerationResult(
            audio_paths=[str(p) for p in paths],
            seeds=seeds_used,
            prompt=request.prompt,
            lyrics=request.lyrics,
            metas=self._metas(request, duration),
            dit_model=dit.name,
            lm_model=self.lm_model,
            timings=stage_timings(clock, plan),
            steps=steps,
            lm_metas=dict(plan.lm_metas) if plan.used else {},
            sample_rate=self.sample_rate,
            resolved=self._resolved(request, seeds_used, duration),
        )

    @staticmethod
    def _resolved(request: GenerationRequest, seeds_used: list[int], duration: float | int | None) -> GenerationRequest:
        """What a replay runs: this request with its seeds, length and the LM's work fixed,
        the LM switched off and its own text and codes kept."""
        settled = {"seeds": list(seeds_used), "use_random_seed": False, "batch_size": len(seeds_used),
                   "thinking": False, "sample_mode": False, "sample_query": "", "use_format": False,
                   "skip_lm": True, "replay_of": None}
        if duration is not None and not request.src_audio_path and not request.lm_audio_codes:
            settled["audio_duration"] = float(duration)
        return request.model_copy(update=settled)

    @staticmethod
    def _metas(request: GenerationRequest, duration: float | int | None) -> SongMetas:
        """The song's metadata: the value used, None where unknown (genres are never known)."""
        return SongMetas(
            bpm=request.bpm,
            duration=duration,
            keyscale=request.key_scale or None,
            timesignature=request.time_signature or None,
        )

    # --- Analysis modes -------------------------------------------------------------------

    def _analysis_result(self, plan: Plan, seeds_used: list[int], clock: StageClock) -> GenerationResult:
        """``analysis_only``: the LM's metadata, no audio and no DiT (docs/wire-contract.md#analysis-modes)."""
        request = plan.request
        duration = int(request.audio_duration) if request.audio_duration else None
        return GenerationResult(
            audio_paths=[],
            seeds=seeds_used,
            prompt=request.prompt,
            lyrics=request.lyrics,
            metas=self._metas(request, duration),
            dit_model="",
            lm_model=self.lm_model,
            timings=stage_timings(clock, plan),
            lm_metas=dict(plan.lm_metas) if plan.used else {},
            sample_rate=self.sample_rate,
            analysis=Analysis(mode="analysis_only"),
        )

    def _analyse_source(
        self, request: GenerationRequest, dit: DitCheckpoint, seeds_used: list[int], report: Progress
    ) -> GenerationResult:
        """``extract_codes_only`` and ``full_analysis_only`` (docs/wire-contract.md#analysis-modes): the source's
        5 Hz codes, and for a full analysis the LM's reading of them."""
        mode = "extract_codes_only" if request.extract_codes_only else "full_analysis_only"
        if not request.src_audio_path:
            raise GenerationError(f"{mode} requires src_audio_path (or a src_audio upload)")
        report(PROGRESS_TEXT, "Extracting Audio Codes..." if request.extract_codes_only else "Starting Deep Analysis...")
        wave = self._read_audio(request, "src_audio_path")
        generator = torch.Generator(device=self.device).manual_seed(seeds_used[0])
        with self.placement.use(VAE, dit_unit(dit.name)):
            latents = TaskBuilder(dit, self.vae, self.device, self.dtype).encode(wave.to(self.device), generator)
            codes = format_audio_codes(conditioning.latents_to_codes(dit.audio_tokenizer, latents[None], dit.silence_latent))
        understood = None
        if not request.extract_codes_only:
            report(PROGRESS_LM, "LM: understanding the audio codes")
            with self.placement.use(LM_UNIT):
                understood = self.planner.understand_codes(codes, seed=seeds_used[0])
        return GenerationResult(
            audio_paths=[], seeds=seeds_used, prompt=request.prompt, lyrics=request.lyrics,
            dit_model=dit.name, lm_model=self.lm_model, sample_rate=self.sample_rate,
            analysis=Analysis(mode=mode, audio_codes=codes, understood=understood),
        )

    @staticmethod
    def _read_audio(request: GenerationRequest, path_field: str) -> torch.Tensor | None:
        """An input file as a [2, samples] 48 kHz waveform; the server checked it at submission,
        so a failure here means the file changed or vanished since. An upload is named by the
        field it came in (``src_audio: audio file does not exist``), never by its server-chosen
        file name; a file the client named, by its own name."""
        path = getattr(request, path_field)
        if not path:
            return None
        upload_field = request.upload_fields.get(path_field)
        try:
            return load_audio(path, label="audio file" if upload_field else None)
        except AudioInputError as exc:
            raise GenerationError(f"{upload_field or path_field}: {exc}") from None

    def _check_request(self, request: GenerationRequest, dit: DitCheckpoint) -> None:
        """Refuse what this engine cannot serve, with the reason."""
        problem = self.served().task_problem(request.task_type, dit.name, name_its_tasks=True)
        if problem:
            raise GenerationError(problem)
        if request.needs_lm and not self.lm_available:
            raise GenerationError(f"5Hz LM init failed: {self.lm_error or LM_NOT_LOADED}")
