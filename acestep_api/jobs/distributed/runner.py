"""A GPU worker of the distributed mode: a procrastinate worker whose one task runs our job on
the engine this process loaded.

- It listens on the queues of the DiT models it serves (and the LM queue when its LM is
  loaded), one job at a time, with LISTEN/NOTIFY for new jobs and for aborts.
- Each job runs through the same `JobWorker.run_job` as the embedded mode (engine thread,
  encoding pool, failures ending that job only); progress and the end go to PostgreSQL.
- A cancel reaches the run as procrastinate's abort: the task keeps running (the engine
  thread cannot be interrupted) and the next progress report raises JobCancelled, so the job
  stops between diffusion steps and the process and its weights stay.
- Every `heartbeat` seconds it records itself in `acestep_workers` (what it serves) and
  procrastinate records its own heartbeat; every worker also looks for jobs held by workers
  silent for `stall_seconds` and hands them on (backend.recover_stalled). A SIGKILLed
  worker's job is therefore running again within stall_seconds + heartbeat + recovery
  interval (about 14 s with the defaults).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid

from procrastinate import App, PsycopgConnector, RetryStrategy
from procrastinate.job_context import AbortReason, JobContext

from acestep_api.engine.served import ServedModels
from acestep_api.jobs.backend import BackendUnavailable
from acestep_api.jobs.distributed.backend import (
    LM_QUEUE, TASK_NAME, PostgresJobBackend, queue_for_model, served_to_json,
)
from acestep_api.jobs.worker import JobWorker

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 2.0
CLAIM_ATTEMPTS = 60
FORGET_WORKER_SECONDS = 24 * 3600


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def worker_queues(served: ServedModels) -> list[str]:
    """The queues a worker with these models takes jobs from."""
    queues = [queue_for_model(name) for name in served.model_names]
    if served.lm_available:
        queues += [queue_for_model(name, lm=True) for name in served.model_names] + [LM_QUEUE]
    return queues


class DistributedWorker:
    def __init__(self, conninfo: str, backend: PostgresJobBackend, job_worker: JobWorker, served: ServedModels,
                 *, name: str | None = None, stall_seconds: float = 10.0):
        self.conninfo = conninfo
        self.backend = backend
        self.job_worker = job_worker
        self.served = served
        self.name = name or default_worker_name()
        self.stall_seconds = stall_seconds
        self.heartbeat = max(0.5, stall_seconds / 5)
        self.queues = worker_queues(served)
        self.started_at = time.time()

    def _task_app(self) -> App:
        app = App(connector=PsycopgConnector(conninfo=self.conninfo, kwargs={"connect_timeout": 5}))

        # The task raises only when the database failed it before the job started (the claim):
        # procrastinate then tries again, so the job is not left waiting for ever.
        @app.task(name=TASK_NAME, pass_context=True, retry=RetryStrategy(max_attempts=CLAIM_ATTEMPTS, wait=2))
        async def run_job(context: JobContext, job_id: str) -> None:
            await self._run(context, job_id)

        return app

    async def _run(self, context: JobContext, job_id: str) -> None:
        job = await asyncio.to_thread(
            self.backend.claim, job_id, self.name,
            lambda: context.abort_reason() is AbortReason.USER_REQUEST)
        if job is None:
            log.info("Job %s is no longer waiting (cancelled or taken); skipped", job_id)
            return
        running = asyncio.ensure_future(self.job_worker.run_job(job))
        while True:
            try:
                await asyncio.shield(running)
                return
            except asyncio.CancelledError:
                if running.done() or context.abort_reason() is not AbortReason.USER_REQUEST:
                    raise
                # procrastinate cancels an async task it is asked to abort; the engine thread
                # cannot be, so the run goes on until its next progress report stops it.
                self.backend.request_stop(job.id)

    # --- side loops -----------------------------------------------------------------

    def _register(self) -> None:
        with self.backend.store.connection() as conn:
            conn.execute(
                "INSERT INTO acestep_workers (name, served, queues, started_at, last_seen) "
                "VALUES (%s, %s, %s, %s, now()) ON CONFLICT (name) DO UPDATE SET served = EXCLUDED.served, "
                "queues = EXCLUDED.queues, last_seen = now()",
                (self.name, served_to_json(self.served), self.queues, self.started_at))
            # A worker killed without a goodbye is forgotten after a while (its models are still
            # listed until then, so their jobs keep waiting rather than going elsewhere).
            conn.execute("DELETE FROM acestep_workers WHERE last_seen < now() - make_interval(secs => %s)",
                         (FORGET_WORKER_SECONDS,))

    def _unregister(self) -> None:
        with self.backend.store.connection() as conn:
            conn.execute("DELETE FROM acestep_workers WHERE name = %s", (self.name,))

    async def _heartbeat(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self._register)
            except BackendUnavailable:
                log.warning("Worker %s: the database cannot be reached; retrying", self.name)
            except Exception:  # noqa: BLE001 - the heartbeat must go on whatever one round met
                log.exception("Worker %s: recording its heartbeat failed", self.name)
            await asyncio.sleep(self.heartbeat)

    async def _recover(self, app: App) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                stalled = await app.job_manager.get_stalled_jobs(
                    task_name=TASK_NAME, seconds_since_heartbeat=self.stall_seconds)
                for entry in stalled:
                    status = await asyncio.to_thread(self.backend.recover_stalled, entry.id)
                    if status is not None:
                        log.warning("Job %s of a dead worker: %s", entry.task_kwargs.get("job_id"), status.value)
                await app.job_manager.prune_stalled_workers(self.stall_seconds)
            except Exception:  # noqa: BLE001 - a failed round is retried at the next one
                log.warning("Worker %s: looking for stalled jobs failed; retrying", self.name, exc_info=True)

    # --- running --------------------------------------------------------------------

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        """Take jobs until cancelled (or, with signal handlers, until SIGTERM / SIGINT, after
        the running job ends). Reconnects while the database is away."""
        self.job_worker.start(take_jobs=False)
        heartbeat = asyncio.create_task(self._heartbeat(), name="acestep-worker-heartbeat")
        log.info("Worker %s serving queues %s", self.name, ", ".join(self.queues))
        try:
            while True:
                app = self._task_app()
                recover = None
                try:
                    async with app.open_async():
                        recover = asyncio.create_task(self._recover(app), name="acestep-worker-recovery")
                        await app.run_worker_async(
                            queues=self.queues, name=self.name, concurrency=1, wait=True,
                            install_signal_handlers=install_signal_handlers,
                            update_heartbeat_interval=self.heartbeat, stalled_worker_timeout=self.stall_seconds,
                            abort_job_polling_interval=self.heartbeat, fetch_job_polling_interval=self.heartbeat,
                        )
                    return  # stopped by a signal
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - the database went away: start over
                    log.warning("Worker %s lost the database; reconnecting in %.0f s", self.name,
                                RECONNECT_SECONDS, exc_info=True)
                    await asyncio.sleep(RECONNECT_SECONDS)
                finally:
                    if recover is not None:
                        recover.cancel()
                        await asyncio.gather(recover, return_exceptions=True)
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            await self.job_worker.stop()
            try:
                await asyncio.to_thread(self._unregister)
            except BackendUnavailable:
                pass
