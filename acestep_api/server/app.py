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
from acestep_api.dialects import official
from acestep_api.jobs.backend import BackendUnavailable
from acestep_api.jobs.crash_evidence import CRASH_LOG_NAME, CrashEvidence, SystemFiles
from acestep_api.jobs.events import EventFanout
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
from acestep_api.server.services.webhooks import server_endpoints
from acestep_api.settings import Settings
from acestep_api.storage import build_output_store
from acestep_api.webhooks.observer import WebhookEvents
from acestep_api.webhooks.sender import build_sender
from acestep_api.webhooks.sqlite_deliveries import SQLiteDeliveryStore

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
    if settings.distributed:
        async with distributed_lifespan(app, settings):
            yield
        return
    store = JobStore(settings.database_path, settings.upload_dir)
    deliveries = SQLiteDeliveryStore(settings.database_path)
    webhooks = WebhookEvents(deliveries, official.final_item)
    # Read before this process writes its own crash log: did the previous one die under a job?
    # app.state.system_files: a fake /proc and cgroup tree, for tests of the OOM evidence.
    system_files = getattr(app.state, "system_files", None) or SystemFiles()
    crash_evidence = CrashEvidence(settings.output_dir / CRASH_LOG_NAME, system_files)
    try:
        # The queue recovers jobs a previous server left running (fails those it crashed
        # under, retries or fails the others, and removes the temp files of those it fails)
        # before it loads the waiting ones.
        queue = JobQueue(store, settings.queue_maxsize, settings.avg_job_seconds, settings.avg_window,
                         crash_evidence=crash_evidence, events=EventFanout(app.state.metrics, webhooks))
        # Nothing writes audio yet: partial files and files no job owns can go.
        await asyncio.to_thread(sweep_audio_folder, store, settings.audio_dir)
        crash_evidence.start()
        if app.state.engine is None:
            app.state.engine = await asyncio.to_thread(build_engine, settings)
        app.state.served = app.state.engine.served()
        app.state.adapters = getattr(getattr(app.state.engine, "adapters", None), "ledger", None)
        watch = getattr(app.state.engine, "watch_served", None)
        if watch is not None:  # a model loaded or unloaded: the routes decide with what is loaded now
            watch(lambda served: served_changed(app, served))
        app.state.metrics.attach(queue, app.state.served)
        worker = JobWorker(queue, app.state.engine, retention_seconds=settings.retention_days * SECONDS_PER_DAY,
                           encode_workers=settings.encode_workers or None, encode_backlog=settings.encode_backlog,
                           outputs=app.state.outputs, batch_max_items=settings.batch_max_items)
        app.state.store, app.state.queue, app.state.worker = store, queue, worker
        app.state.deliveries = deliveries
        app.state.webhook_endpoints = await asyncio.to_thread(server_endpoints, settings)
        sender = build_sender(settings, deliveries, app.state.webhook_endpoints)
        if sender is not None:
            sender.start()
            webhooks.wake = sender.wake
        if app.state.start_worker:
            worker.start()
        log.info("Serving models %s", ", ".join(app.state.served.model_names))
        try:
            yield
        finally:
            await worker.stop()
            if sender is not None:
                await sender.stop()
    finally:
        store.close()
        deliveries.close()
        crash_evidence.stop()


@asynccontextmanager
async def distributed_lifespan(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """An API replica of the distributed mode: the jobs live in PostgreSQL; with
    `start_worker` this process is also a GPU worker (`serve --with-worker`), else it loads no
    model and serves what the live workers report."""
    from acestep_api.jobs.distributed.runner import DistributedWorker
    from acestep_api.jobs.distributed.setup import open_backend
    from acestep_api.jobs.distributed.stranded import sweep_stranded

    backend = await asyncio.to_thread(open_backend, settings, app.state.metrics)
    # The jobs' webhooks: a job ends in the worker process that ran it (or the replica that
    # cancelled it while waiting), whose observer stores the answer to send.
    webhooks = WebhookEvents(backend.deliveries, official.final_item)
    backend.events = EventFanout(app.state.metrics, webhooks)
    runner_task = sender = None
    stranded_task = asyncio.create_task(sweep_stranded(backend, webhooks), name="acestep-stranded-webhooks")
    try:
        app.state.queue, app.state.store = backend, backend.store
        app.state.deliveries = backend.deliveries
        app.state.webhook_endpoints = await asyncio.to_thread(server_endpoints, settings)
        # Every process with the secret sends: the claims are leased, so each delivery is
        # attempted by one of them at a time (jobs/distributed/deliveries.py).
        sender = await asyncio.to_thread(build_sender, settings, backend.deliveries, app.state.webhook_endpoints)
        if sender is not None:
            sender.start()
            webhooks.wake = sender.wake
        # Default adapters (POST /v1/lora/*) belong to one engine: only a process that is a
        # worker has them.
        app.state.adapters = None
        if app.state.start_worker:
            if app.state.engine is None:
                app.state.engine = await asyncio.to_thread(build_engine, settings)
            served = app.state.engine.served()
            app.state.adapters = getattr(getattr(app.state.engine, "adapters", None), "ledger", None)
            worker = JobWorker(backend, app.state.engine, retention_seconds=settings.retention_days * SECONDS_PER_DAY,
                               encode_workers=settings.encode_workers or None, encode_backlog=settings.encode_backlog,
                               outputs=app.state.outputs)
            runner = DistributedWorker(settings.database_url, backend, worker, served, name=settings.worker_name,
                                       stall_seconds=settings.worker_stall_seconds)
            runner_task = asyncio.create_task(runner.run(), name="acestep-distributed-worker")
        app.state.served_source = backend.served
        try:
            app.state.served = backend.served()
        except BackendUnavailable:  # the database comes later: requests get 503 until then
            app.state.served = backend.fallback_served
        app.state.metrics.attach(backend, app.state.served)
        log.info("Distributed mode: jobs in PostgreSQL%s", ", with a GPU worker in this process" if runner_task else "")
        yield
    finally:
        if runner_task is not None:
            runner_task.cancel()
            await asyncio.gather(runner_task, return_exceptions=True)
        stranded_task.cancel()
        await asyncio.gather(stranded_task, return_exceptions=True)
        if sender is not None:
            await sender.stop()
        backend.close()


def served_changed(app: FastAPI, served) -> None:
    """Called on the engine thread after a load: the next request reads the new inventory."""
    app.state.served = served
    app.state.metrics.served = served


def create_app(settings: Settings, engine=None, *, start_worker: bool = True) -> FastAPI:
    """`engine` None loads the configured checkpoints at startup; `start_worker` False leaves
    submitted jobs waiting (for tests of the queue itself). In the distributed mode
    (ACESTEP_DATABASE_URL), `start_worker` makes this process a GPU worker too; without it
    no model is loaded. A keys file that cannot be used raises KeyFileError (its message names
    the file and the problem)."""
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
