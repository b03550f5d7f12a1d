"""The 5 Hz LM's gate and its LM-only jobs, for the routes that answer with what it wrote."""

from __future__ import annotations

from fastapi import HTTPException, Request

from acestep_api.engine.lm_tasks import LMRequest, LMTaskResult
from acestep_api.engine.served import ServedModels
from acestep_api.jobs.models import JobApi, JobStatus
from acestep_api.jobs.backend import JobBackend
from acestep_api.server.services.key_quotas import key_quota
from acestep_api.server.services.sync_jobs import refuse_if_full, run_to_end

LLM_NOT_INITIALIZED = "LLM not initialized. Set ACESTEP_INIT_LLM=true in .env to enable."


def require_lm(served: ServedModels) -> None:
    """The official gate of the LM routes: a failed load is a 500, a disabled LM a 503."""
    if served.lm_available:
        return
    if served.lm_error:
        raise HTTPException(status_code=500, detail=f"LLM init failed: {served.lm_error}")
    raise HTTPException(status_code=503, detail=LLM_NOT_INITIALIZED)


async def run_lm_job(queue: JobBackend, task: LMRequest, timeout: float,
                     connection: Request | None = None) -> tuple[LMTaskResult | None, str | None]:
    """Queue an LM-only job behind whatever is waiting and wait for it: (result, None), or
    (None, the job's error sentence). A full queue is a 429, the time running out a 504, and
    a client that goes away cancels the job."""
    refuse_if_full(queue)
    job = await run_to_end(queue, task, JobApi.LM, timeout, connection=connection,
                           quota=key_quota(connection) if connection is not None else None)
    if job.status is JobStatus.SUCCEEDED and isinstance(job.result, LMTaskResult):
        return job.result, None
    return None, job.error or "The 5 Hz LM failed"
