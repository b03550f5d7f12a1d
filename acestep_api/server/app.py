"""The FastAPI app: built from Settings, with the job store, queue, engine and worker opened
in the lifespan and kept on `app.state` for the routes' dependencies."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from acestep_api import __version__
from acestep_api.engine.startup import build_engine
from acestep_api.jobs.crash_evidence import CRASH_LOG_NAME, CrashEvidence, SystemFiles
from acestep_api.jobs.queue import JobQueue
from acestep_api.jobs.retention import sweep_audio_folder
from acestep_api.jobs.store import JobStore
from acestep_api.jobs.worker import JobWorker
from acestep_api.metrics import ServerMetrics
from acestep_api.server.errors import install_error_handlers
from acestep_api.server.key_limits import RequestLimits
from acestep_api.server.key_ring import KeyRing
from acestep_api.server.request_guard import RequestGuard
from acestep_api.server.request_metrics import RequestMetrics
from acestep_api.server.openapi.document import install_docs, operation_id
from acestep_api.server.routes import (
    audio, cancel, chat, fal, health, legacy, lora, metrics, models, samples, stats, tasks,
)
from acestep_api.settings import Settings
from acestep_api.storage import build_output_store

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86400
# Browser pages served from this machine (the UI, a local file) may call the API; as official.
CORS_ORIGINS = ["null", "http://localhost", "http://127.0.0.1"]
CORS_ORIGIN_REGEX = r"^https?://(localhost|127\.0\.0\.1)(:\d+)?$"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    settings.audio_dir.mkdir(parents=True, exist_ok=True)
    app.state.outputs = build_output_store(settings)
    store = JobStore(settings.database_path, settings.upload_dir)
    # Read before this process writes its own crash log: did the previous one die under a job?
    # app.state.system_files: a fake /proc and cgroup tree, for tests of the OOM evidence.
    system_files = getattr(app.state, "system_files", None) or SystemFiles()
    crash_evidence = CrashEvidence(settings.output_dir / CRASH_LOG_NAME, system_files)
    try:
        # The queue recovers jobs a previous server left running (fails those it crashed
        # under, retries or fails the others, and removes the temp files of those it fails)
        # before it loads the waiting ones.
        queue = JobQueue(store, settings.queue_maxsize, settings.avg_job_seconds, settings.avg_window,
                         crash_evidence=crash_evidence, events=app.state.metrics)
        # Nothing writes audio yet: partial files and files no job owns can go.
        await asyncio.to_thread(sweep_audio_folder, store, settings.audio_dir)
        crash_evidence.start()
        if app.state.engine is None:
            app.state.engine = await asyncio.to_thread(build_engine, settings)
        app.state.served = app.state.engine.served()
        app.state.adapters = getattr(getattr(app.state.engine, "adapters", None), "ledger", None)
        app.state.metrics.attach(queue, app.state.served)
        worker = JobWorker(queue, app.state.engine, retention_seconds=settings.retention_days * SECONDS_PER_DAY,
                           encode_workers=settings.encode_workers or None, encode_backlog=settings.encode_backlog,
                           outputs=app.state.outputs, batch_max_items=settings.batch_max_items)
        app.state.store, app.state.queue, app.state.worker = store, queue, worker
        if app.state.start_worker:
            worker.start()
        log.info("Serving models %s", ", ".join(app.state.served.model_names))
        try:
            yield
        finally:
            await worker.stop()
    finally:
        store.close()
        crash_evidence.stop()


def create_app(settings: Settings, engine=None, *, start_worker: bool = True) -> FastAPI:
    """`engine` None loads the configured checkpoints at startup; `start_worker` False leaves
    submitted jobs waiting (for tests of the queue itself). A keys file that cannot be used
    raises KeyFileError (its message names the file and the problem)."""
    # The document and its viewers are served by install_docs, guarded by the key when set.
    app = FastAPI(title="ACE-Step API", version=__version__, lifespan=lifespan,
                  openapi_url=None, docs_url=None, redoc_url=None, generate_unique_id_function=operation_id)
    app.state.settings = settings
    app.state.engine = engine
    app.state.start_worker = start_worker
    # This app's own registry: the process's global one would collide between apps (tests).
    app.state.metrics = ServerMetrics()
    # The accepted keys, read now so that a broken keys file stops the start, and the
    # per-request limits of each (key_limits.py).
    app.state.keys = KeyRing(settings)
    app.state.request_limits = RequestLimits(app.state.metrics)
    # Middleware added later wraps what came before: the request metrics, CORS, then the 500
    # handler, then the guard of request bodies (key and size before any body is read).
    app.add_middleware(RequestGuard)
    install_error_handlers(app)
    install_docs(app, settings)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=CORS_ORIGINS,
        allow_origin_regex=CORS_ORIGIN_REGEX,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Content-Type", "Authorization"],
    )
    app.add_middleware(RequestMetrics)
    for module in (health, tasks, cancel, audio, models, stats, samples, legacy, chat, fal, metrics, lora):
        app.include_router(module.router)
    return app
