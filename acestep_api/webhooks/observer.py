"""The queue's observer for webhooks (jobs/events.py): a job submitted with a callback URL gets
a waiting delivery; when any job ends, however it ends (succeeded, failed, cancelled, failed at
start-up after a crash), its delivery is given the job's final answer and the sender is woken.
Hooked on the queue rather than the routes, so every dialect's jobs are served alike."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from acestep_api.jobs.events import Outcome
from acestep_api.jobs.models import Job
from acestep_api.webhooks.deliveries import DeliveryStore


class WebhookEvents:
    """Implements jobs.events.JobEvents. `render` turns an ended job into the body to send;
    `wake` (set once the sender runs; callable from any thread) tells it a delivery is due."""

    def __init__(self, store: DeliveryStore, render: Callable[[Job], dict]):
        self.store = store
        self.render = render
        self.wake: Callable[[], None] | None = None

    def job_submitted(self, job: Job) -> None:
        if job.webhook_url:
            self.store.register(job.id, job.webhook_url, job.created_at or time.time())

    def job_started(self, job: Job) -> None:
        pass

    def job_ended(self, job: Job, outcome: Outcome) -> None:
        now = time.time()
        if job.webhook_url:
            # A job could end before its submission was reported (another thread cancelled it).
            self.store.register(job.id, job.webhook_url, job.created_at or now)
        elif self.store.get(job.id) is None:
            return  # no callback: nothing to render
        payload = json.dumps(self.render(job), ensure_ascii=False)
        if self.store.job_ended(job.id, payload, now) and self.wake is not None:
            self.wake()
