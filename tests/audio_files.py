"""Reading back the files the engine writes: libsndfile for its formats, PyAV for AAC.

An AAC decoder gives back the encoder's priming (1024 samples of FFmpeg's AAC-LC encoder)
before the audio and pads the end to a whole frame of 1024 samples; an ADTS stream has no field
that tells it to trim either. So a decoded AAC file is longer than its source by at least 1024
and less than 2048 samples; every other format decodes to exactly the samples written."""

from __future__ import annotations

import os

import av
import numpy as np
import soundfile as sf

AAC_FRAME = 1024


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A file's [samples, channels] float32 samples and sample rate."""
    if os.fspath(path).lower().endswith(".aac"):
        with av.open(os.fspath(path)) as container:
            stream = container.streams.audio[0]
            assert stream.codec_context.name == "aac"
            planes = [frame.to_ndarray() for frame in container.decode(stream)]
            return np.concatenate(planes, axis=1).T.astype(np.float32), stream.codec_context.sample_rate
    return sf.read(os.fspath(path), dtype="float32", always_2d=True)


def length_matches(path: str | os.PathLike, decoded: int, samples: int) -> bool:
    """Whether ``decoded`` samples read back from ``path`` are the ``samples`` written (for AAC:
    plus the priming and the last frame's padding)."""
    if os.fspath(path).lower().endswith(".aac"):
        return samples + AAC_FRAME <= decoded < samples + 2 * AAC_FRAME
    return decoded == samples
