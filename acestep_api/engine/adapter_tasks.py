"""The adapter routes' work as queued jobs, and the adapter state as data.

Loading, unloading, switching and scaling adapters changes the DiT, so it is model work: an
``AdapterTask`` is a job on the one queue, run by the worker in order with the songs around it
(engine/adapters.py). The job answers an ``AdapterAnswer``; the state after it, an
``AdapterStatus``, is also kept in an ``AdapterLedger`` that GET /v1/lora/status reads without
waiting in line. Torch-free: the HTTP layer builds and reads these.
"""

from __future__ import annotations

import threading
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCALE_MIN, SCALE_MAX = 0.0, 1.0  # the official range of an adapter's strength
LABEL_MAX_CHARS = 128

AdapterOp = Literal["load", "unload", "toggle", "scale"]


class AdapterTask(BaseModel):
    """One change to the server's default adapters (POST /v1/lora/*)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["adapter"] = "adapter"
    op: AdapterOp
    folder: str | None = Field(default=None, max_length=128)  # load: the adapter folder's name
    adapter_name: str | None = Field(default=None, max_length=LABEL_MAX_CHARS)  # load, scale
    use_lora: bool | None = None  # toggle
    scale: float | None = Field(default=None, ge=SCALE_MIN, le=SCALE_MAX)  # scale


class AdapterStatus(BaseModel):
    """The default adapters, under the official status fields, plus what requests may name."""

    lora_loaded: bool = False
    use_lora: bool = False
    lora_scale: float = 1.0
    adapter_type: str | None = None  # "lora" or "lokr": the active adapter's type
    scales: dict[str, float] = Field(default_factory=dict)
    active_adapter: str | None = None
    adapters: list[str] = Field(default_factory=list)
    synthetic_default_mode: bool = False  # the official field; always false here
    # Ours: the folder each default adapter came from, and the adapters held for requests.
    folders: dict[str, str] = Field(default_factory=dict)
    cached: list[str] = Field(default_factory=list)


class AdapterAnswer(BaseModel):
    """How an AdapterTask ended: ``problem`` set when the client's request cannot be done (a
    400), else ``message``; ``status`` is the state after it."""

    message: str = ""
    problem: str | None = None
    status: AdapterStatus = Field(default_factory=AdapterStatus)


class AdapterLedger:
    """The latest AdapterStatus, written by the worker's thread and read by the routes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = AdapterStatus()

    def publish(self, status: AdapterStatus) -> None:
        with self._lock:
            self._status = status

    def read(self) -> AdapterStatus:
        with self._lock:
            return self._status.model_copy(deep=True)
