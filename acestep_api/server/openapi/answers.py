"""The answers of every route, as schemas for the OpenAPI document.

Documentation only: the routes build plain dicts (the dialects in acestep_api/dialects/) in the
official key order, and these models describe them. tests/server/test_openapi.py and the
schemathesis run (tests/e2e/test_schemathesis.py) check real answers against them, so a
change to an answer that is not made here too fails a test.
"""

from __future__ import annotations

import types
from typing import Any, Generic, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class _Answer(BaseModel):
    # An answer may grow a field without breaking clients (or this document).
    model_config = ConfigDict(extra="allow")


class Envelope(_Answer, Generic[T]):
    """The official envelope. `code` can differ from the HTTP status: a soft failure is HTTP
    200 with `code` 500, `data` null and the reason in `error`."""

    data: T
    code: int
    error: str | None
    timestamp: int = Field(description="Milliseconds since the epoch.")
    extra: Any = None

    @classmethod
    def model_parametrized_name(cls, params: tuple[Any, ...]) -> str:
        # The schema's name in the document: "QueuedEnvelope", not "Envelope_Queued_".
        return type_name(params[0]) + "Envelope"


def type_name(kind: Any) -> str:
    """A readable name for a type argument: CancelItemOrListOfCancelItem, ObjectOrNull."""
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        return "Or".join(type_name(arg) for arg in get_args(kind))
    if origin is list:
        return "ListOf" + type_name(get_args(kind)[0])
    if kind is type(None):
        return "Null"
    if kind is dict or origin is dict:
        return "Object"
    return getattr(kind, "__name__", "Value")


class ErrorDetail(BaseModel):
    """Every error answer except a 422 of FastAPI's own request validation."""

    detail: str = Field(description="What was wrong, naming the field and what is allowed.")


# --- the official API -------------------------------------------------------------------


class Health(_Answer):
    status: Literal["ok"]
    service: str
    version: str
    models_initialized: bool
    llm_initialized: bool
    loaded_model: str | None
    loaded_lm_model: str | None
    demo: bool
    mode: Literal["embedded", "distributed"] = Field(description="One process, or API replicas and GPU workers on PostgreSQL.")
    workers_alive: int = Field(ge=0, description="GPU workers with a recent heartbeat (1 in the embedded mode).")
    note: str | None = Field(default=None, description="Only in demo mode.")


class Queued(_Answer):
    task_id: str
    status: Literal["queued"]
    queue_position: int = Field(ge=1)


class WebhookState(_Answer):
    """The delivery of a job's webhook (docs/operations.md#webhooks)."""

    url: str
    status: Literal["waiting", "pending", "delivered", "failed"] = Field(
        description="waiting: the job has not ended; pending: to be sent or sent again; delivered: answered 2xx; "
                    "failed: the attempts ran out or the URL was refused at send time.")
    attempts: int
    last_http_status: int | None = Field(description="The status the receiver last answered; null if none.")
    last_error: str | None = Field(description="Why the last attempt failed.")
    next_attempt_at: float | None = Field(description="When a pending delivery is next tried (epoch seconds).")
    delivered_at: float | None


class QueryResultItem(_Answer):
    task_id: str
    result: str = Field(description="A JSON list (as text) of result elements, one per audio file.")
    status: Literal[0, 1, 2] = Field(description="0 queued or running (or unknown id), 1 succeeded, 2 failed.")
    progress_text: str | None = Field(default=None, description="Absent for an unknown id.")
    webhook: WebhookState | None = Field(default=None, description="Only for a job submitted with a webhook.")


class CancelItem(_Answer):
    task_id: str
    cancelled: bool
    stopped: bool
    status: Literal[0, 1, 2] | None
    stage: str | None
    error: str | None
    reason: str | None = Field(description="Why the cancel was refused; null when it was accepted.")


class ModelEntry(_Answer):
    name: str
    is_default: bool
    is_loaded: bool
    is_turbo: bool
    supported_task_types: list[str]


