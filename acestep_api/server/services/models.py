"""Model jobs for the routes that load models (POST /v1/init, /v1/reinitialize): queued
behind whatever is waiting, run by the worker, answered once they end."""

from __future__ import annotations

from fastapi import Request

from acestep_api.engine.model_requests import ModelRequest, ModelResult
from acestep_api.jobs.models import JobApi, JobStatus
from acestep_api.jobs.backend import JobBackend
from acestep_api.server.services.key_quotas import key_quota
from acestep_api.server.services.sync_jobs import refuse_if_full, run_to_end


async def run_model_job(queue: JobBackend, request: ModelRequest, timeout: float,
                        connection: Request | None = None) -> tuple[ModelResult | None, str | None]:
    """(result, None), or (None, the job's error sentence). A full queue is a 429, a key that
    may not use the model it names a 403 (keys file), the time running out a 504, and a client
    that goes away cancels the job."""
    refuse_if_full(queue)
    job = await run_to_end(queue, request, JobApi.MODELS, timeout, connection=connection,
                           quota=key_quota(connection) if connection is not None else None)
    if job.status is JobStatus.SUCCEEDED and isinstance(job.result, ModelResult):
        return job.result, None
    return None, job.error or "the models could not be loaded"
