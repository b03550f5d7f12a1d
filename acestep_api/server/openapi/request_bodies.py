"""The request bodies of the routes that read their body by hand (bodies.py), as schemas for
the OpenAPI document. The routes take JSON, urlencoded and multipart bodies alike, so FastAPI
cannot see a body parameter; these models say what the routes read.

Documentation only: nothing validates requests with them. Bounds come from GenerationRequest
and aliases from dialects.official.ALIASES, so the document follows the code they describe.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from acestep_api.engine.request import (
    AUDIO_FORMATS,
    CHUNK_MASK_MODES,
    INFER_METHODS,
    REPAINT_MODES,
    SEED_MAX,
    TASK_TYPES,
    TIME_SIGNATURES,
    GenerationRequest,
)
from acestep_api.engine.limits import (
    SHORT_TEXT_MAX_CHARS,
    TEXT_MAX_CHARS,
    TIMESTEPS_MAX_ITEMS,
    TRACK_CLASSES_MAX_ITEMS,
)
from acestep_api.dialects.official import (
    ALIASES,
    LM_BACKENDS,
    METADATA_KEYS,
)
from acestep_api.server.uploads import UPLOAD_FIELDS
from acestep_api.webhooks.targets import MAX_URL_CHARS

JSON_TYPE, FORM_TYPE, MULTIPART_TYPE = "application/json", "application/x-www-form-urlencoded", "multipart/form-data"
# How clients write the time signatures GenerationRequest takes ("" = not given).
SIGNATURES = ("", "N/A", *TIME_SIGNATURES, "2/4", "3/4", "4/4", "6/8")
IGNORED = "Accepted and ignored."
AI_TOKEN = "The API key, when ACESTEP_API_KEY is set (or send it in the Authorization header)."


def like(name: str, kind: Any) -> Any:
    """`kind` with the constraints (ge, le, max_length ...) GenerationRequest puts on `name`,
    and for a text field its limit in characters (engine/limits.py)."""
    metadata = tuple(GenerationRequest.model_fields[name].metadata)
    if name in TEXT_MAX_CHARS:
        metadata += (Field(max_length=TEXT_MAX_CHARS[name]),)
    return Annotated[(kind, *metadata)] if metadata else kind


ShortText = Annotated[str, Field(max_length=SHORT_TEXT_MAX_CHARS)]


def _choice(values: tuple[str, ...]) -> dict:
    return {"enum": list(values)}


class _Body(BaseModel):
    # Unknown fields are accepted and ignored, as the official server does.
    model_config = ConfigDict(extra="allow")


class AuthOnlyBody(_Body):
    """A body that carries nothing but, optionally, the key."""

    ai_token: str | None = Field(default=None, description=AI_TOKEN)


WEBHOOK_URL = ("Where to POST the job's final /query_result item, signed per Standard Webhooks, when it ends "
               "(docs/operations.md#webhooks). http(s), public addresses only; 400 when refused or when the "
               "server has no ACESTEP_WEBHOOK_SECRET.")


def _webhook_url(description: str = WEBHOOK_URL):
    return Field(default=None, max_length=MAX_URL_CHARS, description=description)


class ReplayBody(_Body):
    """What a replay may change: the output format only."""

    audio_format: str | None = Field(default=None, json_schema_extra=_choice(AUDIO_FORMATS),
                                     description="The replay's file format; the original job's when absent.")
    webhook_url: str | None = _webhook_url()
    ai_token: str | None = Field(default=None, description=AI_TOKEN)


class ReleaseTaskFields(_Body):
    """What POST /release_task and POST /v1/music/generate read; every field is optional.
    docs/api.md has the whole table. Numbers and booleans may also come as text ("120", "true")."""

    webhook_url: str | None = _webhook_url()
    webhookUrl: str | None = _webhook_url("Alias of `webhook_url`.")  # noqa: N815 - the wire's spelling
    webhook: str | None = _webhook_url("Alias of `webhook_url`.")

    replay_of: str | None = Field(default=None, description=(
        "The id of a succeeded job to replay: its stored resolved request is queued again (the same "
        "audio, without the LM); only `audio_format` of this body applies. 404 unknown, 409 not replayable."))
    prompt: like("prompt", str) = Field(default="", description="The music description (caption).")
    lyrics: like("lyrics", str) = Field(default="", description='"", "[inst]" or "[instrumental]": an instrumental.')
    instrumental: bool = Field(default=False, description="With empty lyrics: an instrumental.")
    instruction: like("instruction", str) | None = Field(default=None, description="The DiT instruction.")
    vocal_language: like("vocal_language", str) = Field(default="en", description="A language code or unknown.")
    bpm: like("bpm", int) | None = Field(default=None, description="0 or null: not given.")
    key_scale: like("key_scale", str) = Field(default="", description="e.g. C major, F# minor.")
    time_signature: like("time_signature", str) = Field(default="", json_schema_extra=_choice(SIGNATURES))
    audio_duration: like("audio_duration", float) | None = Field(
        default=None, description="Seconds; null or <= 0: the LM's, else random.")
    model: like("model", str) | None = Field(default=None, description=(
        "A DiT name from /v1/model_inventory: a loaded one, or with ACESTEP_ON_DEMAND_MODEL_LOAD one on disk "
        "(the job loads it); any other: 400 naming those on disk."))
    lm_model_path: like("lm_model_path", str) | None = Field(default=None, description=(
        "The 5 Hz LM folder that serves this job: the loaded one, or with ACESTEP_ON_DEMAND_MODEL_LOAD one on "
        "disk (the job loads it in place of the loaded one); any other: 400 naming those on disk."))
    task_type: str = Field(default="text2music", json_schema_extra=_choice(TASK_TYPES))
    batch_size: like("batch_size", int) = Field(default=2, description="Clamped to ACESTEP_BATCH_MAX.")
    inference_steps: like("inference_steps", int) = 8
    guidance_scale: like("guidance_scale", float) = 7.0
    shift: like("shift", float) = 3.0
    timesteps: like("prompt", str) | Annotated[list[float], Field(max_length=TIMESTEPS_MAX_ITEMS)] | None = Field(default=None, description="Comma-separated numbers in [0, 1], or a list.")
    infer_method: str = Field(default="ode", json_schema_extra=_choice(INFER_METHODS))
    use_adg: bool = False
    cfg_interval_start: like("cfg_interval_start", float) = 0.0
    cfg_interval_end: like("cfg_interval_end", float) = 1.0
    use_random_seed: bool = True
    seed: Annotated[int, Field(ge=-1, le=SEED_MAX)] | str | None = Field(
        default=None, description="An integer (-1: random), or a comma-separated list per batch item.")
    src_audio_path: like("src_audio_path", str | None) = Field(
        default=None, description="Source audio: a file under ACESTEP_INPUT_DIR, or an absolute path in the "
                                   "system temp folder (text2music does not use it).")
    reference_audio_path: like("reference_audio_path", str | None) = Field(
        default=None, description="Reference (timbre) audio: a file under ACESTEP_INPUT_DIR, or an absolute "
                                   "path in the system temp folder.")
    repainting_start: like("repainting_start", float) = 0.0
    repainting_end: like("repainting_end", float) | None = Field(default=None, description="null, 0 or negative: the end.")
    audio_cover_strength: like("audio_cover_strength", float) = 1.0
    cover_noise_strength: like("cover_noise_strength", float) = 0.0
    repaint_mode: str = Field(default="balanced", json_schema_extra=_choice(REPAINT_MODES),
                              description="How much of the source a repaint keeps.")
    repaint_strength: like("repaint_strength", float) = Field(
        default=0.5, description="balanced only: 0 keeps the most of the source, 1 the least.")
    repaint_latent_crossfade_frames: like("repaint_latent_crossfade_frames", int | None) = Field(
        default=None, description="null: set by repaint_mode and repaint_strength (0-25).")
    repaint_wav_crossfade_sec: like("repaint_wav_crossfade_sec", float | None) = Field(
        default=None, description="null: set by repaint_mode and repaint_strength (0-0.05 s).")
    chunk_mask_mode: str = Field(default="explicit", json_schema_extra=_choice(CHUNK_MASK_MODES),
                                 description="auto: the model decides where to generate (chunk mask 2.0).")
    global_caption: like("global_caption", str) = Field(
        default="", description="The whole song's description; read by lego-SFT checkpoints only.")
    audio_code_string: like("audio_code_string", str) = ""
    track_name: like("track_name", str) = ""
    track_classes: ShortText | Annotated[list[ShortText], Field(max_length=TRACK_CLASSES_MAX_ITEMS)] | None = None
    audio_format: str = Field(default="mp3", json_schema_extra=_choice(AUDIO_FORMATS))
    use_tiled_decode: bool = True
    thinking: bool = False
    sample_mode: bool = False
    sample_query: like("sample_query", str) = ""
    use_format: bool = False
    use_cot_caption: bool = True
    use_cot_language: bool = True
    use_cot_metas: bool = Field(default=True, description="false: the LM writes no metadata.")
    lm_temperature: like("lm_temperature", float) = 0.85
    lm_cfg_scale: like("lm_cfg_scale", float) = 2.5
    lm_top_k: like("lm_top_k", int) | None = Field(default=None, description="null or <= 0: off.")
    lm_top_p: like("lm_top_p", float) | None = 0.9
    lm_negative_prompt: like("lm_negative_prompt", str) = "NO USER INPUT"
    lm_repetition_penalty: like("lm_repetition_penalty", float) = 1.0
    constrained_decoding: bool = True
    allow_lm_batch: bool = True
    analysis_only: bool = False
    full_analysis_only: bool = False
    extract_codes_only: bool = False
    lora_name: Annotated[str, Field(max_length=128)] | None = Field(default=None, description=(
        "An adapter (LoRA / LoKr) for this job: a folder name in the adapters folder (GET /v1/lora/status lists "
        "them as `available`). Absent: the default adapter of /v1/lora/load when on, else none."))
    lora_scale: Annotated[float, Field(ge=0, le=1)] | None = Field(default=None, description=(
        "The adapter's strength; absent: 1 for lora_name, the default's scale otherwise. 0: no adapter."))
    lm_backend: str | None = Field(default=None, description=IGNORED, json_schema_extra=_choice(LM_BACKENDS))
    # Official fields this server accepts under their aliases and does not use.
    constrained_decoding_debug: Any = Field(default=None, description=IGNORED)
    is_format_caption: Any = Field(default=None, description=IGNORED)
    sampler_mode: Any = Field(default=None, description=IGNORED)
    velocity_norm_threshold: Any = Field(default=None, description=IGNORED)
    velocity_ema_factor: Any = Field(default=None, description=IGNORED)
    latent_shift: Any = Field(default=None, description=IGNORED)
    latent_rescale: Any = Field(default=None, description=IGNORED)
    ai_token: str | None = Field(default=None, description=AI_TOKEN)


class ReleaseTaskJson(ReleaseTaskFields):
    param_obj: dict[str, Any] | str | None = Field(
        default=None, description="More fields (an object, or a JSON string of one), read after the body's own.")
    metas: dict[str, Any] | None = Field(default=None, description="More fields, read after param_obj.")


class ReleaseTaskForm(ReleaseTaskFields):
    param_obj: str | None = Field(default=None, description="More fields: a JSON object as text.")
    metas: str | None = Field(default=None, description="More fields: a JSON object as text.")


UPLOAD = "An audio file (wav, flac, mp3, ogg ...), ACESTEP_MAX_UPLOAD_MB at most; it replaces {}."


class ReleaseTaskMultipart(ReleaseTaskForm):
    # A part is a file or absent: no null, so the default is left out of the type.
    src_audio: bytes = Field(default=None, description=UPLOAD.format("src_audio_path"))
    ctx_audio: bytes = Field(default=None, description=UPLOAD.format("src_audio_path") + " Alias of `src_audio`.")
    reference_audio: bytes = Field(default=None, description=UPLOAD.format("reference_audio_path"))
    ref_audio: bytes = Field(default=None, description=UPLOAD.format("reference_audio_path")
                             + " Alias of `reference_audio`.")


class InitBody(_Body):
    """POST /v1/init: a DiT into a slot, and optionally the 5 Hz LM."""

    model: str | None = Field(default=None, max_length=256, description=(
        "A DiT folder on disk (or an official one, fetched when ACESTEP_DOWNLOAD_MODELS allows); "
        "absent: the slot's own model again."))
    slot: int | None = Field(default=None, ge=1, le=3, description="1 (the primary, default), 2 or 3.")
    init_llm: bool = Field(default=False, description="Also load the 5 Hz LM.")
    lm_model_path: str | None = Field(default=None, max_length=256,
                                      description="The LM folder init_llm loads; absent: ACESTEP_LM_MODEL_PATH.")
    ai_token: str | None = Field(default=None, description=AI_TOKEN)


class QueryResultBody(_Body):
    task_id_list: list[str] | str = Field(description="Task ids, or a string holding a JSON list of them.")
    ai_token: str | None = Field(default=None, description=AI_TOKEN)


class CancelTaskBody(_Body):
    task_id: str | None = Field(default=None, description="One task id (not with task_id_list).")
    task_id_list: list[str] | str | None = Field(
        default=None, description="Several task ids, or a string holding a JSON list of them.")
    ai_token: str | None = Field(default=None, description=AI_TOKEN)


class RandomSampleBody(_Body):
    sample_type: str | None = Field(default="simple_mode", description="simple_mode, or anything else for custom examples.")
    ai_token: str | None = Field(default=None, description=AI_TOKEN)


class SampleParams(_Body):
    bpm: like("bpm", int) | None = None
    duration: float | None = None
    key_scale: str | None = None
    time_signature: str | None = None
    language: str | None = None


class FormatInputBody(_Body):
    prompt: like("prompt", str) | None = Field(default=None, description="The caption to format (alias caption).")
    caption: like("prompt", str) | None = None
    lyrics: like("lyrics", str) | None = None
    param_obj: SampleParams | str | None = Field(default=None, description="Metadata to keep (or a JSON string).")
    time_signature: str | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = 0.85
    ai_token: str | None = Field(default=None, description=AI_TOKEN)


class CreateSampleBody(_Body):
    query: like("sample_query", str) | None = Field(default=None, description="A description of the song.")
    instrumental: bool | None = False
    vocal_language: str | None = "unknown"
    temperature: Annotated[float, Field(ge=0, le=2)] | None = 0.85
    ai_token: str | None = Field(default=None, description=AI_TOKEN)


class MusicRandomBody(_Body):
    thinking: bool | None = Field(default=True, description="The LM writes the audio codes too (or ?thinking=).")
    webhook_url: str | None = _webhook_url()
    ai_token: str | None = Field(default=None, description=AI_TOKEN)


def with_aliases(schema: dict) -> dict:
    """The schema with each official alias as a property of its own, described as such."""
    properties = schema.get("properties", {})
    for name, spellings in ALIASES.items():
        if name not in properties:
            continue
        for alias in spellings:
            if alias != name and alias not in properties:
                properties[alias] = {**properties[name], "description": f"Alias of `{name}`."}
                properties[alias].pop("title", None)
    if "metas" in properties:
        for key in METADATA_KEYS:
            properties.setdefault(key, {**properties["metas"], "description": "Alias of `metas`."})
    return schema



class LoraLoadBody(_Body):
    lora_path: str = Field(description="An adapter folder directly inside the adapters folder (ACESTEP_LORA_DIR): "
                                       "its name, or its path.")
    adapter_name: str | None = Field(default=None, description="The name to load it under; default the folder name.")
    ai_token: str | None = Field(default=None, description=AI_TOKEN)


class LoraToggleBody(_Body):
    use_lora: bool = Field(description="Turn the default adapter on or off for jobs that name none.")
    ai_token: str | None = Field(default=None, description=AI_TOKEN)


class LoraScaleBody(_Body):
    scale: Annotated[float, Field(ge=0, le=1)] = Field(description="The default adapter's strength.")
    adapter_name: str | None = Field(default=None, description="Which default adapter; default the active one.")
    ai_token: str | None = Field(default=None, description=AI_TOKEN)


def upload_encoding() -> dict:
    """multipart encoding: the audio parts are files of any audio type."""
    return {name: {"contentType": "audio/*, application/octet-stream"} for name in UPLOAD_FIELDS}
