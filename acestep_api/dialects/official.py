"""The official ACE-Step 1.5 API: POST /release_task, /query_result and /cancel_task.

`parse_release_task`: a /release_task body (any alias, any source) -> a validated
GenerationRequest. The rest renders answers: the `wrap` envelope, a job as a /query_result
item, a cancel as a /cancel_task item.

Alias lookup follows the official server (docs/wire-contract.md#field-aliases-and-sources):
sources in order are the flat body, then `param_obj`, then the first truthy of the metadata
keys; within a source the aliases are tried in order and the first value that is not null
wins, so an empty string under an earlier alias shadows a later one.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from typing import Any, Protocol

import annotated_types
from pydantic import ValidationError

from acestep_api.engine.limits import (
    SHORT_TEXT_MAX_CHARS,
    TEXT_MAX_CHARS,
    TIMESTEPS_MAX_ITEMS,
    TRACK_CLASSES_MAX_ITEMS,
)
from acestep_api.engine.request import (
    AUDIO_FORMATS,
    CHUNK_MASK_MODES,
    INFER_METHODS,
    REPAINT_MODES,
    TASK_TYPES,
    GenerationRequest,
    GenerationResult,
    SongMetas,
    lyrics_or_instrumental,
)
from acestep_api.dialects.coercion import (
    InvalidField,
    as_object,
    show,
    to_bool,
    to_choice,
    to_float,
    to_seeds,
    to_float_list,
    to_int,
    to_text,
    to_text_list,
)
from acestep_api.engine.adapter_folders import NAME_RULE as ADAPTER_NAME_RULE
from acestep_api.engine.adapter_folders import is_valid_name as is_valid_adapter_name
from acestep_api.jobs.models import Job, JobStatus
from acestep_api.settings import Settings

# Canonical name -> accepted spellings, in lookup order. Names absent here have one spelling.
ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "caption"),
    "sample_mode": ("sample_mode", "sampleMode"),
    "sample_query": ("sample_query", "sampleQuery", "description", "desc"),
    "use_format": ("use_format", "useFormat", "format"),
    "model": ("model", "model_name", "modelName", "dit_model", "ditModel"),
    "key_scale": ("key_scale", "keyscale", "keyScale", "key"),
    "time_signature": ("time_signature", "timesignature", "timeSignature"),
    "audio_duration": ("audio_duration", "duration", "audioDuration", "target_duration", "targetDuration"),
    "vocal_language": ("vocal_language", "vocalLanguage", "language"),
    "inference_steps": ("inference_steps", "inferenceSteps"),
    "guidance_scale": ("guidance_scale", "guidanceScale"),
    "use_random_seed": ("use_random_seed", "useRandomSeed"),
    "audio_cover_strength": ("audio_cover_strength", "audioCoverStrength", "cover_strength", "coverStrength"),
    "reference_audio_path": ("reference_audio_path", "ref_audio_path", "referenceAudioPath", "refAudioPath"),
    "src_audio_path": ("src_audio_path", "ctx_audio_path", "sourceAudioPath", "srcAudioPath", "ctxAudioPath"),
    "task_type": ("task_type", "taskType"),
    "infer_method": ("infer_method", "inferMethod"),
    "use_tiled_decode": ("use_tiled_decode", "useTiledDecode"),
    "constrained_decoding": ("constrained_decoding", "constrainedDecoding", "constrained"),
    "constrained_decoding_debug": ("constrained_decoding_debug", "constrainedDecodingDebug"),
    "use_cot_caption": ("use_cot_caption", "cot_caption", "cot-caption"),
    "use_cot_language": ("use_cot_language", "cot_language", "cot-language"),
    "is_format_caption": ("is_format_caption", "isFormatCaption"),
    "allow_lm_batch": ("allow_lm_batch", "allowLmBatch", "parallel_thinking"),
    "analysis_only": ("analysis_only", "analysisOnly"),
    "full_analysis_only": ("full_analysis_only", "fullAnalysisOnly"),
    "audio_code_string": ("audio_code_string", "audioCodeString", "audio_codes"),
    "cover_noise_strength": ("cover_noise_strength", "coverNoiseStrength"),
    "extract_codes_only": ("extract_codes_only", "extractCodesOnly"),
    "track_name": ("track_name", "trackName"),
    "track_classes": ("track_classes", "trackClasses", "instruments"),
    "sampler_mode": ("sampler_mode", "samplerMode"),
    "velocity_norm_threshold": ("velocity_norm_threshold", "velocityNormThreshold"),
    "velocity_ema_factor": ("velocity_ema_factor", "velocityEmaFactor"),
    "latent_shift": ("latent_shift", "latentShift"),
    "latent_rescale": ("latent_rescale", "latentRescale"),
    "lora_name": ("lora_name", "loraName"),
    "lora_scale": ("lora_scale", "loraScale"),
}

METADATA_KEYS = ("metas", "meta", "metadata", "user_metadata", "userMetadata")
LM_BACKENDS = ("vllm", "pt", "mlx")
# Every default is GenerationRequest's own: a field the body leaves out gets what the model says.
DEFAULTS: dict[str, Any] = {
    name: field.get_default(call_default_factory=True) for name, field in GenerationRequest.model_fields.items()
}
DEFAULT_BATCH_SIZE = DEFAULTS["batch_size"]
LORA_NAME_MAX_CHARS = 128


class ReleaseTaskFields:
    """Raw values of a /release_task body, looked up by canonical name."""

    def __init__(self, body: dict):
        metadata = next((body[key] for key in METADATA_KEYS if body.get(key)), None)
        self.sources = (body, as_object(body.get("param_obj")), as_object(metadata))

    def raw(self, name: str) -> Any:
        for source in self.sources:
            for alias in ALIASES.get(name, (name,)):
                value = source.get(alias)
                if value is not None:
                    return value
        return None


def _bounds(name: str) -> dict:
    """The numeric limits GenerationRequest declares for a field, as coercion keywords."""
    limits: dict = {}
    for constraint in GenerationRequest.model_fields[name].metadata:
        if isinstance(constraint, annotated_types.Ge):
            limits["minimum"] = constraint.ge
        elif isinstance(constraint, annotated_types.Gt):
            limits["minimum"], limits["exclusive_minimum"] = constraint.gt, True
        elif isinstance(constraint, annotated_types.Le):
            limits["maximum"] = constraint.le
    return limits


def _float_bounds(name: str) -> dict:
    """Coercion keywords for a float field: its limits, in seconds where the field is a time."""
    unit = " seconds" if name.startswith("repainting_") else ""
    return {**_bounds(name), **({"unit": unit} if unit else {})}


def _int_field(fields: ReleaseTaskFields, name: str, default: int | None) -> int | None:
    return to_int(name, fields.raw(name), default, **_bounds(name))


def _float_field(fields: ReleaseTaskFields, name: str, default: float | None) -> float | None:
    return to_float(name, fields.raw(name), default, **_float_bounds(name))


def _audio_duration(value: Any) -> float | None:
    # Null or <= 0 means "not given": the LM, or a random length, decides (as official).
    try:
        number = to_float("audio_duration", value, None)
    except InvalidField:  # raise it again, worded with the range
        number = to_float("audio_duration", value, None, unit=" seconds", **_bounds("audio_duration"))
    if number is None or number <= 0:
        return None
    return to_float("audio_duration", number, None, unit=" seconds", **_bounds("audio_duration"))


def _bpm(value: Any) -> int | None:
    try:
        number = to_int("bpm", value, None)
    except InvalidField:
        number = to_int("bpm", value, None, **_bounds("bpm"))  # raises, worded with the range
    if not number:
        return None  # 0 is how some clients say "not given"
    return to_int("bpm", number, None, **_bounds("bpm"))


def _batch_size(value: Any, batch_max: int) -> int:
    size = to_int("batch_size", value, DEFAULT_BATCH_SIZE, **_bounds("batch_size"))
    return min(size, batch_max)  # the official server clamps to what the hardware allows


def lora_name(value: Any) -> str | None:
    """An adapter's folder name (its existence is checked at admission); blank: none."""
    name = to_text("lora_name", value, "", max_chars=LORA_NAME_MAX_CHARS).strip()
    if name and not is_valid_adapter_name(name):
        raise InvalidField("lora_name", f"lora_name must be {ADAPTER_NAME_RULE}; got {show(name)}")
    return name or None


