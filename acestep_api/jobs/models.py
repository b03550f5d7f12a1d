"""The job record shared by the store, the queue, the worker and the HTTP layer."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from acestep_api.engine.adapter_tasks import AdapterAnswer, AdapterTask
from acestep_api.engine.lm_tasks import FormatRequest, LMRequest, LMTaskResult, SampleRequest
from acestep_api.engine.model_requests import ModelRequest, ModelResult
from acestep_api.engine.request import GenerationRequest, GenerationResult


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)

    @property
    def code(self) -> int:
        """The official API's integer status: 0 queued/running, 1 succeeded, 2 failed."""
        return {"queued": 0, "running": 0, "succeeded": 1, "failed": 2}[self.value]


class JobKind(str, enum.Enum):
    """What a job asks of the models; its request and result types follow from it."""

    GENERATION = "generation"  # GenerationRequest -> GenerationResult (audio)
    FORMAT = "format"  # FormatRequest -> LMTaskResult (the 5 Hz LM only)
    SAMPLE = "sample"  # SampleRequest -> LMTaskResult (the 5 Hz LM only)
    ADAPTER = "adapter"  # AdapterTask -> AdapterAnswer (the DiT's default adapters)
    MODELS = "models"  # ModelRequest -> ModelResult (loading models: /v1/init, /v1/reinitialize)

    @classmethod
    def of(cls, request: "JobRequest") -> "JobKind":
        if isinstance(request, FormatRequest):
            return cls.FORMAT
        if isinstance(request, SampleRequest):
            return cls.SAMPLE
        if isinstance(request, AdapterTask):
            return cls.ADAPTER
        if isinstance(request, ModelRequest):
            return cls.MODELS
        return cls.GENERATION


JobRequest = GenerationRequest | LMRequest | AdapterTask | ModelRequest
JobResult = GenerationResult | LMTaskResult | AdapterAnswer | ModelResult


class JobApi(str, enum.Enum):
    """Which API generation submitted the job (decides how its result is shaped)."""

    RELEASE_TASK = "release_task"
    LEGACY = "legacy"
    CHAT = "chat"  # POST /v1/chat/completions
    FAL = "fal"  # POST /fal-ai/ace-step/prompt-to-audio
    LM = "lm"  # POST /format_input, /v1/create_sample: answered by their route, never queried
    LORA = "lora"  # POST /v1/lora/*: answered by their route, never queried
    MODELS = "models"  # POST /v1/init, /v1/reinitialize: answered by their route, never queried


@dataclass
class Job:
    id: str
    request: JobRequest
    api: JobApi = JobApi.RELEASE_TASK
    status: JobStatus = JobStatus.QUEUED
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    progress: float = 0.0
    stage: str = "queued"
    result: JobResult | None = None
    error: str | None = None
    attempts: int = 0  # how many times a worker has started it
    # Files uploaded with the request, deleted when the job ends.
    temp_files: list[str] = field(default_factory=list)
    # Recorded as the job starts running (jobs/crash_evidence.py): lets the next server start
    # tell whether the process died under this job (a crash, an OOM kill) or was merely stopped.
    run_marker: dict | None = None
    # The name (never the secret) of the API key that submitted it, None without auth, and
    # the seconds of audio it asked for (duration x batch size), which count against that
    # key's daily quota (docs/operations.md#keys-and-quotas).
    key_name: str | None = None
    audio_seconds: float = 0.0
    # Where to announce the job's end, as submitted; the webhook observer stores it with the
    # job's delivery (acestep_api/webhooks/), so a job read back from the store has None here.
    webhook_url: str | None = None

    @property
    def kind(self) -> JobKind:
        return JobKind.of(self.request)
