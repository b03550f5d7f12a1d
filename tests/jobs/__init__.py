"""Tests of the job store, queue, worker and result shaping, plus their shared helpers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from acestep_api.engine.request import GenerationError, GenerationRequest, GenerationResult, SongMetas, Timings


def make_request(prompt: str = "calm piano", **fields) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, **fields)


def make_result(audio_paths: list[str], seeds: list[int] | None = None, **fields) -> GenerationResult:
    values = dict(
        audio_paths=audio_paths,
        seeds=seeds if seeds is not None else list(range(11, 11 + len(audio_paths))),
        prompt="refined caption",
        lyrics="[inst]",
        metas=SongMetas(bpm=120, duration=12.0, keyscale="C major", timesignature="4"),
        dit_model="acestep-v15-turbo",
        lm_model="acestep-5Hz-lm-0.6B",
        timings=Timings(text_encoding=0.01, diffusion=0.05, decoding=0.02, encoding=0.01, total=0.1),
        steps=8,
    )
    values.update(fields)
    return GenerationResult(**values)


class WavEngine:
    """A small engine for the worker's tests: writes a real short wav per batch item.

    A prompt containing "fail" raises GenerationError, "crash" raises ValueError; `delay`
    makes generate block like a real model call does.
    """

    def __init__(self, out_dir: Path, delay: float = 0.0, sample_rate: int = 8000):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.delay = delay
        self.sample_rate = sample_rate
        self.calls: list[str] = []
        self.threads: set[str] = set()

    def generate(self, request: GenerationRequest, progress) -> GenerationResult:
        self.calls.append(request.prompt)
        self.threads.add(threading.current_thread().name)
        progress(0.25, "diffusion step 1/2")
        if self.delay:
            time.sleep(self.delay)
        if "fail" in request.prompt:
            raise GenerationError("Reference audio could not be read")
        if "crash" in request.prompt:
            raise ValueError("boom")
        progress(0.75, "diffusion step 2/2")
        paths = []
        for item in range(request.batch_size):
            path = self.out_dir / f"{len(self.calls)}-{item}.wav"
            tone = np.sin(np.linspace(0, 440 * 2 * np.pi, self.sample_rate // 10)).astype("float32")
            sf.write(str(path), tone * 0.1, self.sample_rate)
            paths.append(str(path))
        progress(0.9, "encoding")
        return make_result(paths, seeds=[7 + i for i in range(len(paths))], sample_rate=self.sample_rate)
