"""What the queue tells an observer about its jobs (the server's metrics, acestep_api/metrics.py;
the webhooks, acestep_api/webhooks/observer.py): each job submitted, started and ended, with how
it ended. The jobs package knows nothing of who listens (`EventFanout` tells several); an
observer that raises is logged and never stops a job."""

from __future__ import annotations

import enum
import logging
from typing import Protocol

from acestep_api.jobs.models import Job

log = logging.getLogger(__name__)


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

def tell(events: JobEvents | None, event: str, job: Job, *args) -> None:
    """Tell `events` (if any) of a job's event; an observer's fault is logged, never raised:
    it must not change a job's fate."""
    if events is None:
        return
    try:
        getattr(events, event)(job, *args)
    except Exception:  # noqa: BLE001 - see above
        log.exception("Reporting %s of job %s failed", event, job.id)


class EventFanout:
    """Several observers as one: each hears every event, in order; one that raises is logged
    and the others still hear it."""

    def __init__(self, *observers: JobEvents):
        self.observers = observers

    def _tell(self, event: str, job: Job, *args) -> None:
        for observer in self.observers:
            tell(observer, event, job, *args)

    def job_submitted(self, job: Job) -> None:
        self._tell("job_submitted", job)

    def job_started(self, job: Job) -> None:
        self._tell("job_started", job)

    def job_ended(self, job: Job, outcome: Outcome) -> None:
        self._tell("job_ended", job, outcome)

    def batch_claimed(self, jobs: list[Job], items: int) -> None:
        for observer in self.observers:
            hear = getattr(observer, "batch_claimed", None)
            if hear is None:
                continue
            try:
                hear(jobs, items)
            except Exception:  # noqa: BLE001 - as _tell
                log.exception("Reporting a batch of %d jobs failed", len(jobs))
