"""Webhook deliveries left waiting by a process that ended their job and stopped (or lost the
database) before storing the job's answer: every distributed process looks for them now and
then and stores the answer itself, so a delivery is never left waiting for ever. Storing it
twice is harmless: only a waiting delivery takes an answer."""

from __future__ import annotations

import asyncio
import logging
import time

from acestep_api.jobs.distributed.backend import PostgresJobBackend
from acestep_api.jobs.events import Outcome
from acestep_api.jobs.models import JobStatus
from acestep_api.webhooks.observer import WebhookEvents

log = logging.getLogger(__name__)

# A job's end and its answer are stored moments apart: only older ends count as stranded.
GRACE_SECONDS = 60.0
SWEEP_SECONDS = 60.0


def announce_stranded(backend: PostgresJobBackend, webhooks: WebhookEvents, now: float) -> int:
    """Store the answers of the stranded deliveries; how many."""
    announced = 0
    for job_id in backend.deliveries.stranded(now - GRACE_SECONDS):
        job = backend.store.get(job_id)
        if job is None:
            continue
        webhooks.job_ended(job, Outcome.SUCCEEDED if job.status is JobStatus.SUCCEEDED else Outcome.INTERNAL)
        announced += 1
    return announced


async def sweep_stranded(backend: PostgresJobBackend, webhooks: WebhookEvents, every: float = SWEEP_SECONDS) -> None:
    """Run announce_stranded every `every` seconds until cancelled."""
    while True:
        await asyncio.sleep(every)
        try:
            announced = await asyncio.to_thread(announce_stranded, backend, webhooks, time.time())
            if announced:
                log.warning("Stored the webhook answers of %d jobs whose process stopped before it did", announced)
        except Exception:  # noqa: BLE001 - a failed round (the database away) is tried again
            log.warning("Looking for stranded webhook deliveries failed; retrying", exc_info=True)
