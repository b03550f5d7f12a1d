"""The planner: what the 5 Hz LM decides before the DiT runs (docs/pipeline.md#lm-phases).

It turns a request into a better-specified one: a description into caption, lyrics and
metadata (sample mode), a rough caption into a detailed one (format), missing metadata into
values (phase 1, chain of thought), and, with ``thinking``, the audio codes the DiT follows
(phase 2). User-given values always win. The same prompts, constraints and parsing run on
every backend; the backend only samples tokens.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from acestep_api.engine.loading.errors import LMLoadError
from acestep_api.engine.layout import LM_MODEL_NAMES
from acestep_api.engine.lm import prompts
from acestep_api.engine.lm.constraints import CodesConstraint, MetadataConstraint
from acestep_api.engine.lm.cot import format_cot, parse_cot
from acestep_api.engine.lm.failure import lm_failure
from acestep_api.engine.lm.folders import list_lm_folders, resolve_lm_folder
from acestep_api.engine.lm.guidance import LM_SKIPPED_TASKS, writes_codes
from acestep_api.engine.lm.loader import load_lm
from acestep_api.engine.lm.types import NO_NEGATIVE_PROMPT, LMBackend, SamplingParams
from acestep_api.engine.lm.vocab import LMVocab, format_audio_codes
from acestep_api.engine.request import (
    BPM_MAX,
    BPM_MIN,
    DURATION_MAX,
    DURATION_MIN,
    SEED_MAX,
    TIME_SIGNATURES,
    GenerationRequest,
)

log = logging.getLogger(__name__)

CODES_PER_SECOND = 5
UNDERSTAND_TEMPERATURE = 0.3  # the official value for describing existing audio
PHASE1_MAX_TOKENS = 1024  # metadata with the longest caption fits well within this
TEXT_MAX_TOKENS = 2560
INSTRUMENTAL_LYRICS = "[Instrumental]"


@dataclass(frozen=True)
class TextLimits:
    """Caps on the LM's free text, so every call ends even when the model never closes a field."""

    caption_tokens: int = 512  # the official cap on a generated caption
    text_tokens: int = 1536  # lyrics after the metadata (sample, format, understand)


# Random demo weights never end a caption by themselves: short caps keep the demo quick.
DEMO_TEXT_LIMITS = TextLimits(caption_tokens=24, text_tokens=48)

Progress = Callable[[str], None]

# Hints the official server reads from a sample description (docs/pipeline.md#lm-phases, sample mode): a
# language named in the text, and words that ask for no vocals.
LANGUAGE_HINTS = {
    "english": "en", "chinese": "zh", "中文": "zh", "mandarin": "zh", "japanese": "ja", "日本語": "ja",
    "korean": "ko", "한국어": "ko", "spanish": "es", "español": "es", "french": "fr", "français": "fr",
    "german": "de", "deutsch": "de", "italian": "it", "italiano": "it", "portuguese": "pt",
    "português": "pt", "russian": "ru", "русский": "ru", "bengali": "bn", "hindi": "hi", "arabic": "ar",
    "thai": "th", "vietnamese": "vi", "indonesian": "id", "turkish": "tr", "dutch": "nl", "polish": "pl",
}
INSTRUMENTAL_HINTS = re.compile(r"\b(instrumental|no vocals?|without vocals?|solo|karaoke|backing track)\b")


def description_hints(description: str) -> tuple[str | None, bool]:
    """(language code or None, instrumental?) named in a free-text description."""
    text = description.lower()
    language = None
    for name, code in LANGUAGE_HINTS.items():
        if re.search(r"(?<!\w)" + re.escape(name) + r"(?!\w)", text):
            language = code
            break
    return language, bool(INSTRUMENTAL_HINTS.search(text))


