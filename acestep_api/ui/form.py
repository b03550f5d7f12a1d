"""The generation form's choices, and the turning of its values into a /release_task request.

Pure functions only: no Gradio and no network, so the request the UI sends can be checked on
its own. The server validates ranges (and answers 400 with a message the UI shows); this module
only turns widget values into the API's field names and types, and rejects what cannot be
expressed as a field at all (a seed that is not a number).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASK_TYPES = ("text2music", "cover", "repaint", "extract", "lego", "complete")
# The tasks that read a source audio file (a cover without one falls back to text2music).
SOURCE_TASK_TYPES = ("cover", "repaint", "extract", "lego", "complete")
AUDIO_FORMATS = ("mp3", "wav", "flac", "opus", "wav32", "aac")
TIME_SIGNATURES = (("auto", ""), ("2/4", "2"), ("3/4", "3"), ("4/4", "4"), ("6/8", "6"))
VOCAL_LANGUAGES = (
    "en", "zh", "ja", "ko", "es", "fr", "de", "it", "pt", "ru", "ar", "hi", "nl", "pl", "sv",
    "tr", "vi", "th", "id", "yue", "unknown",
)
_NOTES = ("C", "C#", "Db", "D", "D#", "Eb", "E", "F", "F#", "Gb", "G", "G#", "Ab", "A", "A#", "Bb", "B")
KEY_SCALES = ("",) + tuple(f"{note} {mode}" for mode in ("major", "minor") for note in _NOTES)
RANDOM_SEED_WORDS = ("", "random", "-1")
SERVER_DEFAULT_MODEL = ""  # the dropdown's "server default" entry: no `model` field is sent
MAX_BATCH = 8  # the most result slots the page shows (the server clamps to ACESTEP_BATCH_MAX)


class FormError(ValueError):
    """A form value that cannot become a request field; the message names the field."""


@dataclass
class FormValues:
    """Everything the generation form holds, as the widgets give it."""

    caption: str = ""
    lyrics: str = ""
    bpm: float | None = None
    key_scale: str = ""
    time_signature: str = ""
    vocal_language: str = "en"
    duration: float | None = None
    batch_size: int = 2
    model: str = SERVER_DEFAULT_MODEL
    task_type: str = "text2music"
    source_audio: str | None = None
    reference_audio: str | None = None
    repainting_start: float | None = 0.0
    repainting_end: float | None = -1.0
    audio_cover_strength: float = 1.0
    inference_steps: int = 8
    guidance_scale: float = 7.0
    seed: str = "random"
    thinking: bool = False
    audio_format: str = "mp3"


@dataclass
class ReleaseRequest:
    """A /release_task body and the files to upload with it (field name -> local path)."""

    fields: dict[str, Any]
    files: dict[str, Path]


def parse_seed(text: str | int | float | None) -> str | None:
    """None for a random seed; otherwise the seed field: one integer, or a comma list with
    one integer per batch item (-1 = random for that item)."""
    value = "" if text is None else str(text).strip()
    if value.lower() in RANDOM_SEED_WORDS:
        return None
    parts = [part.strip() for part in value.split(",")]
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        raise FormError(f"seed must be 'random', an integer, or integers separated by commas (got {value!r})") from None
    if any(number < -1 for number in numbers):
        raise FormError(f"seed must be -1 (random) or a non-negative integer (got {value!r})")
    if all(number == -1 for number in numbers):
        return None
    return ",".join(str(number) for number in numbers)


def _number_or_none(name: str, value: Any) -> float | None:
    """A widget number, None when empty (whether 0 means "not given" is the caller's call)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise FormError(f"{name} must be a number (got {value!r})") from None


def _whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _text(value: Any) -> str:
    """A text widget's value; a cleared dropdown gives None."""
    return "" if value is None else str(value).strip()


def _count(name: str, value: Any, default: int) -> int:
    number = _number_or_none(name, value)
    if number is None:
        return default
    if not float(number).is_integer():
        raise FormError(f"{name} must be a whole number (got {value!r})")
    return int(number)


def build_release_request(values: FormValues) -> ReleaseRequest:
    """The /release_task fields for the form: only what the user set is sent, so the
    server's defaults apply to the rest."""
    defaults = FormValues()
    caption, lyrics = _text(values.caption), "" if values.lyrics is None else str(values.lyrics)
    task_type = _text(values.task_type) or defaults.task_type
    if task_type == "text2music" and not caption and not lyrics.strip():
        raise FormError("caption or lyrics: describe the music or give lyrics")
    if task_type not in TASK_TYPES:
        raise FormError(f"task_type must be one of {', '.join(TASK_TYPES)} (got {task_type!r})")

    guidance = _number_or_none("guidance_scale", values.guidance_scale)
    fields: dict[str, Any] = {
        "prompt": caption,
        "lyrics": lyrics,
        "batch_size": _count("batch_size", values.batch_size, defaults.batch_size),
        "task_type": task_type,
        "inference_steps": _count("inference_steps", values.inference_steps, defaults.inference_steps),
        "guidance_scale": defaults.guidance_scale if guidance is None else guidance,
        "thinking": bool(values.thinking),
        "audio_format": _text(values.audio_format) or defaults.audio_format,
    }
    bpm = _number_or_none("bpm", values.bpm)
    if bpm is not None and bpm > 0:
        fields["bpm"] = _whole(bpm)
    duration = _number_or_none("duration", values.duration)
    if duration is not None and duration > 0:
        fields["audio_duration"] = _whole(duration)
    for name in ("key_scale", "time_signature", "vocal_language", "model"):
        if text := _text(getattr(values, name)):
            fields[name] = text

    seed = parse_seed(values.seed)
    fields["use_random_seed"] = seed is None
    if seed is not None:
        fields["seed"] = seed

    files: dict[str, Path] = {}
    if task_type in SOURCE_TASK_TYPES and values.source_audio:
        files["src_audio"] = Path(values.source_audio)
    if values.reference_audio:
        files["reference_audio"] = Path(values.reference_audio)
    if task_type == "repaint":
        start = _number_or_none("repainting_start", values.repainting_start)
        end = _number_or_none("repainting_end", values.repainting_end)
        fields["repainting_start"] = start if start is not None else 0.0
        fields["repainting_end"] = end if end is not None else -1.0
    if task_type == "cover":
        strength = _number_or_none("audio_cover_strength", values.audio_cover_strength)
        fields["audio_cover_strength"] = defaults.audio_cover_strength if strength is None else strength
    return ReleaseRequest(fields=fields, files=files)


def task_types_for(model: str, inventory: list[dict]) -> list[str]:
    """The task types the chosen model serves, per /v1/model_inventory; every type when the
    inventory is not known yet (the server then says which model can)."""
    by_name = {entry.get("name"): entry for entry in inventory}
    if not model:
        model = next((entry.get("name") for entry in inventory if entry.get("is_default")), "")
    entry = by_name.get(model)
    if not entry or not entry.get("supported_task_types"):
        return list(TASK_TYPES)
    return [task for task in TASK_TYPES if task in entry["supported_task_types"]]
