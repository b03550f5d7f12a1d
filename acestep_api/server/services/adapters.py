"""The adapter routes' jobs: queued behind the work already waiting (they change the DiT), and
waited for, like the LM-only jobs."""

from __future__ import annotations

from fastapi import HTTPException, Request

from acestep_api.engine.adapter_tasks import AdapterAnswer, AdapterLedger, AdapterTask
from acestep_api.jobs.models import JobApi, JobStatus
from acestep_api.jobs.backend import JobBackend
from acestep_api.server.services.sync_jobs import refuse_if_full, run_to_end

MODEL_NOT_INITIALIZED = "Model not initialized"


def require_adapters(ledger: AdapterLedger | None) -> AdapterLedger:
    """The official gate: no engine able to take adapters is a 500."""
    if ledger is None:
        raise HTTPException(status_code=500, detail=MODEL_NOT_INITIALIZED)
    return ledger


async def run_adapter_job(queue: JobBackend, task: AdapterTask, timeout: float,
                          connection: Request | None = None) -> tuple[AdapterAnswer | None, str | None]:
    """(the answer, None), or (None, the failed job's sentence). A full queue is a 429, the
    time running out a 504."""
    refuse_if_full(queue)
    job = await run_to_end(queue, task, JobApi.LORA, timeout, connection=connection)
    if job.status is JobStatus.SUCCEEDED and isinstance(job.result, AdapterAnswer):
        return job.result, None
    return None, job.error or "the adapter change failed"