def user_metadata(request: GenerationRequest) -> dict[str, Any]:
    """The metadata the user gave, in CoT field names; these are forced during decoding."""
    metas: dict[str, Any] = {}
    if request.bpm is not None:
        metas["bpm"] = request.bpm
    if request.key_scale.strip():
        metas["keyscale"] = request.key_scale.strip()
    if request.time_signature:
        metas["timesignature"] = request.time_signature
    if request.audio_duration is not None:
        metas["duration"] = int(request.audio_duration)
    return metas


@dataclass
class Plan:
    """What the LM decided for one request."""

    request: GenerationRequest  # the request the DiT should run
    lm_metas: dict[str, Any] = field(default_factory=dict)  # what the LM wrote (CoT field names)
    seconds: dict[str, float] = field(default_factory=dict)  # "phase1", "phase2", "sample", "format"
    used: bool = False  # False when nothing was asked of the LM


class LMPlanner:
    """Runs the LM's phases on one backend. Calls are serialised: one LM, one caller at a time."""

    def __init__(self, backend: LMBackend, *, duration_max: float = DURATION_MAX, limits: TextLimits = TextLimits()):
        self.backend = backend
        self.limits = limits
        self.tokenizer = backend.tokenizer
        self.vocab = LMVocab.from_tokenizer(backend.tokenizer, getattr(backend, "vocab_size", None))
        self.duration_range = (int(DURATION_MIN), int(duration_max))
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    # --- The generation path ---------------------------------------------------------

    def plan(self, request: GenerationRequest, seeds: list[int], progress: Progress | None = None) -> Plan:
        """Fill in the request for the DiT: sample / format first, then phase 1, then phase 2.

        ``seeds`` are the batch items' seeds (the DiT's); the LM samples item ``i`` with seed ``i``.
        """
        report = progress or (lambda stage: None)
        plan = Plan(request=request)
        if request.task_type in LM_SKIPPED_TASKS:
            return plan
        plan.used = True
        sampling = self._sampling(request)
        metas_from_sample = False
        with self._lock:
            # 1. Sample mode: a description (or nothing) becomes caption, lyrics and metadata.
            if request.sample_mode or request.sample_query.strip():
                report("LM: writing a song from the description")
                started = time.perf_counter()
                query = request.sample_query.strip() or NO_NEGATIVE_PROMPT
                language, instrumental = description_hints(query)
                instrumental = instrumental or request.instrumental
                if request.vocal_language not in ("", "en", "unknown"):
                    language = request.vocal_language
                try:
                    sample = self._create_sample(query, instrumental, language, sampling, seeds[0])
                except Exception as error:  # noqa: BLE001 - the LM failing on this input fails this job
                    raise lm_failure("create_sample", error) from None
                plan.seconds["sample"] = time.perf_counter() - started
                metas_from_sample = True
                updates = self._request_fields(sample, overwrite=True, request=request)
                if request.instrumental and request.is_instrumental:
                    updates.pop("lyrics", None)  # the request's own instrumental marker stays
                if request.sample_keeps_duration and request.audio_duration is not None:
                    updates.pop("audio_duration", None)
                request = request.model_copy(update=updates)

            # 2. Format: the LM rewrites caption and lyrics, keeping the user's metadata.
            format_gave_duration = False
            if request.use_format and (request.prompt.strip() or request.lyrics.strip()):
                report("LM: formatting caption and lyrics")
                started = time.perf_counter()
                forced = user_metadata(request)
                if request.vocal_language not in ("", "unknown"):
                    forced["language"] = request.vocal_language
                formatted = self._format(request.prompt, request.lyrics, forced, sampling, seeds[0])
                plan.seconds["format"] = time.perf_counter() - started
                format_gave_duration = "duration" in formatted
                format_updates = self._request_fields(formatted, overwrite=True, request=request)
                format_updates.pop("vocal_language", None)  # format keeps the user's language
                request = request.model_copy(update=format_updates)

            # 3. Phase 1: metadata by chain of thought, the user's values forced.
            given = user_metadata(request)
            cot_metas: dict[str, Any] = dict(given)
            want_metas = not metas_from_sample and not format_gave_duration and request.use_cot_metas
            if want_metas and not {"bpm", "keyscale", "timesignature", "duration"} <= given.keys():
                report("LM phase 1: metadata")
                started = time.perf_counter()
                cot_metas = self._phase1(request, given, sampling, seeds[0])
                plan.seconds["phase1"] = time.perf_counter() - started
                plan.lm_metas = dict(cot_metas)
                updates = self._request_fields(cot_metas, overwrite=False, request=request)
                if request.use_cot_caption and cot_metas.get("caption"):
                    updates["prompt"] = cot_metas["caption"]
                if request.use_cot_language and cot_metas.get("language"):
                    updates["vocal_language"] = cot_metas["language"]
                request = request.model_copy(update=updates)
            elif metas_from_sample:
                plan.lm_metas = {k: v for k, v in sample.items() if k != "lyrics"}

            # 4. Phase 2: audio codes, exactly five per second, one sequence per batch item.
            if writes_codes(request):
                duration = request.audio_duration or random.uniform(*self.duration_range)
                duration = int(min(max(duration, self.duration_range[0]), self.duration_range[1]))
                cot_text = format_cot({**cot_metas, "duration": duration})
                report(f"LM phase 2: audio codes ({duration * CODES_PER_SECOND} per item)")
                started = time.perf_counter()
                codes = self._phase2(request, cot_text, duration, sampling, seeds)
                plan.seconds["phase2"] = time.perf_counter() - started
                request = request.model_copy(
                    update={"audio_duration": float(duration), "lm_audio_codes": codes}
                )
        plan.request = request
        return plan

    # --- The LM-only routes ------------------------------------------------------------

    def create_sample(
        self, query: str, *, instrumental: bool = False, vocal_language: str | None = None,
        params: SamplingParams | None = None, seed: int | None = None,
    ) -> dict[str, Any]:
        """Caption, lyrics and metadata invented from a description ("inspiration" mode)."""
        with self._lock:
            return self._create_sample(
                query.strip() or NO_NEGATIVE_PROMPT, instrumental, vocal_language,
                params or SamplingParams(), _seed(seed),
            )

    def format_sample(
        self, caption: str, lyrics: str, *, metadata: dict[str, Any] | None = None,
        params: SamplingParams | None = None, seed: int | None = None,
    ) -> dict[str, Any]:
        """A detailed caption, tidied lyrics and metadata from a rough caption and lyrics."""
        with self._lock:
            return self._format(caption, lyrics, dict(metadata or {}), params or SamplingParams(), _seed(seed))

    def understand_codes(self, code_string: str, *, seed: int | None = None) -> dict[str, Any]:
        """Metadata and lyrics that describe existing audio, given as audio codes."""
        with self._lock:
            prompt = prompts.understand_prompt(self.tokenizer, code_string)
            params = SamplingParams(temperature=UNDERSTAND_TEMPERATURE)
            return self._understand(prompt, {}, params, _seed(seed))

    # --- Phases ------------------------------------------------------------------------

    def _sampling(self, request: GenerationRequest) -> SamplingParams:
        return SamplingParams(
            temperature=request.lm_temperature,
            cfg_scale=request.lm_cfg_scale,
            top_k=request.lm_top_k,
            top_p=request.lm_top_p,
            repetition_penalty=request.lm_repetition_penalty,
        )

    def _phase1(self, request: GenerationRequest, given: dict, params: SamplingParams, seed: int) -> dict:
        caption, lyrics = request.prompt, request.lyrics
        negative = request.lm_negative_prompt
        constraint = None
        if request.constrained_decoding:
            constraint = MetadataConstraint(
                self.tokenizer, self.vocab, 1,
                forced=[given],
                duration_range=self.duration_range,
                write_caption=request.use_cot_caption,
                write_language=request.use_cot_language,
                max_caption_tokens=self.limits.caption_tokens,
            )
        [tokens] = self.backend.generate(
            [prompts.phase1_prompt(self.tokenizer, caption, lyrics)],
            uncond_prompts=[prompts.phase1_uncond_prompt(self.tokenizer, caption, lyrics, negative)],
            params=params,
            max_new_tokens=PHASE1_MAX_TOKENS,
            stop_token_ids={self._think_end_id(), self.vocab.eos_id},
            constraint=constraint,
            seeds=[seed],
        )
        metas = parse_cot(self._decode(tokens)).metas
        metas = {key: value for key, value in metas.items() if key != "genres"}
        return {**metas, **given}  # the user's values win even without constrained decoding

    def _phase2(
        self, request: GenerationRequest, cot_text: str, duration: int, params: SamplingParams, seeds: list[int]
    ) -> list[str]:
        caption, lyrics, negative = request.prompt, request.lyrics, request.lm_negative_prompt
        n_codes = duration * CODES_PER_SECOND
        prompt = prompts.phase2_prompt(self.tokenizer, caption, lyrics, cot_text)
        uncond = prompts.phase2_uncond_prompt(self.tokenizer, caption, lyrics, negative)
        groups = [seeds] if request.allow_lm_batch else [[seed] for seed in seeds]
        codes: list[str] = []
        for group in groups:
            rows = len(group)
            outputs = self.backend.generate(
                [prompt] * rows,
                uncond_prompts=[uncond] * rows,
                params=params,
                max_new_tokens=n_codes + 1,
                stop_token_ids={self.vocab.eos_id},
                constraint=CodesConstraint(self.vocab, rows, n_codes) if request.constrained_decoding else None,
                seeds=group,
            )
            for tokens in outputs:
                item = [self.vocab.code_of(t) for t in tokens if self.vocab.is_code(t)][:n_codes]
                codes.append(format_audio_codes(item))
        return codes

    def _create_sample(
        self, query: str, instrumental: bool, language: str | None, params: SamplingParams, seed: int
    ) -> dict[str, Any]:
        forced = {"language": language} if language and language != "unknown" else {}
        prompt = prompts.inspiration_prompt(self.tokenizer, query, instrumental)
        result = self._understand(prompt, forced, params, seed)
        if instrumental:
            result["lyrics"] = INSTRUMENTAL_LYRICS
        result["instrumental"] = instrumental
        return result

    def _format(self, caption: str, lyrics: str, forced: dict, params: SamplingParams, seed: int) -> dict[str, Any]:
        caption = caption.strip() or NO_NEGATIVE_PROMPT
        lyrics = lyrics if lyrics.strip() else INSTRUMENTAL_LYRICS
        prompt = prompts.format_prompt(self.tokenizer, caption, lyrics)
        result = self._understand(prompt, forced, params, seed)
        if not result.get("lyrics"):
            result["lyrics"] = lyrics
        return result

    def _understand(self, prompt: str, forced: dict, params: SamplingParams, seed: int) -> dict[str, Any]:
        """Constrained metadata, then free-text lyrics (audio codes masked); no CFG (no
        unconditional prompt), so ``params.cfg_scale`` plays no part."""
        constraint = MetadataConstraint(
            self.tokenizer, self.vocab, 1, forced=[forced], duration_range=self.duration_range, then_text=True,
            max_caption_tokens=self.limits.caption_tokens, max_text_tokens=self.limits.text_tokens,
        )
        [tokens] = self.backend.generate(
            [prompt], params=params, max_new_tokens=TEXT_MAX_TOKENS,
            stop_token_ids={self.vocab.eos_id}, constraint=constraint, seeds=[seed],
        )
        parsed = parse_cot(self._decode(tokens))
        return {**parsed.metas, **forced, "lyrics": parsed.lyrics.strip()}

    # --- Helpers -----------------------------------------------------------------------

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=False)

    def _think_end_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids("</think>")

    @staticmethod
    def _request_fields(metas: dict[str, Any], *, overwrite: bool, request: GenerationRequest) -> dict[str, Any]:
        """Request updates from LM metadata: ``overwrite`` replaces the user's values (sample and
        format results), otherwise only empty fields are filled."""
        updates: dict[str, Any] = {}

        def put(name: str, value: Any, empty: bool) -> None:
            if value in (None, "", "N/A"):
                return
            if overwrite or empty:
                updates[name] = value

        # model_copy does not validate: a value the DiT cannot take is left out here.
        bpm = metas.get("bpm")
        put("bpm", bpm if isinstance(bpm, int) and BPM_MIN <= bpm <= BPM_MAX else None, request.bpm is None)
        put("key_scale", metas.get("keyscale"), not request.key_scale)
        signature = str(metas.get("timesignature") or "").split("/", 1)[0].strip()
        put("time_signature", signature if signature in TIME_SIGNATURES else None, not request.time_signature)
        if metas.get("duration"):
            duration = float(min(max(float(metas["duration"]), DURATION_MIN), DURATION_MAX))
            put("audio_duration", duration, request.audio_duration is None)
        if overwrite:
            put("prompt", metas.get("caption"), not request.prompt)
            put("lyrics", metas.get("lyrics"), not request.lyrics)
            put("vocal_language", metas.get("language"), True)
        return updates


