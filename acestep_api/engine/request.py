"""What the engine is asked to make, and what it hands back.

``GenerationRequest`` holds canonical field names only (the HTTP layer resolves the
official API's aliases before building it). Its validators reject values that cannot
be right and say which field is wrong and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from acestep_api.engine.limits import (
    SEEDS_MAX_ITEMS,
    SHORT_TEXT_MAX_CHARS,
    TEXT_MAX_CHARS,
    TIMESTEPS_MAX_ITEMS,
    TRACK_CLASSES_MAX_ITEMS,
    text_problem,
)
# The one vocabulary of each choice: GenerationRequest's fields and every dialect read these.
TaskType = Literal["text2music", "repaint", "cover", "cover-nofsq", "extract", "lego", "complete"]
AudioFormat = Literal["mp3", "wav", "flac", "opus", "wav32", "aac"]
InferMethod = Literal["ode", "sde"]
# "explicit": the chunk mask is 1 where the DiT generates, 0 where it keeps the source;
# "auto": every frame carries 2.0, the value by which the model decides for itself.
ChunkMaskMode = Literal["explicit", "auto"]
RepaintMode = Literal["conservative", "balanced", "aggressive"]
TASK_TYPES: tuple[str, ...] = get_args(TaskType)
TURBO_TASK_TYPES = ("text2music", "repaint", "cover", "cover-nofsq")
# They rework a source recording (or audio codes in its place).
SOURCE_TASK_TYPES = ("repaint", "lego", "extract", "complete", "cover-nofsq")
CHUNK_MASK_MODES: tuple[str, ...] = get_args(ChunkMaskMode)
REPAINT_MODES: tuple[str, ...] = get_args(RepaintMode)
REPAINT_WAV_CROSSFADE_MAX = 10.0  # seconds on each side of a repaint window
AUDIO_FORMATS: tuple[str, ...] = get_args(AudioFormat)
INFER_METHODS: tuple[str, ...] = get_args(InferMethod)
TIME_SIGNATURES = ("2", "3", "4", "6")
DURATION_MIN, DURATION_MAX = 10.0, 600.0
BPM_MIN, BPM_MAX = 30, 300
SEED_MAX = 2**32 - 1  # seeds are unsigned 32-bit; -1 asks for a random one
CODES_PER_SECOND = 5  # the 5 Hz LM's audio codes
AUDIO_CODES_MAX = int(DURATION_MAX) * CODES_PER_SECOND
# Beyond the LM's vocabulary (about 217,000 tokens) a top-k cut keeps everything.
LM_TOP_K_MAX = 1_000_000
DEFAULT_INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"
INSTRUMENTAL_LYRICS = ("", "[inst]", "[instrumental]")  # lyrics that mean "no vocals"
INSTRUMENTAL_MARK = "[inst]"  # what an instrumental request without lyrics sends the DiT


def is_instrumental_lyrics(lyrics: str) -> bool:
    return lyrics.strip().lower() in INSTRUMENTAL_LYRICS


def lyrics_or_instrumental(lyrics: str, instrumental: bool) -> str:
    """The one instrumental rule of every dialect: no lyrics and `instrumental` -> "[inst]"."""
    return INSTRUMENTAL_MARK if instrumental and not lyrics.strip() else lyrics


class GenerationRequest(BaseModel):
    """One generation job, as the engine understands it."""

    # No inf or NaN anywhere: every number has a finite range.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    # Text
    prompt: str = ""
    # The whole song's description beside the per-track prompt; read by lego-SFT checkpoints only.
    global_caption: str = ""
    lyrics: str = ""
    instruction: str = DEFAULT_INSTRUCTION
    vocal_language: str = "en"

    # Music metadata (None / "" = not given)
    bpm: int | None = Field(default=None, ge=BPM_MIN, le=BPM_MAX)
    key_scale: str = ""
    time_signature: str = ""
    audio_duration: float | None = Field(default=None, ge=DURATION_MIN, le=DURATION_MAX)

    # Model and task
    model: str | None = None
    # The 5 Hz LM folder that serves this job (None: the loaded one); engine/model_slots.py.
    lm_model_path: str | None = None
    task_type: TaskType = "text2music"
    batch_size: int = Field(default=2, ge=1)

    # DiT sampling
    inference_steps: int = Field(default=8, ge=1, le=200)
    guidance_scale: float = Field(default=7.0, ge=0.0, le=200.0)
    shift: float = Field(default=3.0, gt=0.0, le=10.0)
    timesteps: list[float] | None = Field(default=None, max_length=TIMESTEPS_MAX_ITEMS)
    infer_method: InferMethod = "ode"
    use_adg: bool = False
    cfg_interval_start: float = Field(default=0.0, ge=0.0, le=1.0)
    cfg_interval_end: float = Field(default=1.0, ge=0.0, le=1.0)

    # Seeds: use_random_seed wins; otherwise `seeds` maps item by item (-1 = random).
    use_random_seed: bool = True
    seeds: list[int] = Field(default_factory=list, max_length=SEEDS_MAX_ITEMS)

    # Audio-input tasks. Paths are local files the server already checked (audio_input.check_audio).
    reference_audio_path: str | None = None
    src_audio_path: str | None = None
    # Set by the server, not by clients: the path fields an upload filled, each with the upload
    # field it came in ({"src_audio_path": "src_audio"}), so messages name the upload by that
    # field and never by the file name the server chose.
    upload_fields: dict[str, str] = Field(default_factory=dict)
    # Seconds in the source; a negative start or an end past the source outpaints.
    # repainting_end None, 0 or negative = the end of the source.
    repainting_start: float = Field(default=0.0, ge=-DURATION_MAX, le=DURATION_MAX)
    repainting_end: float | None = Field(default=None, ge=-DURATION_MAX, le=DURATION_MAX)
    audio_cover_strength: float = Field(default=1.0, ge=0.0, le=1.0)
    cover_noise_strength: float = Field(default=0.0, ge=0.0, le=1.0)
    # How much of the source a repaint keeps (docs/pipeline.md#audio-tasks): the mode and,
    # in "balanced", the strength (0 keeps the most, 1 lets diffusion run free) set the
    # re-injection, the latent crossfade and the waveform splice; the two crossfade fields,
    # when given, replace what the mode set.
    repaint_mode: RepaintMode = "balanced"
    repaint_strength: float = Field(default=0.5, ge=0.0, le=1.0)
    repaint_latent_crossfade_frames: int | None = Field(default=None, ge=0, le=250)
    repaint_wav_crossfade_sec: float | None = Field(default=None, ge=0.0, le=REPAINT_WAV_CROSSFADE_MAX)
    chunk_mask_mode: ChunkMaskMode = "explicit"
    audio_code_string: str = ""
    track_name: str = ""
    track_classes: list[str] | None = Field(default=None, max_length=TRACK_CLASSES_MAX_ITEMS)

    # Output
    audio_format: AudioFormat = "mp3"
    use_tiled_decode: bool = True

    # 5 Hz LM (its own issue; accepted and carried here)
    thinking: bool = False
    sample_mode: bool = False
    sample_query: str = ""
    # Sample mode: write an instrumental song (as the description's own hints can ask), and
    # keep the request's audio_duration instead of the LM's (fal's duration must hold).
    instrumental: bool = False
    sample_keeps_duration: bool = False
    use_format: bool = False
    use_cot_caption: bool = True
    use_cot_language: bool = True
    use_cot_metas: bool = True  # False: the LM writes no metadata (phase 1 does not run)
    lm_temperature: float = Field(default=0.85, ge=0.0, le=2.0)
    lm_cfg_scale: float = Field(default=2.5, ge=0.0, le=100.0)
    lm_top_k: int | None = Field(default=None, le=LM_TOP_K_MAX)
    lm_top_p: float | None = Field(default=0.9, ge=0.0, le=1.0)
    lm_negative_prompt: str = "NO USER INPUT"
    lm_repetition_penalty: float = Field(default=1.0, gt=0.0, le=10.0)
    constrained_decoding: bool = True
    allow_lm_batch: bool = True
    analysis_only: bool = False
    full_analysis_only: bool = False
    extract_codes_only: bool = False  # no LM needed: the source audio's 5 Hz codes only
    # Set by the planner, not by clients: the audio codes the LM wrote, one string per batch
    # item; they take the place of ``audio_code_string`` item by item.
    lm_audio_codes: list[str] | None = None
    # Set by the server for a replay: the request is a finished job's `resolved` one (seeds,
    # duration, the LM's text and codes all settled), so the LM does not run again.
    skip_lm: bool = False
    replay_of: str | None = Field(default=None, max_length=64)  # the job it replays

    # An adapter of the DiT (engine/adapters.py): a folder name in the adapters folder, and its
    # strength. No name: the server's default adapter, when one is loaded and on. The engine
    # records the adapter it used (or none, scale 0) in the resolved request.
    lora_name: str | None = Field(default=None, max_length=128)
    lora_scale: float | None = Field(default=None, ge=0.0, le=1.0)

    @field_validator(*TEXT_MAX_CHARS)
    @classmethod
    def _text_bounds(cls, value: str | None, info) -> str | None:
        # Every dialect builds this model, so the limits hold whichever route a request came by.
        problem = None if value is None else text_problem(value, TEXT_MAX_CHARS[info.field_name])
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("track_classes")
    @classmethod
    def _track_classes(cls, value: list[str] | None) -> list[str] | None:
        for item in value or ():
            problem = text_problem(item, SHORT_TEXT_MAX_CHARS)
            if problem:
                raise ValueError(f"items {problem}")
        return value

    @field_validator("audio_code_string")
    @classmethod
    def _audio_code_count(cls, value: str) -> str:
        count = value.count("<|audio_code_")
        if count > AUDIO_CODES_MAX:
            raise ValueError(
                f"must hold at most {AUDIO_CODES_MAX} audio codes, {DURATION_MAX:g} s at "
                f"{CODES_PER_SECOND} per second (got {count})"
            )
        return value

    @field_validator("time_signature")
    @classmethod
    def _time_signature(cls, value: str) -> str:
        value = value.strip()
        if value in ("", "N/A"):
            return ""
        numerator = value.split("/", 1)[0].strip()
        if numerator not in TIME_SIGNATURES:
            raise ValueError("must be one of 2, 3, 4, 6 (or 2/4, 3/4, 4/4, 6/8)")
        return numerator

    @field_validator("timesteps")
    @classmethod
    def _timesteps(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return None
        if not value or any(not 0.0 <= t <= 1.0 for t in value):
            raise ValueError("must be a non-empty list of numbers between 0 and 1")
        return value

    @model_validator(mode="after")
    def _intervals(self) -> "GenerationRequest":
        if self.cfg_interval_start > self.cfg_interval_end:
            raise ValueError("cfg_interval_start must not be greater than cfg_interval_end")
        return self

    @property
    def is_instrumental(self) -> bool:
        return is_instrumental_lyrics(self.lyrics)

    @property
    def needs_lm(self) -> bool:
        """True when the request cannot be served without the 5 Hz LM."""
        return bool(
            self.thinking or self.sample_mode or self.sample_query.strip() or self.use_format
            or self.analysis_only or self.full_analysis_only
        )


@dataclass(frozen=True)
class Timings:
    """Seconds per phase of one job; None for a phase that did not run."""

    text_encoding: float | None = None
    diffusion: float | None = None
    decoding: float | None = None
    encoding: float | None = None
    lm: float | None = None  # the 5 Hz LM's whole plan; its phases follow
    lm_sample: float | None = None
    lm_format: float | None = None
    lm_metadata: float | None = None  # phase 1: the metadata (chain of thought)
    lm_codes: float | None = None  # phase 2: the audio codes
    total: float | None = None


class SongMetas(BaseModel):
    """The song's metadata as it was made: the value used, None where unknown."""

    model_config = ConfigDict(extra="ignore")

    bpm: int | None = None
    duration: int | float | None = None  # seconds, as the request or the audio gave it
    genres: str | None = None
    keyscale: str | None = None
    timesignature: str | None = None

    def get(self, key: str, default: Any = None) -> Any:
        """A value by its field name, `default` when unknown."""
        value = getattr(self, key, None) if key in type(self).model_fields else None
        return default if value is None else value


