"""Webhook deliveries of the distributed mode: rows of `acestep_webhook_deliveries` in the jobs'
PostgreSQL database, written on the job store's pool (webhooks/deliveries.py says what a
delivery is and the states it goes through).

A delivery is registered in the transaction that inserts its job (`register_in`), so a job a
client was told about always has its delivery. Every replica and worker that has the signing
secret runs a sender loop on this table: `claim_due` locks the due rows with FOR UPDATE SKIP
LOCKED and moves their due time to the end of a lease in the same statement, so two loops
never take one delivery at once, and an attempt cut short by a dead process is made again once
its lease is over (at least once, never lost). Times are the processes' clocks (epoch seconds),
as in the job table.
"""

from __future__ import annotations

import psycopg

from acestep_api.jobs.distributed.store import PostgresJobStore
from acestep_api.webhooks.deliveries import Delivery, DeliveryState

TABLE = "acestep_webhook_deliveries"
_FIELDS = ("job_id", "url", "state", "created_at", "payload", "attempts", "last_status", "last_error",
           "next_attempt_at", "delivered_at")
_COLUMNS = ", ".join(_FIELDS)
_PENDING = DeliveryState.PENDING.value


def _delivery(row: tuple) -> Delivery:
    values = dict(zip(_FIELDS, row))
    values["state"] = DeliveryState(values["state"])
    return Delivery(**values)


def register_in(conn: psycopg.Connection, job_id: str, url: str, now: float) -> None:
    """A `waiting` delivery for the job, within the caller's transaction (the job's insert)."""
    conn.execute(
        f"INSERT INTO {TABLE} (job_id, url, state, created_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (job_id) DO NOTHING",
        (job_id, url, DeliveryState.WAITING.value, now),
    )


class PostgresDeliveryStore:
    """Implements webhooks.deliveries.DeliveryStore. A database out of reach raises
    BackendUnavailable, as the job store does."""

    def __init__(self, store: PostgresJobStore):
        self.store = store

    def register(self, job_id: str, url: str, now: float) -> None:
        with self.store.connection() as conn:
            register_in(conn, job_id, url, now)

    def job_ended(self, job_id: str, payload: str, now: float) -> bool:
        with self.store.connection() as conn:
            cursor = conn.execute(
                f"UPDATE {TABLE} SET state = %s, payload = %s, next_attempt_at = %s WHERE job_id = %s AND state = %s",
                (_PENDING, payload, now, job_id, DeliveryState.WAITING.value),
            )
        return cursor.rowcount > 0

    def get(self, job_id: str) -> Delivery | None:
        with self.store.connection() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE job_id = %s", (job_id,)).fetchone()
        return _delivery(row) if row is not None else None

    def claim_due(self, now: float, lease_until: float, limit: int) -> list[Delivery]:
        with self.store.connection() as conn:
            # One statement, one transaction: the rows locked by another loop's claim are
            # skipped, and once it commits they are no longer due.
            rows = conn.execute(
                f"UPDATE {TABLE} SET next_attempt_at = %(lease)s WHERE job_id IN ("
                f"SELECT job_id FROM {TABLE} WHERE state = %(pending)s AND next_attempt_at <= %(now)s "
                "ORDER BY next_attempt_at, created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
                f"RETURNING {_COLUMNS}",
                {"lease": lease_until, "pending": _PENDING, "now": now, "limit": limit},
            ).fetchall()
        return sorted((_delivery(row) for row in rows), key=lambda delivery: delivery.created_at)

    def next_due_at(self) -> float | None:
        with self.store.connection() as conn:
            return conn.execute(f"SELECT min(next_attempt_at) FROM {TABLE} WHERE state = %s",
                                (_PENDING,)).fetchone()[0]

    def record_attempt(self, delivery: Delivery) -> None:
        with self.store.connection() as conn:
            conn.execute(
                f"UPDATE {TABLE} SET state = %s, attempts = %s, last_status = %s, last_error = %s, "
                "next_attempt_at = %s, delivered_at = %s WHERE job_id = %s",
                (delivery.state.value, delivery.attempts, delivery.last_status, delivery.last_error,
                 delivery.next_attempt_at, delivery.delivered_at, delivery.job_id),
            )

    def stranded(self, ended_before: float, limit: int = 100) -> list[str]:
        """Jobs that ended before `ended_before` while their delivery still waits: the process
        that ended them stopped (or lost the database) before storing the answer."""
        with self.store.connection() as conn:
            rows = conn.execute(
                f"SELECT d.job_id FROM {TABLE} AS d JOIN acestep_jobs AS j ON j.id = d.job_id "
                "WHERE d.state = %s AND j.status IN ('succeeded', 'failed') AND j.finished_at < %s "
                "ORDER BY j.finished_at LIMIT %s",
                (DeliveryState.WAITING.value, ended_before, limit),
            ).fetchall()
        return [job_id for (job_id,) in rows]

    def purge_orphans(self) -> int:
        with self.store.connection() as conn:
            cursor = conn.execute(
                f"DELETE FROM {TABLE} AS d WHERE NOT EXISTS (SELECT 1 FROM acestep_jobs AS j WHERE j.id = d.job_id)")
        return cursor.rowcount

    def close(self) -> None:
        """Nothing of its own: the pool is the job store's, closed with the backend."""
