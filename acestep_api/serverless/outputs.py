"""The audio a serverless answer carries, prepared on the worker's disk. The answers
themselves are worded by the dialects (`acestep_api/dialects/runpod.py`)."""

from __future__ import annotations

import soundfile as sf

from acestep_api.atomic_files import atomic_path


def v1_wav(path: str, seconds: float) -> bytes:
    """The engine's 16-bit WAV cut to `seconds` (the engine makes 10 s at least); the file on
    disk is cut too, so it holds what the client received."""
    info = sf.info(path)
    wanted = round(seconds * info.samplerate)
    if info.frames > wanted:
        frames, rate = sf.read(path, frames=wanted, dtype="int16", always_2d=True)
        with atomic_path(path) as temp:  # never a truncated file under the engine's name
            sf.write(temp, frames, rate, format="WAV", subtype="PCM_16")
    with open(path, "rb") as handle:
        return handle.read()
