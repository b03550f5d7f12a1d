"""The job rows in PostgreSQL: the same records as jobs/store.py's SQLite table, plus the
procrastinate queue each job waits in and who runs it.

Every statement takes a connection from one psycopg pool; a database that cannot be reached
becomes BackendUnavailable (a 503 for a request), never a raw driver error.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg_pool

from acestep_api.jobs.backend import BackendUnavailable
from acestep_api.jobs.models import Job, JobKind, JobStatus
from acestep_api.jobs.store import (CANCELLED_STAGE, JOB_FIELDS, KeyCounts, KeyUsage, job_to_row,
                                    key_counts_from_rows, row_to_job)

UNAVAILABLE = "The job database cannot be reached right now; try again in a few seconds"

COLUMNS = ", ".join(JOB_FIELDS)
_ASSIGNMENTS = ", ".join(f"{name} = %s" for name in JOB_FIELDS[1:])
_FINISHED = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value)


# How long a request waits for a connection before it is answered 503.
POOL_TIMEOUT = 2.0
# After a failure, requests are answered 503 at once for this long instead of each waiting
# POOL_TIMEOUT (they run on the event loop): the pool keeps reconnecting meanwhile.
FAST_FAIL_SECONDS = 1.0


def open_pool(conninfo: str, max_size: int = 10, timeout: float | None = None) -> psycopg_pool.ConnectionPool:
    """A pool that does not wait for the database at start: a replica starts (and answers 503)
    while PostgreSQL is still coming up, and reconnects by itself."""
    timeout = POOL_TIMEOUT if timeout is None else timeout
    pool = psycopg_pool.ConnectionPool(
        conninfo, min_size=1, max_size=max_size, timeout=timeout, open=False,
        kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))},
        check=psycopg_pool.ConnectionPool.check_connection,
        reconnect_timeout=0,  # keep trying for ever: the database comes back
    )
    pool.open(wait=False)
    return pool


class PostgresJobStore:
    def __init__(self, pool: psycopg_pool.ConnectionPool, upload_dir: Path):
        self.pool = pool
        self.upload_dir = Path(upload_dir)
        self._down_until = 0.0

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        if time.monotonic() < self._down_until:
            raise BackendUnavailable(UNAVAILABLE)
        try:
            with self.pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg.InterfaceError) as error:
            self._down_until = time.monotonic() + FAST_FAIL_SECONDS
            raise BackendUnavailable(UNAVAILABLE) from error

    def _select(self, where: str, params: tuple = ()) -> list[Job]:
        with self.connection() as conn:
            rows = conn.execute(f"SELECT {COLUMNS} FROM acestep_jobs {where}", params).fetchall()
        return [row_to_job(row) for row in rows]

    # --- the same operations as JobStore ---------------------------------------------

    def add(self, job: Job, conn: psycopg.Connection, queue: str) -> int:
        """Insert within the caller's transaction (the queue entry is written with it)."""
        placeholders = ", ".join(["%s"] * (len(JOB_FIELDS) + 2))
        return conn.execute(
            f"INSERT INTO acestep_jobs ({COLUMNS}, queue, webhook_url) VALUES ({placeholders}) RETURNING seq",
            (*job_to_row(job), queue, job.webhook_url),
        ).fetchone()[0]

    def get(self, job_id: str) -> Job | None:
        jobs = self._select("WHERE id = %s", (job_id,))
        return jobs[0] if jobs else None

    def get_with_queue(self, job_id: str) -> tuple[Job, str] | None:
        """The job and the procrastinate queue it waits in."""
        with self.connection() as conn:
            row = conn.execute(f"SELECT {COLUMNS}, queue FROM acestep_jobs WHERE id = %s", (job_id,)).fetchone()
        return (row_to_job(row[:-1]), row[-1]) if row is not None else None

    def save(self, job: Job, *, only_if_running_attempt: int | None = None, interrupted: bool = False) -> bool:
        """Write every field; with `only_if_running_attempt`, only while the row is still that
        attempt's running job (a job handed to another worker is not ended by the first)."""
        values = job_to_row(job)
        guard = ""
        params: tuple = (*values[1:], interrupted, values[0])
        if only_if_running_attempt is not None:
            guard = " AND status = %s AND attempts = %s"
            params += (JobStatus.RUNNING.value, only_if_running_attempt)
        with self.connection() as conn:
            cursor = conn.execute(f"UPDATE acestep_jobs SET {_ASSIGNMENTS}, interrupted = %s WHERE id = %s{guard}",
                                  params)
        return cursor.rowcount == 1

    def write_progress(self, job_id: str, progress: float, stage: str) -> None:
        with self.connection() as conn:
            conn.execute("UPDATE acestep_jobs SET progress = %s, stage = %s WHERE id = %s AND status = %s",
                         (progress, stage, job_id, JobStatus.RUNNING.value))

    def waiting(self) -> list[Job]:
        return self._select("WHERE status = %s ORDER BY seq", (JobStatus.QUEUED.value,))

    def waiting_count(self) -> int:
        with self.connection() as conn:
            return conn.execute("SELECT count(*) FROM acestep_jobs WHERE status = %s",
                                (JobStatus.QUEUED.value,)).fetchone()[0]

    def position(self, job_id: str) -> int | None:
        """1-based place among all waiting jobs, by submission order."""
        with self.connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM acestep_jobs WHERE status = %(queued)s AND seq <= "
                "(SELECT seq FROM acestep_jobs WHERE id = %(id)s AND status = %(queued)s)",
                {"queued": JobStatus.QUEUED.value, "id": job_id},
            ).fetchone()
        return row[0] or None

    def oldest_waiting_since(self) -> float | None:
        with self.connection() as conn:
            return conn.execute("SELECT min(created_at) FROM acestep_jobs WHERE status = %s",
                                (JobStatus.QUEUED.value,)).fetchone()[0]

    def counts(self) -> dict[str, int]:
        with self.connection() as conn:
            rows = conn.execute("SELECT status, count(*) FROM acestep_jobs GROUP BY status").fetchall()
        counts = {status.value: 0 for status in JobStatus}
        counts.update({status: n for status, n in rows})
        return {"total": sum(counts.values()), **counts}

    def key_usage(self, key_name: str, since: float) -> KeyUsage:
        """What a key has used: jobs and audio seconds submitted since `since`, and its jobs
        waiting now (over every replica), as JobStore.key_usage."""
        with self.connection() as conn:
            jobs, seconds, waiting = conn.execute(
                "SELECT count(*) FILTER (WHERE created_at >= %(since)s), "
                "COALESCE(sum(audio_seconds) FILTER (WHERE created_at >= %(since)s), 0), "
                "count(*) FILTER (WHERE status = %(queued)s) FROM acestep_jobs WHERE key_name = %(key)s",
                {"since": since, "queued": JobStatus.QUEUED.value, "key": key_name},
            ).fetchone()
        return KeyUsage(jobs_since=int(jobs), audio_seconds_since=float(seconds), waiting=int(waiting))

    def key_counts(self, since: float) -> dict[str, KeyCounts]:
        """Per key name: its stored jobs by status, and the jobs and audio seconds submitted
        since `since` (for /v1/stats), as JobStore.key_counts."""
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT key_name, status, count(*), count(*) FILTER (WHERE created_at >= %(since)s), "
                "COALESCE(sum(audio_seconds) FILTER (WHERE created_at >= %(since)s), 0) "
                "FROM acestep_jobs WHERE key_name IS NOT NULL GROUP BY key_name, status ORDER BY key_name",
                {"since": since},
            ).fetchall()
        return key_counts_from_rows(rows)

    def recent_durations(self, n: int) -> list[float]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT finished_at - started_at FROM acestep_jobs "
                "WHERE status IN (%s, %s) AND started_at IS NOT NULL AND finished_at IS NOT NULL "
                "AND NOT interrupted AND stage != %s AND kind = %s ORDER BY finished_at DESC, seq DESC LIMIT %s",
                (*_FINISHED, CANCELLED_STAGE, JobKind.GENERATION.value, n),
            ).fetchall()
        return [max(0.0, duration) for (duration,) in rows]

    def audio_paths(self) -> list[str]:
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT jsonb_array_elements_text(result::jsonb -> 'audio_paths') FROM acestep_jobs "
                "WHERE result IS NOT NULL AND jsonb_typeof(result::jsonb -> 'audio_paths') = 'array'"
            ).fetchall()
        return [path for (path,) in rows]

    def purge_finished_before(self, cutoff: float) -> list[Job]:
        """Delete finished jobs older than `cutoff` with their closed procrastinate entries."""
        with self.connection() as conn, conn.transaction():
            rows = conn.execute(
                f"DELETE FROM acestep_jobs WHERE status IN (%s, %s) AND finished_at < %s "
                f"RETURNING {COLUMNS}, procrastinate_id",
                (*_FINISHED, cutoff),
            ).fetchall()
            entries = [row[-1] for row in rows if row[-1] is not None]
            if entries:
                conn.execute("DELETE FROM procrastinate_jobs WHERE id = ANY(%s) AND status NOT IN ('todo', 'doing')",
                             (entries,))
        return [row_to_job(row[:-1]) for row in rows]

    def close(self) -> None:
        self.pool.close()
