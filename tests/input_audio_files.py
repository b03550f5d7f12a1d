"""Input audio files that are hostile or broken, for the tests of the audio-input bounds."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile as sf

MIB = 1024 * 1024


def write_bomb(path: Path, seconds: int = 600, rate: int = 48000, channels: int = 8) -> Path:
    """The issue's bomb: a constant over 8 channels x 48 kHz x 600 s compresses to ~230 KB of
    FLAC and decodes to 0.88 GB of float32. Written a block at a time (never held whole)."""
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16") as file:
        block = np.full((rate * 10, channels), 1000, dtype=np.int16)
        for _ in range(seconds // 10):
            file.write(block)
    return path


def wav_with_rate(path: Path, rate: int, frames: int = 4800) -> Path:
    """A 16-bit mono PCM WAV whose header claims `rate` (soundfile refuses to write such)."""
    data = (np.sin(np.arange(frames) / 5.0) * 8000).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, (rate * 2) & 0xFFFFFFFF, 2, 16)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    return path


def float_wav(path: Path, poison: float) -> Path:
    samples = (0.3 * np.sin(np.arange(48000) / 7.0)).astype(np.float32)
    samples[1000:1010] = poison
    sf.write(path, np.stack([samples, samples], axis=1), 48000, subtype="FLOAT")
    return path
