"""The one map from an audio file's type to its MIME type, for every answer that carries audio
(/v1/audio downloads, chat completions' data URLs, the RunPod worker's base64 entries)."""

from __future__ import annotations

import os

# File type (the extension without its dot, or an `audio_format`) -> MIME type.
AUDIO_MIME_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "wav32": "audio/wav",  # an `audio_format`: its files are .wav
    "flac": "audio/flac",
    "opus": "audio/ogg",
    "ogg": "audio/ogg",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
}


def mime_type(path: str | os.PathLike, default: str) -> str:
    """The MIME type of a file, by its extension (any case); `default` for an unknown one."""
    extension = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    return AUDIO_MIME_TYPES.get(extension, default)
