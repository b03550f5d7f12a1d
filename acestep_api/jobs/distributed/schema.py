"""Creating the database objects the distributed mode needs: procrastinate's schema and ours.

Idempotent and safe when several processes start at once: the whole migration holds one
advisory lock, procrastinate's schema is applied only where its tables are missing, and our
statements are IF NOT EXISTS.
"""

from __future__ import annotations

import psycopg
from procrastinate.schema import SchemaManager

# Any constant: every process that migrates takes the same lock.
MIGRATION_LOCK = 7_215_513_001

OUR_SCHEMA = """
CREATE TABLE IF NOT EXISTS acestep_jobs (
    seq              BIGSERIAL PRIMARY KEY,  -- submission order
    id               TEXT NOT NULL UNIQUE,
    api              TEXT NOT NULL,
    status           TEXT NOT NULL,
    created_at       DOUBLE PRECISION NOT NULL,
    started_at       DOUBLE PRECISION,
    finished_at      DOUBLE PRECISION,
    progress         DOUBLE PRECISION NOT NULL,
    stage            TEXT NOT NULL,
    request          TEXT NOT NULL,
    result           TEXT,
    error            TEXT,
    attempts         INTEGER NOT NULL,
    temp_files       TEXT NOT NULL,
    run_marker       TEXT,
    kind             TEXT NOT NULL,
    -- the name of the API key that submitted it, and the audio seconds charged to that key
    key_name         TEXT,
    audio_seconds    DOUBLE PRECISION NOT NULL DEFAULT 0,
    -- the job failed because its worker died under it: its run time is unknown
    interrupted      BOOLEAN NOT NULL DEFAULT FALSE,
    -- the procrastinate queue it waits in (one per DiT model, one for LM-only jobs)
    queue            TEXT NOT NULL,
    procrastinate_id BIGINT,
    worker           TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
);
-- Columns added after the first release: a database migrated before them gains them.
ALTER TABLE acestep_jobs ADD COLUMN IF NOT EXISTS key_name TEXT;
ALTER TABLE acestep_jobs ADD COLUMN IF NOT EXISTS audio_seconds DOUBLE PRECISION NOT NULL DEFAULT 0;
-- the callback URL the job was submitted with (its delivery is in acestep_webhook_deliveries)
ALTER TABLE acestep_jobs ADD COLUMN IF NOT EXISTS webhook_url TEXT;
CREATE INDEX IF NOT EXISTS acestep_jobs_status ON acestep_jobs (status, seq);
CREATE INDEX IF NOT EXISTS acestep_jobs_finished ON acestep_jobs (finished_at);
CREATE INDEX IF NOT EXISTS acestep_jobs_procrastinate ON acestep_jobs (procrastinate_id);
CREATE INDEX IF NOT EXISTS acestep_jobs_key ON acestep_jobs (key_name, created_at) WHERE key_name IS NOT NULL;

-- One row per GPU worker process: what it serves (ServedModels as JSON) and when it was last
-- seen; a worker unseen for the stall timeout counts as dead.
CREATE TABLE IF NOT EXISTS acestep_workers (
    name        TEXT PRIMARY KEY,
    served      TEXT NOT NULL,
    queues      TEXT[] NOT NULL,
    started_at  DOUBLE PRECISION NOT NULL,
    last_seen   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per job submitted with a callback URL (jobs/distributed/deliveries.py); a pending
-- row's next_attempt_at is also the end of the lease of the sender loop that claimed it.
CREATE TABLE IF NOT EXISTS acestep_webhook_deliveries (
    job_id           TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    state            TEXT NOT NULL,
    created_at       DOUBLE PRECISION NOT NULL,
    payload          TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_status      INTEGER,
    last_error       TEXT,
    next_attempt_at  DOUBLE PRECISION,
    delivered_at     DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS acestep_webhook_deliveries_due
    ON acestep_webhook_deliveries (next_attempt_at) WHERE state = 'pending';
"""


def migrate(conninfo: str) -> bool:
    """Bring the database up to date; True when procrastinate's schema was created now."""
    with psycopg.connect(conninfo, autocommit=False) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            present = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()[0]
            if not present:
                conn.execute(SchemaManager.get_schema())
            conn.execute(OUR_SCHEMA)
    return not present
