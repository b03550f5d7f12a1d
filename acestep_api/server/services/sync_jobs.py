"""Submitting to the one queue, and for the routes that answer only once their job has ended
(chat completions, prompt-to-audio, the LM routes): waiting, and stopping the job when nobody
is waiting for it any more (the time is up, or the client went away)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from fastapi import HTTPException, Request

from acestep_api.jobs.models import Job, JobApi, JobRequest
from acestep_api.jobs.backend import JobBackend
from acestep_api.jobs.queue import QueueFullError
from acestep_api.jobs.retention import remove_files
from acestep_api.server.services.key_quotas import JobCharge, KeyQuota

QUEUE_FULL = "Server busy: queue is full"
GENERATION_TIMEOUT = "Generation timeout"
RETRY_AFTER_MAX = 3600


def queue_full(queue: JobBackend) -> HTTPException:
    """The 429, with Retry-After: the average job's seconds, when the worker should have freed
    a place (1 to RETRY_AFTER_MAX seconds, whatever ACESTEP_AVG_JOB_SECONDS says)."""
    average = queue.avg_job_seconds
    seconds = min(max(1, math.ceil(average)), RETRY_AFTER_MAX) if math.isfinite(average) else 1
    return HTTPException(status_code=429, detail=QUEUE_FULL, headers={"Retry-After": str(seconds)})


def refuse_if_full(queue: JobBackend) -> None:
    """A 429 now, before a request spends time (decoding audio, running the LM) on a job the
    queue could not take; `submit` still decides for certain."""
    if queue.size >= queue.maxsize:
        raise queue_full(queue)


def submit(
    queue: JobBackend, request: JobRequest, api: JobApi, temp_files: Sequence[str] = (),
    quota: KeyQuota | None = None,
    webhook_url: str | None = None,
) -> tuple[Job, int]:
    """Queue a request (job and its 1-based position), charged to the key of `quota` if its
    limits allow (key_quotas.py), with its checked callback URL if any. Refused (a full queue
    is a 429, a key over its limits a 429 or 403), its temp files go: no job owns them."""
    key = quota.key if quota is not None else None
    try:
        # No await between the key's check and the store's insert, and no other replica
        # charging the key meanwhile (key_guard): the check holds.
        with queue.key_guard(key.name if key is not None else None):
            charge = quota.charge(request) if quota is not None else JobCharge(None, 0.0)
            return queue.submit(request, api=api, temp_files=temp_files, key_name=charge.key_name,
                                audio_seconds=charge.audio_seconds, webhook_url=webhook_url)
    except BaseException as error:
        remove_files(temp_files)
        if isinstance(error, QueueFullError):
            raise queue_full(queue) from None
        raise


CLIENT_GONE = "The client closed the connection; its job was cancelled"


async def _client_gone(connection: Request) -> None:
    """Returns once the client has closed the connection. Called after the body was read: the
    next message the server gives is the disconnect (or the end of the answer)."""
    while (await connection.receive())["type"] != "http.disconnect":
        pass


async def run_to_end(
    queue: JobBackend,
    request: JobRequest,
    api: JobApi,
    timeout: float,
    temp_files: Sequence[str] = (),
    *,
    connection: Request | None = None,
    quota: KeyQuota | None = None,
    webhook_url: str | None = None,
) -> Job:
    """The ended job (succeeded or failed). A full queue is a 429; past `timeout` seconds the
    job is cancelled and the answer is a 504; a client that goes away (the handler is
    cancelled, or `connection` reports the disconnect) cancels it too."""
    job, _ = submit(queue, request, api, temp_files, quota, webhook_url)
    waiting = asyncio.ensure_future(queue.wait_finished(job.id, timeout))
    watching = asyncio.ensure_future(_client_gone(connection)) if connection is not None else None
    try:
        await asyncio.wait([task for task in (waiting, watching) if task is not None],
                           return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        queue.cancel(job.id)  # the connection closed: free the worker for someone else
        raise
    finally:
        for task in (waiting, watching):
            if task is not None and not task.done():
                task.cancel()
    if not waiting.done() or waiting.cancelled():
        queue.cancel(job.id)
        # Nobody reads this answer; it ends the handler.
        raise HTTPException(status_code=499, detail=CLIENT_GONE)
    ended = waiting.result()
    if ended is None or not ended.status.ended:
        queue.cancel(job.id)
        raise HTTPException(status_code=504, detail=GENERATION_TIMEOUT)
    return ended