def _check_unused(fields: ReleaseTaskFields) -> None:
    """Validate the accepted fields the engine does not use yet, so bad values still fail."""
    to_choice("lm_backend", fields.raw("lm_backend"), None, LM_BACKENDS)


def parse_release_task(body: dict, settings: Settings) -> GenerationRequest:
    """Raises InvalidField (a 400 for the client) when a value cannot be used."""
    fields = ReleaseTaskFields(body)
    _check_unused(fields)

    def text(name: str) -> str:
        default = DEFAULTS.get(name)  # a path or model left out (None) reads as ""
        return to_text(name, fields.raw(name), default if isinstance(default, str) else "",
                       max_chars=TEXT_MAX_CHARS[name])

    def flag(name: str) -> bool:
        return to_bool(fields.raw(name), DEFAULTS.get(name, False))

    def number(name: str):
        kind = _float_field if isinstance(DEFAULTS[name], float) else _int_field
        return kind(fields, name, DEFAULTS[name])

    def choice(name: str, choices) -> str:
        return to_choice(name, fields.raw(name), DEFAULTS[name], choices)

    lyrics = lyrics_or_instrumental(text("lyrics"), flag("instrumental"))
    instruction = text("instruction")
    lm_top_k = to_int("lm_top_k", fields.raw("lm_top_k"), None, **_bounds("lm_top_k"))
    repainting_end = _float_field(fields, "repainting_end", None)

    values = dict(
        prompt=text("prompt"),
        global_caption=text("global_caption"),
        lyrics=lyrics,
        instruction=instruction if instruction.strip() else DEFAULTS["instruction"],
        vocal_language=text("vocal_language"),
        bpm=_bpm(fields.raw("bpm")),
        key_scale=text("key_scale"),
        time_signature=text("time_signature"),
        audio_duration=_audio_duration(fields.raw("audio_duration")),
        model=text("model").strip() or None,
        lm_model_path=text("lm_model_path").strip() or None,
        task_type=choice("task_type", TASK_TYPES),
        batch_size=_batch_size(fields.raw("batch_size"), settings.batch_max),
        inference_steps=number("inference_steps"),
        guidance_scale=number("guidance_scale"),
        shift=number("shift"),
        timesteps=to_float_list("timesteps", fields.raw("timesteps"),
                                "comma-separated numbers between 0 and 1", max_items=TIMESTEPS_MAX_ITEMS),
        infer_method=choice("infer_method", INFER_METHODS),
        use_adg=flag("use_adg"),
        cfg_interval_start=number("cfg_interval_start"),
        cfg_interval_end=number("cfg_interval_end"),
        use_random_seed=flag("use_random_seed"),
        seeds=to_seeds(fields.raw("seed")),
        reference_audio_path=text("reference_audio_path").strip() or None,
        src_audio_path=text("src_audio_path").strip() or None,
        repainting_start=number("repainting_start"),
        # 0 and negative values mean "to the end", as in the official server.
        repainting_end=repainting_end if repainting_end and repainting_end > 0 else None,
        audio_cover_strength=number("audio_cover_strength"),
        cover_noise_strength=number("cover_noise_strength"),
        repaint_latent_crossfade_frames=_int_field(fields, "repaint_latent_crossfade_frames", None),
        repaint_wav_crossfade_sec=_float_field(fields, "repaint_wav_crossfade_sec", None),
        repaint_mode=choice("repaint_mode", REPAINT_MODES),
        repaint_strength=number("repaint_strength"),
        chunk_mask_mode=choice("chunk_mask_mode", CHUNK_MASK_MODES),
        audio_code_string=text("audio_code_string"),
        track_name=text("track_name"),
        track_classes=to_text_list("track_classes", fields.raw("track_classes"), max_items=TRACK_CLASSES_MAX_ITEMS,
                                   max_chars=SHORT_TEXT_MAX_CHARS),
        audio_format=choice("audio_format", AUDIO_FORMATS),
        use_tiled_decode=flag("use_tiled_decode"),
        thinking=flag("thinking"),
        sample_mode=flag("sample_mode"),
        sample_query=text("sample_query"),
        use_format=flag("use_format"),
        use_cot_caption=flag("use_cot_caption"),
        use_cot_language=flag("use_cot_language"),
        use_cot_metas=flag("use_cot_metas"),
        lm_temperature=number("lm_temperature"),
        lm_top_k=lm_top_k if lm_top_k and lm_top_k > 0 else None,
        lm_top_p=number("lm_top_p"),
        lm_negative_prompt=text("lm_negative_prompt"),
        lm_repetition_penalty=number("lm_repetition_penalty"),
        constrained_decoding=flag("constrained_decoding"),
        allow_lm_batch=flag("allow_lm_batch"),
        analysis_only=flag("analysis_only"),
        full_analysis_only=flag("full_analysis_only"),
        extract_codes_only=flag("extract_codes_only"),
        lora_name=lora_name(fields.raw("lora_name")),
        lora_scale=_float_field(fields, "lora_scale", None),
    )
    # Only when sent: a server whose LM has no guidance tells a default from a choice (admission/lm_check.py).
    if fields.raw("lm_cfg_scale") not in (None, ""):
        values["lm_cfg_scale"] = number("lm_cfg_scale")
    try:
        return GenerationRequest(**values)
    except ValidationError as error:
        raise invalid_field_from(error) from None


