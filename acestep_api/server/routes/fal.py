"""POST /fal-ai/ace-step/prompt-to-audio: fal.ai's prompt-to-audio (api-contract 9.3, E22),
served by ACE-Step 1.5. docs/fal.md says how each fal field is served and why.

A request runs in two steps: the 5 Hz LM turns the prompt into a caption (fal's `tags`),
lyrics and metadata, as the official sample mode does; then one DiT job goes through the queue
and the route answers when it has ended, with an absolute download URL.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Annotated, Any

import soundfile
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from acestep_api.atomic_files import atomic_path
from acestep_api.engine.request import (
    BPM_MAX,
    BPM_MIN,
    DURATION_MIN,
    SEED_MAX,
    TIME_SIGNATURES,
    GenerationRequest,
)
from acestep_api.jobs.models import JobApi, JobStatus
from acestep_api.jobs.queue import JobQueue
from acestep_api.jobs.results import audio_url
from acestep_api.server.auth import require_api_key
from acestep_api.server.dependencies import get_engine, get_queue, get_settings
from acestep_api.server.protocol_fal import RANDOM_SEED, FalFile, FalPromptInput, FalPromptOutput
from acestep_api.server.public_url import absolute_url
from acestep_api.server.routes.samples import lm_failure
from acestep_api.server.sync_jobs import GENERATION_TIMEOUT, refuse_if_full, run_to_end
from acestep_api.settings import Settings
from acestep_api.server.openapi.route_docs import answers, key_required

log = logging.getLogger(__name__)
router = APIRouter(tags=["fal"])

PATH = "/fal-ai/ace-step/prompt-to-audio"
# fal answers a WAV URL; WAV is also what lets a short clip be cut without re-encoding loss.
AUDIO_FORMAT, CONTENT_TYPE = "wav", "audio/wav"
INSTRUMENTAL_LYRICS = "[inst]"  # fal's own spelling; the DiT reads it as instrumental
SHIFT = 3.0  # GenerationRequest's default shift, the schedule the guidance window is placed on


# --- Step 1: the prompt -> caption, lyrics and metadata --------------------------------------


@dataclass(frozen=True)
class SongText:
    """What the DiT is conditioned on besides the noise."""

    caption: str
    lyrics: str
    vocal_language: str = "unknown"
    bpm: int | None = None
    key_scale: str = ""
    time_signature: str = ""


def prompt_only(fal: FalPromptInput) -> SongText:
    """Without the LM nobody writes lyrics: the prompt is the caption and the song has no vocals."""
    return SongText(caption=fal.prompt, lyrics=INSTRUMENTAL_LYRICS if fal.instrumental else "")


def song_text_from_sample(fal: FalPromptInput, sample: dict[str, Any], instrumental: bool) -> SongText:
    """The LM's sample as DiT inputs; a value the DiT cannot take is left to the DiT's default."""
    bpm = sample.get("bpm")
    signature = str(sample.get("timesignature") or "").split("/", 1)[0].strip()
    return SongText(
        caption=str(sample.get("caption") or "").strip() or fal.prompt,
        lyrics=INSTRUMENTAL_LYRICS if instrumental else str(sample.get("lyrics") or ""),
        vocal_language=str(sample.get("language") or "unknown"),
        bpm=bpm if isinstance(bpm, int) and BPM_MIN <= bpm <= BPM_MAX else None,
        key_scale=str(sample.get("keyscale") or ""),
        time_signature=signature if signature in TIME_SIGNATURES else "",
    )


async def write_song_text(engine, fal: FalPromptInput, seed: int, timeout: float) -> SongText:
    """The LM's sample mode on the prompt (its language and "instrumental" hints read as the
    official sample mode reads them). It runs here rather than in the job because sample mode
    there replaces the duration with the LM's own, and fal's duration must hold."""
    if not engine.lm_available:
        return prompt_only(fal)
    from acestep_api.engine.lm.planner import description_hints  # loads torch: only when serving

    language, hinted_instrumental = description_hints(fal.prompt)
    instrumental = fal.instrumental or hinted_instrumental
    call = functools.partial(
        engine.planner.create_sample, fal.prompt, instrumental=instrumental, vocal_language=language, seed=seed
    )
    try:
        # asyncio.to_thread, unlike run_in_threadpool, can be abandoned when the time is up
        # (the LM call then ends in the background).
        sample = await asyncio.wait_for(asyncio.to_thread(call), timeout)
    except asyncio.TimeoutError:
        raise HTTPException(status_code=504, detail=GENERATION_TIMEOUT) from None
    except Exception as error:  # the LM failing is this request's failure, not the server's
        log.exception("create_sample failed for a prompt-to-audio request")
        raise HTTPException(status_code=500, detail=lm_failure("create_sample", error)) from None
    return song_text_from_sample(fal, sample, instrumental)


# --- Step 2: fal's settings -> the DiT job ---------------------------------------------------


def _schedule_t(step: int, steps: int) -> float:
    """t at the start of `step` of the base/SFT schedule (sampler.base_schedule, shift SHIFT)."""
    u = 1.0 - step / steps
    return SHIFT * u / (1.0 + (SHIFT - 1.0) * u)


def guidance_window(interval: float, steps: int) -> tuple[float, float] | None:
    """fal's `guidance_interval` as ACE-Step 1.5's t window (cfg_interval_start, _end).

    fal (ACE-Step v1) guides steps start..end-1, start = int(steps*(1-g)/2), end =
    int(steps*(g/2+0.5)); 1.5 guides the steps whose t lies in the window. Each bound is put
    halfway between two neighbouring steps' t, so exactly those steps are guided whatever the
    precision the schedule runs in. None: no step is guided.
    """
    first = int(steps * ((1.0 - interval) / 2.0))
    end = int(steps * (interval / 2.0 + 0.5))
    if end <= first:
        return None
    upper = 1.0 if first == 0 else (_schedule_t(first - 1, steps) + _schedule_t(first, steps)) / 2.0
    lower = 0.0 if end >= steps else (_schedule_t(end - 1, steps) + _schedule_t(end, steps)) / 2.0
    return lower, upper


def generation_request(fal: FalPromptInput, song: SongText, seed: int) -> GenerationRequest:
    """One text2music item, seeded. Turbo checkpoints run their fixed 8 steps with no guidance
    whatever is asked (model-pipeline.md 6.2); base/SFT use the steps and the guidance."""
    window = guidance_window(fal.guidance_interval, fal.number_of_steps)
    cfg_start, cfg_end = window or (0.0, 1.0)
    return GenerationRequest(
        prompt=song.caption,
        lyrics=song.lyrics,
        vocal_language=song.vocal_language,
        bpm=song.bpm,
        key_scale=song.key_scale,
        time_signature=song.time_signature,
        # 1.5 makes at least DURATION_MIN seconds; a shorter clip is cut from them afterwards.
        audio_duration=max(fal.duration, DURATION_MIN),
        batch_size=1,
        inference_steps=fal.number_of_steps,
        guidance_scale=fal.guidance_scale if window else 1.0,  # 1.0: no guided step at all
        shift=SHIFT,
        infer_method="ode",  # Euler; 1.5's sampler has no Heun
        use_adg=False,  # APG, 1.5's guidance, for every fal guidance_type
        cfg_interval_start=cfg_start,
        cfg_interval_end=cfg_end,
        use_random_seed=False,
        seeds=[seed],
        audio_format=AUDIO_FORMAT,
        # The text is settled: the LM may fill missing metadata, not rewrite caption or language.
        use_cot_caption=False,
        use_cot_language=False,
    )


def cut_audio(path: str, seconds: float) -> None:
    """Keep the first `seconds` of a WAV file, in place (atomically: a client may be reading it)."""
    data, rate = soundfile.read(path, dtype="int16", always_2d=True)
    subtype = soundfile.info(path).subtype
    with atomic_path(path) as temp:
        soundfile.write(temp, data[: int(round(seconds * rate))], rate, subtype=subtype, format="WAV")


# --- The route -----------------------------------------------------------------------------


@router.post(PATH, response_model=FalPromptOutput, dependencies=[Depends(require_api_key)],
             summary="fal.ai prompt-to-audio: a song from a prompt, answered when it is made",
             responses=answers(None, 400, 401, 413, 429, 500, 504), openapi_extra=key_required())
async def prompt_to_audio(
    fal: FalPromptInput,
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    queue: Annotated[JobQueue, Depends(get_queue)],
    engine: Annotated[Any, Depends(get_engine)],
) -> FalPromptOutput:
    deadline = time.monotonic() + settings.generation_timeout
    refuse_if_full(queue)
    # One seed for the LM and the DiT: sending it back reproduces the same song.
    seed = random.randint(0, SEED_MAX) if fal.seed in (None, RANDOM_SEED) else fal.seed

    song = await write_song_text(engine, fal, seed, settings.generation_timeout)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise HTTPException(status_code=504, detail=GENERATION_TIMEOUT)
    job = await run_to_end(queue, generation_request(fal, song, seed), JobApi.FAL, remaining)
    if job.status is not JobStatus.SUCCEEDED or job.result is None or not job.result.audio_paths:
        raise HTTPException(status_code=500, detail=job.error or "Generation failed")

    result = job.result
    path = result.audio_paths[0]
    if fal.duration < DURATION_MIN:
        await run_in_threadpool(cut_audio, path, fal.duration)
    return FalPromptOutput(
        audio=FalFile(
            url=absolute_url(request, settings, audio_url(path)),
            content_type=CONTENT_TYPE,
            file_name=os.path.basename(path),
            file_size=os.path.getsize(path),
        ),
        seed=result.seeds[0],
        tags=result.prompt,
        lyrics=result.lyrics,
    )