AnalysisMode = Literal["analysis_only", "extract_codes_only", "full_analysis_only"]


class Analysis(BaseModel):
    """What an analysis job found instead of making audio (docs/wire-contract.md#analysis-modes)."""

    mode: AnalysisMode
    audio_codes: str = ""  # the source's 5 Hz codes (extract_codes_only)
    # The LM's reading of the source's codes (full_analysis_only): bpm, keyscale, caption, ...
    understood: dict[str, Any] | None = None


class GenerationResult(BaseModel):
    """What one finished job produced, as data (the dialects word it). Stored as JSON with the job."""

    audio_paths: list[str]
    seeds: list[int]
    prompt: str
    lyrics: str
    metas: SongMetas = Field(default_factory=SongMetas)
    dit_model: str  # "" when no DiT ran (analysis_only)
    lm_model: str
    timings: Timings = Field(default_factory=Timings)
    steps: int | None = None  # diffusion steps run
    # What the 5 Hz LM settled (its CoT field names: bpm, caption, duration, keyscale, ...).
    lm_metas: dict[str, Any] = Field(default_factory=dict)
    sample_rate: int = 48000
    analysis: Analysis | None = None  # set for the analysis modes, which make no audio
    # A result stored by an earlier version keeps the summary text it was answered with
    # (jobs/store.py reads it in); answers show it as it was.
    stored_generation_info: str | None = None
    # The request as the DiT ran it, LM work and random choices settled: queued again it makes
    # the same audio without the LM (a replay). None for the analysis modes and older results.
    resolved: GenerationRequest | None = None


class GenerationError(RuntimeError):
    """A job cannot be completed; the message is shown to the client as the job's error."""