def _decoding_note(lm: LMBackend) -> str:
    kv_cache = getattr(lm, "kv_cache", None)
    if kv_cache is None:
        return ""
    return f", {kv_cache} KV cache, decoding step {'compiled' if getattr(lm, 'compile_config', None) else 'eager'}"


def _seed(seed: int | None) -> int:
    return random.randint(0, SEED_MAX) if seed is None or seed < 0 else seed


def load_planner(
    checkpoint_dir: str | Path,
    name_or_path: str,
    *,
    mode: str = "auto",
    backend: str = "transformers",
    device: torch.device | str = "cpu",
    duration_max: float = DURATION_MAX,
    limits: TextLimits = TextLimits(),
    kv_cache: str = "static",
    compile: str = "auto",
) -> tuple[LMPlanner | None, str | None]:
    """(planner, error) for the configured LM.

    ``mode`` "off" never loads; "auto" loads the named LM, or else the first official LM
    folder present, and stays quiet when there is none; "on" reports a missing folder as an
    error. A failed load is returned as a sentence for clients (the LM routes answer it, jobs
    that need the LM fail with it) naming the LM but no server path or exception; the details
    go to the log. The server still serves everything else.
    """
    if mode == "off":
        return None, None
    backend = "transformers" if backend == "pt" else backend
    try:
        folder = resolve_lm_folder(checkpoint_dir, name_or_path)
    except LMLoadError as error:
        if mode != "auto":
            log.error("5 Hz LM not loaded: %s", error)
            return None, f"the 5 Hz LM {Path(str(name_or_path)).name!r} was not found; the server log has the details"
        # "auto" serves the LM that is there: the main download brings the 1.7B, not the 0.6B.
        present = [name for name in LM_MODEL_NAMES if name in list_lm_folders(checkpoint_dir)]
        if not present:
            return None, None
        log.info("LM %s not found; using %s from %s", name_or_path, present[0], checkpoint_dir)
        folder = Path(checkpoint_dir) / present[0]
    try:
        lm = load_lm(folder, torch.device(device), backend, kv_cache=kv_cache, compile=compile)
        planner = LMPlanner(lm, duration_max=duration_max, limits=limits)
    except Exception as error:  # a broken checkpoint must not take the DiT server down with it
        log.exception("Loading the 5 Hz LM from %s failed", folder)
        return None, f"the 5 Hz LM {folder.name!r} could not be loaded; the server log has the details"
    log.info("5 Hz LM %s loaded on %s (%s backend%s)", folder.name, device, backend, _decoding_note(lm))
    return planner, None
