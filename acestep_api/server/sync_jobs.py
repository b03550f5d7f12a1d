"""Routes that answer only once their job has ended (chat completions, prompt-to-audio):
submit to the one queue, wait, and stop the job when nobody is waiting for it any more."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import HTTPException

from acestep_api.engine.request import GenerationRequest
from acestep_api.jobs.models import Job, JobApi, JobStatus
from acestep_api.jobs.queue import JobQueue, QueueFullError

QUEUE_FULL = "Server busy: queue is full"
GENERATION_TIMEOUT = "Generation timeout"


async def run_to_end(
    queue: JobQueue,
    request: GenerationRequest,
    api: JobApi,
    timeout: float,
    temp_files: Sequence[str] = (),
) -> Job:
    """The ended job (succeeded or failed). A full queue is a 429; past `timeout` seconds the
    job is cancelled and the answer is a 504; a client that goes away cancels it too."""
    try:
        job, _ = queue.submit(request, api=api, temp_files=temp_files)
    except QueueFullError:
        raise HTTPException(status_code=429, detail=QUEUE_FULL) from None
    try:
        ended = await queue.wait_finished(job.id, timeout)
    except asyncio.CancelledError:
        queue.cancel(job.id)  # the connection closed: free the worker for someone else
        raise
    if ended is None or ended.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        queue.cancel(job.id)
        raise HTTPException(status_code=504, detail=GENERATION_TIMEOUT)
    return ended
