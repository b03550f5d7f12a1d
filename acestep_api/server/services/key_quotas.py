"""A key's limits that need the job: the DiT models it may use (403), and its daily quotas and
max_waiting (429 with Retry-After), checked in the submit path right before the job is stored.

The counts come from the job table (`JobStore.key_usage`), where each job records its key's
name and the audio seconds charged to it, so they survive a restart. A day is a UTC calendar
day: the quotas start again at 00:00 UTC. The check and the store's insert run with no await
between them, so two requests of one key on one server cannot both take the last place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import Request

from acestep_api.engine.model_requests import ModelRequest
from acestep_api.engine.request import GenerationRequest
from acestep_api.engine.served import ServedModels, folder_name
from acestep_api.jobs.models import JobRequest
from acestep_api.jobs.store import JobStore
from acestep_api.server.key_file import KeySpec
from acestep_api.server.key_limits import KeyRefused, RefusalCounter, caller, over_limit
from acestep_api.settings import Settings

SECONDS_PER_DAY = 86400
RETRY_AFTER_MAX = 3600


def day_start(now: float) -> float:
    """00:00 UTC of the day `now` (epoch seconds) falls in."""
    return now - now % SECONDS_PER_DAY


def charged_seconds(request: JobRequest, settings: Settings) -> float:
    """The audio seconds a job asks for: its duration times its batch size. A song that names
    no duration is charged at the longest the server may choose for it
    (ACESTEP_LM_MAX_DURATION); an analysis and an LM-only job make no audio."""
    if not isinstance(request, GenerationRequest):
        return 0.0
    if request.analysis_only or request.full_analysis_only or request.extract_codes_only:
        return 0.0
    duration = request.audio_duration if request.audio_duration is not None else settings.lm_max_duration
    return float(duration) * min(request.batch_size, settings.batch_max)


@dataclass(frozen=True)
class JobCharge:
    """What a job records of its key: the key's name (None without auth) and its audio seconds."""

    key_name: str | None
    audio_seconds: float


class KeyQuota:
    def __init__(self, key: KeySpec | None, store: JobStore, served: ServedModels, settings: Settings,
                 avg_job_seconds: float, counter: RefusalCounter | None = None):
        self.key, self.store, self.served, self.settings = key, store, served, settings
        self.avg_job_seconds = avg_job_seconds
        self.counter = counter

    def charge(self, request: JobRequest) -> JobCharge:
        """The job's charge, or a KeyRefused when its key may not submit it now."""
        seconds = charged_seconds(request, self.settings)
        key = self.key
        if key is None:
            return JobCharge(None, seconds)
        model = None
        if isinstance(request, GenerationRequest):
            model = self.served.select(request.model).name
        elif isinstance(request, ModelRequest) and request.model:
            model = folder_name(request.model)  # the model /v1/init would load
        if model is not None:
            if not key.may_use_model(model):
                raise KeyRefused(key, "models", 403, f"key {key.name!r} may not use the model {model!r}; "
                                                     f"its models: {', '.join(key.models) or 'none'}",
                                 counter=self.counter)
        if key.jobs_per_day is None and key.audio_seconds_per_day is None and key.max_waiting is None:
            return JobCharge(key.name, seconds)
        now = time.time()
        until_tomorrow = day_start(now) + SECONDS_PER_DAY - now
        usage = self.store.key_usage(key.name, day_start(now))
        if key.jobs_per_day is not None and usage.jobs_since + 1 > key.jobs_per_day:
            raise over_limit(key, "jobs_per_day", key.jobs_per_day, until_tomorrow, self.counter)
        if key.audio_seconds_per_day is not None and usage.audio_seconds_since + seconds > key.audio_seconds_per_day:
            left = max(0.0, key.audio_seconds_per_day - usage.audio_seconds_since)
            raise over_limit(key, "audio_seconds_per_day", key.audio_seconds_per_day, until_tomorrow, self.counter,
                             what=f"would be passed by this job's {seconds:g} s ({left:g} s left today)")
        if key.max_waiting is not None and usage.waiting + 1 > key.max_waiting:
            # When the worker should have taken one of them: the average job's time.
            retry = min(max(1.0, self.avg_job_seconds), RETRY_AFTER_MAX)
            raise over_limit(key, "max_waiting", key.max_waiting, retry, self.counter)
        return JobCharge(key.name, seconds)


def key_quota(request: Request) -> KeyQuota:
    """The quota of the key this request was admitted with (none without auth)."""
    state = request.app.state
    return KeyQuota(caller(request.scope), state.store, state.served, state.settings,
                    state.queue.avg_job_seconds, state.metrics)
