"""What the queue tells an observer about its jobs (the server's metrics, acestep_api/metrics.py):
each job submitted, started and ended, with how it ended. The jobs package knows nothing of
who listens; an observer that raises is logged and never stops a job."""

from __future__ import annotations

import enum
from typing import Protocol

from acestep_api.jobs.models import Job


class Outcome(str, enum.Enum):
    """How a job ended: succeeded, or the class of its failure."""

    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"  # by request, while waiting or running
    # The process ended under the job (a crash, an OOM kill, or stops that used up its
    # attempts); the next start finds it and fails it.
    CRASHED = "crashed"
    # The engine refused or could not complete it, in words for the client (GenerationError):
    # input it cannot use, a failed LM, a task the model cannot run.
    GENERATION_ERROR = "generation_error"
    INTERNAL = "internal"  # any other exception: a bug or a broken environment

    @property
    def failed(self) -> bool:
        return self is not Outcome.SUCCEEDED


class JobEvents(Protocol):
    def job_submitted(self, job: Job) -> None: ...

    def job_started(self, job: Job) -> None: ...

    def job_ended(self, job: Job, outcome: Outcome) -> None: ...

    # Optional: jobs claimed together because they may share one run (jobs/queue.py:
    # claim_batch), with the batch items they hold together; told once per claim whose first
    # job can be batched (alone or not), after their starts.
    def batch_claimed(self, jobs: list[Job], items: int) -> None: ...
