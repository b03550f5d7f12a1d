"""What routes take from the running app: settings, the job queue and what the engine serves
(never the engine itself: model work is a job for the worker)."""

from __future__ import annotations

from fastapi import Request

from acestep_api.engine.adapter_tasks import AdapterLedger
from acestep_api.engine.served import ServedModels
from acestep_api.jobs.backend import JobBackend
from acestep_api.metrics import ServerMetrics
from acestep_api.settings import Settings
from acestep_api.storage import OutputStore
from acestep_api.webhooks.deliveries import DeliveryStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_queue(request: Request) -> JobBackend:
    return request.app.state.queue


def get_metrics(request: Request) -> ServerMetrics:
    return request.app.state.metrics


def get_outputs(request: Request) -> OutputStore:
    """Where generated audio lives (the audio folder or a bucket)."""
    return request.app.state.outputs


def get_adapter_ledger(request: Request) -> AdapterLedger | None:
    """The adapter state the worker publishes (data only), or None for an engine without adapters."""
    return getattr(request.app.state, "adapters", None)


def get_served(request: Request) -> ServedModels:
    """What the engine serves (its models, their tasks, the LM), as data: routes decide with
    this, never with the engine itself."""
    # The distributed mode's replica asks its workers (cached for a second).
    source = getattr(request.app.state, "served_source", None)
    return source() if source is not None else request.app.state.served


def get_deliveries(request: Request) -> DeliveryStore:
    """The jobs' webhook deliveries (their state shows in the jobs' answers)."""
    return request.app.state.deliveries
