"""Webhook deliveries as rows of the `webhook_deliveries` table in the job database's SQLite
file (its own connection; WAL lets it write beside the job store)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from acestep_api.webhooks.deliveries import Delivery, DeliveryState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    job_id           TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    state            TEXT NOT NULL,
    created_at       REAL NOT NULL,
    payload          TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_status      INTEGER,
    last_error       TEXT,
    next_attempt_at  REAL,
    delivered_at     REAL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
"""
_FIELDS = ("job_id", "url", "state", "created_at", "payload", "attempts", "last_status", "last_error",
           "next_attempt_at", "delivered_at")
_COLUMNS = ", ".join(_FIELDS)


def _delivery(row: tuple) -> Delivery:
    values = dict(zip(_FIELDS, row))
    values["state"] = DeliveryState(values["state"])
    return Delivery(**values)


class SQLiteDeliveryStore:
    """Implements webhooks.deliveries.DeliveryStore."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # As the job store: a delivery promised to a client survives a power cut.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def register(self, job_id: str, url: str, now: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO webhook_deliveries (job_id, url, state, created_at) VALUES (?, ?, ?, ?)",
                (job_id, url, DeliveryState.WAITING.value, now),
            )

    def job_ended(self, job_id: str, payload: str, now: float) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "UPDATE webhook_deliveries SET state = ?, payload = ?, next_attempt_at = ? "
                "WHERE job_id = ? AND state = ?",
                (DeliveryState.PENDING.value, payload, now, job_id, DeliveryState.WAITING.value),
            )
        return cursor.rowcount > 0

    def get(self, job_id: str) -> Delivery | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE job_id = ?",
                                   (job_id,)).fetchone()
        return _delivery(row) if row is not None else None

    def claim_due(self, now: float, lease_until: float, limit: int) -> list[Delivery]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE state = ? AND next_attempt_at <= ? "
                    "ORDER BY next_attempt_at, created_at LIMIT ?",
                    (DeliveryState.PENDING.value, now, limit),
                ).fetchall()
                self._db.executemany("UPDATE webhook_deliveries SET next_attempt_at = ? WHERE job_id = ?",
                                     [(lease_until, row[0]) for row in rows])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        deliveries = [_delivery(row) for row in rows]
        for delivery in deliveries:
            delivery.next_attempt_at = lease_until
        return deliveries

    def next_due_at(self) -> float | None:
        with self._lock:
            (due,) = self._db.execute("SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE state = ?",
                                      (DeliveryState.PENDING.value,)).fetchone()
        return due

    def record_attempt(self, delivery: Delivery) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE webhook_deliveries SET state = ?, attempts = ?, last_status = ?, last_error = ?, "
                "next_attempt_at = ?, delivered_at = ? WHERE job_id = ?",
                (delivery.state.value, delivery.attempts, delivery.last_status, delivery.last_error,
                 delivery.next_attempt_at, delivery.delivered_at, delivery.job_id),
            )

    def purge_orphans(self) -> int:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM webhook_deliveries WHERE job_id NOT IN (SELECT id FROM jobs)"
            )
        return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
