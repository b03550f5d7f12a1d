"""Opening the distributed mode from Settings: the migration, the pool, the backend, and what
an API replica serves before any worker has said what it loaded."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import psycopg

from acestep_api.engine.request import TASK_TYPES, TURBO_TASK_TYPES
from acestep_api.engine.served import ServedModel, ServedModels
from acestep_api.jobs.distributed.backend import PostgresJobBackend
from acestep_api.jobs.distributed.schema import migrate
from acestep_api.jobs.events import JobEvents
from acestep_api.jobs.distributed.store import open_pool
from acestep_api.settings import Settings

log = logging.getLogger(__name__)

MIGRATE_WAIT_SECONDS = 30.0


def migrate_when_reachable(conninfo: str, wait: float | None = None) -> bool:
    """Migrate, waiting up to `wait` seconds for the database; False if it never answered
    (the process starts anyway and answers 503 until it does)."""
    deadline = time.monotonic() + (MIGRATE_WAIT_SECONDS if wait is None else wait)
    while True:
        try:
            migrate(conninfo)
            return True
        except psycopg.OperationalError as error:
            if time.monotonic() >= deadline:
                log.error("The job database cannot be reached (%s); serving 503 until it can", error)
                return False
            time.sleep(1.0)


def configured_models(settings: Settings) -> ServedModels:
    """The models the settings name, as a replica reports them before any worker registered."""
    models = tuple(
        ServedModel(Path(name).name, "turbo" in Path(name).name,
                    TURBO_TASK_TYPES if "turbo" in Path(name).name else TASK_TYPES)
        for name in settings.dit_config_paths)
    return ServedModels(models=models, lm_model=Path(settings.lm_model_path).name, lm_available=False,
                        is_demo=settings.demo, device="none")


def open_backend(settings: Settings, events: JobEvents | None = None) -> PostgresJobBackend:
    migrate_when_reachable(settings.database_url)
    return PostgresJobBackend(
        open_pool(settings.database_url),
        settings.upload_dir,
        maxsize=settings.queue_maxsize,
        avg_job_seconds=settings.avg_job_seconds,
        avg_window=settings.avg_window,
        primary_model=Path(settings.config_path).name,
        fallback_served=configured_models(settings),
        stall_seconds=settings.worker_stall_seconds,
        events=events,
    )