class LmEntry(_Answer):
    name: str
    is_loaded: bool


class ModelInventory(_Answer):
    models: list[ModelEntry]
    default_model: str
    lm_models: list[LmEntry]
    loaded_lm_model: str | None
    llm_initialized: bool
    gpus: list[Any]
    gpu_mapping: dict[str, Any]
    device_map: dict[str, str]


class KeyStats(_Answer):
    jobs: dict[str, int] = Field(description="The key's stored jobs by status.")
    jobs_today: int = Field(description="Jobs the key submitted since 00:00 UTC.")
    audio_seconds_today: float = Field(description="Audio seconds charged to the key since 00:00 UTC.")


class ModelsInitialized(_Answer):
    message: str
    slot: int
    loaded_model: str | None
    loaded_lm_model: str | None
    models: list[ModelEntry]
    lm_models: list[LmEntry]
    llm_initialized: bool


class Reinitialized(_Answer):
    message: str
    reloaded: list[str] = Field(description="What was loaded again: DiT/VAE/Text Encoder, LLM.")


class Stats(_Answer):
    jobs: dict[str, int] = Field(description="Jobs by status.")
    queue_size: int
    queue_maxsize: int
    avg_job_seconds: float
    keys: dict[str, KeyStats] | None = Field(
        default=None, description="With auth on: per API key name (ACESTEP_API_KEY sees every key, a key of "
                                  "ACESTEP_API_KEYS_FILE its own).")
    workers: int | None = Field(default=None, description="Distributed mode only: live GPU workers.")


class FormattedInput(_Answer):
    caption: str
    lyrics: str
    bpm: int | None
    key_scale: str
    time_signature: str
    duration: float | None
    vocal_language: str


class CreatedSample(_Answer):
    caption: str
    lyrics: str
    bpm: int | None
    keyscale: str
    duration: float | None
    timesignature: str
    vocal_language: str


class OpenRouterPricing(_Answer):
    prompt: str
    completion: str
    request: str
    image: str


class OpenRouterModel(_Answer):
    id: str
    name: str
    created: int
    input_modalities: list[str]
    output_modalities: list[str]
    context_length: int
    max_output_length: int
    pricing: OpenRouterPricing
    description: str
    architecture: Any = None


class OpenRouterModels(_Answer):
    object: Literal["list"]
    data: list[OpenRouterModel]


# --- the older API ----------------------------------------------------------------------


class LegacyQueued(_Answer):
    job_id: str
    status: Literal["queued"]
    queue_position: int = Field(ge=1)


class LegacyJob(_Answer):
    job_id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    created_at: float
    started_at: float | None
    finished_at: float | None
    queue_position: int
    eta_seconds: float | None
    avg_job_seconds: float
    result: dict[str, Any] | None = Field(description="The audio URLs, seeds and metadata of a succeeded job.")
    error: str | None
    webhook: WebhookState | None = Field(default=None, description="Only for a job submitted with a webhook.")


class LegacyCancelled(LegacyJob):
    stopped: bool = Field(description="False while a running job has not yet reached the step where it stops.")


class LoraChange(_Answer):
    """What a /v1/lora/* change did; the fields echo the request's."""

    message: str
    lora_path: str | None = None
    adapter_name: str | None = None
    use_lora: bool | None = None
    scale: float | None = None


class LoraStatus(_Answer):
    lora_loaded: bool
    use_lora: bool
    lora_scale: float = Field(description="The active default adapter's scale.")
    adapter_type: str | None = Field(description='"lora" or "lokr": the active default adapter\'s type.')
    scales: dict[str, float]
    active_adapter: str | None
    adapters: list[str] = Field(description="The default adapters' names (adapter_name, or the folder name).")
    synthetic_default_mode: bool
    folders: dict[str, str] = Field(description="Each default adapter's folder in the adapters folder.")
    cached: list[str] = Field(description="Adapter folders held loaded (defaults and those requests named).")
    available: list[str] = Field(description="The names a request may give as lora_name.")