def invalid_field_from(error: ValidationError) -> InvalidField:
    """The first problem of a pydantic error, in plain words and naming the field."""
    first = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first.get("loc", ()))
    message = first.get("msg", "is invalid")
    kind = first.get("type", "")
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    elif kind == "literal_error":
        message = "must be one of " + first.get("ctx", {}).get("expected", "the allowed values").replace("'", "")
    else:
        message = message[:1].lower() + message[1:]
        message = message if message.startswith("must") else "must be valid: " + message
    # Our own validators' messages already say what was sent ("(got 5000)").
    already_said = "(got " in message
    got = f" (got {show(first['input'])})" if field and "input" in first and not already_said else ""
    if not field:
        return InvalidField("", message)
    return InvalidField(field, f"{field} {message}{got}")


# --- Requests other than /release_task ------------------------------------------------------

ONE_OR_THE_OTHER = "give task_id (one id) or task_id_list (a list of ids), not both"
TASK_ID_REQUIRED = "task_id is required: the id /release_task returned (or task_id_list, a list of ids)"
TASK_ID_LIST_INVALID = "task_id_list must be a non-empty list of task ids, or a string holding a JSON list of them"
TASK_NOT_FOUND = "Task not found"


def task_ids(value: Any) -> list[str]:
    """`task_id_list` as a list, or a string holding a JSON list; anything else is none."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return []
    if not isinstance(value, list):
        return []
    return [str(item) for item in value if isinstance(item, (str, int)) and not isinstance(item, bool)]


def parse_cancel_task(fields: dict) -> tuple[str | None, list[str] | None]:
    """A /cancel_task body -> (one id, None) or (None, several ids); InvalidField otherwise."""
    single, listed = fields.get("task_id"), fields.get("task_id_list")
    if single is not None and listed is not None:
        raise InvalidField("task_id", ONE_OR_THE_OTHER)
    if listed is not None:
        ids = task_ids(listed)
        if not ids:
            raise InvalidField("task_id_list", TASK_ID_LIST_INVALID)
        return None, ids
    task_id = to_text("task_id", single, "").strip()
    if not task_id:
        raise InvalidField("task_id", TASK_ID_REQUIRED)
    return task_id, None


# --- Answers -----------------------------------------------------------------------------------

ENV = "development"  # the official server reports this constant in every element
META_KEYS = ("bpm", "duration", "genres", "keyscale", "timesignature")
NOT_AVAILABLE = "N/A"
# How the official server words the analysis modes' results (docs/wire-contract.md#analysis-modes).
ANALYSIS_ONLY_MODEL = "None (Analysis Only)"
ANALYSIS_ONLY_INFO = "Analysis Only Mode Complete"
EXTRACT_CODES_SUCCESS = "Audio Codes Extraction Success"
FULL_ANALYSIS_SUCCESS = "Full Hardware Analysis Success"


def wrap(data: Any, code: int = 200, error: str | None = None, extra: Any = None) -> dict:
    """The success envelope (docs/wire-contract.md#the-envelope): `{"data","code","error","timestamp","extra"}`
    in the official key order.

    `code` can differ from the HTTP status: the official server reports some soft failures
    as HTTP 200 with `code: 500` and an `error` text.
    """
    return {"data": data, "code": code, "error": error, "timestamp": int(time.time() * 1000), "extra": extra}


def audio_url(path: str) -> str:
    """Root-relative download URL (GET /v1/audio); the whole absolute path is percent-encoded,
    slashes too."""
    if path.startswith(("http://", "https://")):
        return path
    return "/v1/audio?path=" + urllib.parse.quote(os.path.abspath(path), safe="")


class QueueView(Protocol):
    """What an answer shows of the queue: a waiting job's place and expected wait."""

    def position(self, job_id: str) -> int | None: ...

    def eta_seconds(self, job_id: str) -> float | None: ...


def queued(job: Job, position: int) -> dict:
    """The /release_task answer."""
    return wrap({"task_id": job.id, "status": "queued", "queue_position": position})


def query_result_item(task_id: str, job: Job | None, queue: QueueView, progress_text: str = "") -> dict:
    """One entry of POST /query_result (docs/wire-contract.md#polling-jobs): `result` is a JSON *string* of a
    list, because the official clients `json.loads` it. A failed job's entry also carries its
    `error` beside `result` (the official server has it only inside), where clients read it."""
    if job is None:
        # Unknown ids are "not yet known", not an error, and carry no progress_text.
        return {"task_id": task_id, "result": "[]", "status": 0}
    item = {
        "task_id": task_id,
        "result": json.dumps(_result_elements(job, queue), ensure_ascii=False),
        "status": job.status.code,
        "progress_text": progress_text,
    }
    if job.status is JobStatus.FAILED:
        item["error"] = job.error
    return item


class _NothingWaits:
    def position(self, job_id: str) -> int | None:
        return None

    def eta_seconds(self, job_id: str) -> float | None:
        return None


def final_item(job: Job) -> dict:
    """An ended job's /query_result item, as its webhook sends it (an ended job has no place in line)."""
    return query_result_item(job.id, job, _NothingWaits())


def _common(job: Job) -> dict:
    common = {"file": "", "wave": "", "status": job.status.code, "create_time": int(job.created_at), "env": ENV}
    replay_of = getattr(job.request, "replay_of", None)
    if replay_of:
        common["replay_of"] = replay_of  # a replay names the job it repeats
    return common


def _result_elements(job: Job, queue: QueueView) -> list[dict]:
    common = _common(job)
    if job.status is JobStatus.SUCCEEDED and job.result is not None:
        return _succeeded_elements(job, common)
    if job.status is JobStatus.FAILED:
        return [{**common, "progress": 0.0, "stage": "failed", "error": job.error}]
    waiting = job.status is JobStatus.QUEUED
    return [{
        **common,
        "prompt": "",
        "lyrics": "",
        "metas": {},
        "progress": 0.0 if waiting else float(job.progress),
        "stage": "queued" if waiting else job.stage,
        "error": None,
        "queue_position": (queue.position(job.id) or 0) if waiting else 0,
        "eta_seconds": queue.eta_seconds(job.id) if waiting else None,
    }]


def succeeded_elements(job: Job) -> list[dict]:
    """The result elements of a succeeded job (they need no queue: nothing is waiting)."""
    return _succeeded_elements(job, _common(job))


def _succeeded_elements(job: Job, common: dict) -> list[dict]:
    result = job.result
    answer = analysis_answer(result)
    if answer is not None:
        return [answer]  # the source analyses: their own dict (docs/wire-contract.md#analysis-modes)
    shared = {
        "prompt": result.prompt,
        "lyrics": result.lyrics,
        "metas": {**shown_metas(result.metas), "prompt": job.request.prompt, "lyrics": job.request.lyrics},
        "generation_info": generation_info(result),
        "seed_value": seed_value(result.seeds),
        "lm_model": result.lm_model,
        "dit_model": shown_dit_model(result),
        "progress": 1.0,
        "stage": "succeeded",
    }
    # A success without audio (analysis_only) is still one element, with an empty file.
    files = [audio_url(path) for path in result.audio_paths] or [""]
    return [{**common, "file": file, **shared} for file in files]


def shown_metas(metas: SongMetas) -> dict:
    """The song's metadata as official answers show it: "N/A" where unknown."""
    values = {key: getattr(metas, key) for key in META_KEYS}
    return {key: NOT_AVAILABLE if value is None else value for key, value in values.items()}


def shown_dit_model(result: GenerationResult) -> str:
    analysis_only = result.analysis is not None and result.analysis.mode == "analysis_only"
    return ANALYSIS_ONLY_MODEL if analysis_only else result.dit_model


def analysis_answer(result: GenerationResult) -> dict | None:
    """The dict a source analysis answers instead of the usual element; None for other results."""
    analysis = result.analysis
    if analysis is None or analysis.mode == "analysis_only":
        return None
    if analysis.mode == "extract_codes_only":
        return {"status_message": EXTRACT_CODES_SUCCESS, "audio_codes": analysis.audio_codes, "audio_paths": [],
                "raw_audio_paths": [], "first_audio_path": None, "metas": {}}
    metas = dict(analysis.understood or {})
    return {
        "status_message": FULL_ANALYSIS_SUCCESS,
        "bpm": metas.get("bpm"),
        "keyscale": metas.get("keyscale"),
        "timesignature": metas.get("timesignature"),
        "duration": metas.get("duration"),
        "genre": metas.get("genres"),
        "prompt": metas.get("caption", ""),
        "lyrics": metas.get("lyrics", ""),
        "language": metas.get("language", "unknown"),
        "metas": metas,
        "audio_paths": [],
    }


def _seconds(value: Any) -> str:
    return f"{value:g} seconds" if isinstance(value, (int, float)) else str(value)


def _lm_lines(result: GenerationResult) -> list[str]:
    """The "LM-Generated Metadata" block and the LM's time per phase, when the LM was used."""
    metas = result.lm_metas
    lines = []
    if metas:
        labels = (("bpm", "BPM"), ("caption", "Refined Caption"), ("duration", "Duration"),
                  ("keyscale", "Key Scale"), ("language", "Language"), ("timesignature", "Time Signature"))
        lines += ["**🤖 LM-Generated Metadata:**"]
        lines += [
            f"- **{label}:** {_seconds(metas[key]) if key == 'duration' else metas[key]}"
            for key, label in labels if key in metas
        ]
        lines.append("")
    timings = result.timings
    phases = [(label, seconds) for label, seconds in (
        ("Sample", timings.lm_sample), ("Format", timings.lm_format),
        ("Phase 1 (metadata)", timings.lm_metadata), ("Phase 2 (audio codes)", timings.lm_codes),
    ) if seconds is not None]
    if phases:
        lines += ["**🧠 LM Time Costs:**"]
        lines += [f"  - {label}: {seconds:.2f}s" for label, seconds in phases]
        lines.append("")
    return lines


def _cost(seconds: float | None) -> str:
    return f"{seconds or 0.0:.2f}s"


def generation_info(result: GenerationResult) -> str:
    """The `generation_info` text: the official markdown summary of a generation, or the
    analysis modes' one-line status (a stored older result keeps the text it had)."""
    if result.stored_generation_info is not None:
        return result.stored_generation_info
    if result.analysis is not None:
        answer = analysis_answer(result)
        return ANALYSIS_ONLY_INFO if answer is None else answer["status_message"]
    metas = shown_metas(result.metas)
    timings = result.timings
    return "\n".join(
        [
            *_lm_lines(result),
            "**🎵 Generation Complete**",
            "",
            # Once only: clients grep these lines (the LM block already lists what the LM settled).
            *([] if result.lm_metas else [
                f"- **BPM:** {metas['bpm']}",
                f"- **Duration:** {_seconds(metas['duration'])}",
                f"- **Key Scale:** {metas['keyscale']}",
                f"- **Time Signature:** {metas['timesignature']}",
                "",
            ]),
            "**⏱️ Time Costs:**",
            f"  - Text Encoding: {_cost(timings.text_encoding)}",
            f"  - DiT Diffusion: {_cost(timings.diffusion)}",
            f"  - VAE Decoding: {_cost(timings.decoding)}",
            f"  - Audio Encoding: {_cost(timings.encoding)}",
            "",
            f"**Seeds:** {seed_value(result.seeds)}",
            f"**Steps:** {result.steps}",
            f"**Audio Count:** {len(result.seeds)}",
            "",
            f"**⏱️ Total Time: {_cost(timings.total)}**",
        ]
    )


def seed_value(seeds: list[int]) -> str:
    return ",".join(str(seed) for seed in seeds)


def cancel_item(task_id: str, job: Job | None, refusal: str | None, stopped: bool) -> dict:
    """One job in a /cancel_task answer; `status` is the integer of /query_result. `refusal`
    is None for an accepted cancel, else "not found" or the status the job had ended with."""
    reason = None if refusal is None else TASK_NOT_FOUND if refusal == "not found" else f"Task already {refusal}"
    return {
        "task_id": task_id,
        "cancelled": refusal is None,
        "stopped": stopped,
        "status": job.status.code if job is not None else None,
        "stage": job.stage if job is not None else None,
        "error": job.error if job is not None else None,
        "reason": reason,
    }
