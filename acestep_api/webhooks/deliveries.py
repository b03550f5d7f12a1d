"""A job's webhook delivery, and the store that keeps deliveries across restarts.

One delivery per job that named a callback URL. It is `waiting` while the job has not ended;
when the job ends its final answer is stored with it and it becomes `pending`; the sender then
makes attempts until one is answered 2xx (`delivered`) or the attempts run out or the URL is
refused at send time (`failed`). `DeliveryStore` is what the observer, the sender and the
routes need of a store; `sqlite_deliveries.py` keeps it in the job database's file, and a
job backend on another database implements the same few methods.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class DeliveryState(str, enum.Enum):
    WAITING = "waiting"  # the job has not ended
    PENDING = "pending"  # to be sent, or sent again after a failed attempt
    DELIVERED = "delivered"  # an attempt was answered 2xx
    FAILED = "failed"  # the attempts ran out, or the URL was refused at send time


@dataclass
class Delivery:
    job_id: str
    url: str
    state: DeliveryState
    created_at: float
    payload: str | None = None  # the JSON body, fixed when the job ended (every attempt sends it)
    attempts: int = 0
    last_status: int | None = None  # the HTTP status of the last answered attempt
    last_error: str | None = None  # why the last attempt failed, in words for the client
    next_attempt_at: float | None = None
    delivered_at: float | None = None


class DeliveryStore(Protocol):
    def register(self, job_id: str, url: str, now: float) -> None:
        """A `waiting` delivery for the job; nothing when the job already has one."""

    def job_ended(self, job_id: str, payload: str, now: float) -> bool:
        """The job's `waiting` delivery becomes `pending`, due now, with `payload`; False when
        the job has no waiting delivery."""

    def get(self, job_id: str) -> Delivery | None: ...

    def claim_due(self, now: float, lease_until: float, limit: int) -> list[Delivery]:
        """Up to `limit` pending deliveries due by `now`, oldest first, each made due again only
        at `lease_until`: another loop does not take them while an attempt runs, and an attempt
        cut short by a stop is made again once the lease is over."""

    def next_due_at(self) -> float | None:
        """When the earliest pending delivery is due; None when none is pending."""

    def record_attempt(self, delivery: Delivery) -> None:
        """Store the delivery's state, attempts, last status and error, next attempt time and
        delivery time as the sender set them."""

    def purge_orphans(self) -> int:
        """Remove the deliveries whose job is no longer stored (the retention removed it); how many."""

    def close(self) -> None: ...


def delivery_view(delivery: Delivery) -> dict:
    """The `webhook` object a job's answer shows."""
    return {
        "url": delivery.url,
        "status": delivery.state.value,
        "attempts": delivery.attempts,
        "last_http_status": delivery.last_status,
        "last_error": delivery.last_error,
        "next_attempt_at": delivery.next_attempt_at if delivery.state is DeliveryState.PENDING else None,
        "delivered_at": delivery.delivered_at,
    }
