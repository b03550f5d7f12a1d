"""The jobs a client can name: its songs. An LM-only job is answered on its own route while the
client waits; its id is never handed out, and its result is no song the polling and cancel
routes could show."""

from __future__ import annotations

from acestep_api.jobs.models import Job, JobKind
from acestep_api.jobs.backend import JobBackend


def client_job(queue: JobBackend, job_id: str) -> Job | None:
    """The job `job_id` names, or None for an unknown id or an LM-only job."""
    job = queue.get(job_id)
    return job if job is not None and job.kind is JobKind.GENERATION else None
