"""The job store: every accepted job as one row of a SQLite file (WAL mode).

A job is written before it is queued and after every state change, so a restart finds the
waiting jobs in their submission order and the finished ones still queryable. One connection
is shared by the event-loop thread and the worker thread, serialised by a lock: writes are
few (progress is throttled upstream) and each is one short statement.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from acestep_api.engine.request import Analysis, GenerationRequest, GenerationResult, Timings
from acestep_api.engine.adapter_tasks import AdapterAnswer, AdapterTask
from acestep_api.engine.lm_tasks import FormatRequest, LMTaskResult, SampleRequest
from acestep_api.engine.model_requests import ModelRequest, ModelResult
from acestep_api.jobs.models import Job, JobApi, JobKind, JobStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order
    id           TEXT NOT NULL UNIQUE,
    api          TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   REAL NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    progress     REAL NOT NULL,
    stage        TEXT NOT NULL,
    request      TEXT NOT NULL,
    result       TEXT,
    error        TEXT,
    attempts     INTEGER NOT NULL,
    temp_files   TEXT NOT NULL,
    -- 1 when the job failed because the server stopped under it: its run time is unknown,
    -- so it must not count in the average job duration.
    interrupted  INTEGER NOT NULL DEFAULT 0,
    -- JSON: what the process looked like when the job last started running (its pid, the
    -- boot, the OOM-kill counters), so the next start can tell if it died under this job.
    run_marker   TEXT,
    -- generation, format or sample (jobs/models.py JobKind): how request and result read
    kind         TEXT NOT NULL DEFAULT 'generation',
    -- the name of the API key that submitted it, and the audio seconds charged to that key
    key_name     TEXT,
    audio_seconds REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
"""

_FIELDS = (
    "id", "api", "status", "created_at", "started_at", "finished_at", "progress", "stage",
    "request", "result", "error", "attempts", "temp_files", "run_marker", "kind",
    "key_name", "audio_seconds",
)
# Columns added after the first release: a database written before them gains them on open.
_ADDED_COLUMNS = {
    "interrupted": "INTEGER NOT NULL DEFAULT 0",
    "run_marker": "TEXT",
    "kind": "TEXT NOT NULL DEFAULT 'generation'",
    "key_name": "TEXT",
    "audio_seconds": "REAL NOT NULL DEFAULT 0",
}
# Made once the columns they index exist (a database from before them gains those on open).
_LATER_INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_key ON jobs (key_name, created_at);
"""
_COLUMNS = ", ".join(_FIELDS)
_ASSIGNMENTS = ", ".join(f"{name} = ?" for name in _FIELDS[1:])  # every field but the id

_FINISHED = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value)
# A job's kind -> the types its request and result columns hold.
_TYPES = {
    JobKind.GENERATION: (GenerationRequest, GenerationResult),
    JobKind.FORMAT: (FormatRequest, LMTaskResult),
    JobKind.SAMPLE: (SampleRequest, LMTaskResult),
    JobKind.ADAPTER: (AdapterTask, AdapterAnswer),
    JobKind.MODELS: (ModelRequest, ModelResult),
}


# A result written before results were typed said "N/A" (or nothing) for an unknown value.
_OLD_UNKNOWN = ("N/A", "")
_TIMING_FIELDS = frozenset(field.name for field in dataclasses.fields(Timings))


def read_result(result_type: type, text: str):
    """A stored result; a generation's in either shape it was ever stored in."""
    if result_type is not GenerationResult:
        return result_type.model_validate_json(text)
    data = json.loads(text)
    if "generation_info" not in data:
        return GenerationResult.model_validate(data)
    return GenerationResult.model_validate(_typed_from_old(data))


def _typed_from_old(data: dict) -> dict:
    """The fields of a result stored before they were typed: its `generation_info` text kept
    as it was answered, "N/A" metadata as unknown, timings by phase, an analysis's `raw`
    answer as the analysis it describes."""
    old = dict(data)
    info = old.pop("generation_info")
    raw = old.pop("raw", None)
    metas = old.get("metas") if isinstance(old.get("metas"), dict) else {}
    timings = old.get("timings") if isinstance(old.get("timings"), dict) else {}
    analysis = None
    if isinstance(raw, dict):
        if "audio_codes" in raw:
            analysis = Analysis(mode="extract_codes_only", audio_codes=str(raw["audio_codes"] or ""))
        else:
            understood = raw.get("metas") if isinstance(raw.get("metas"), dict) else {}
            analysis = Analysis(mode="full_analysis_only", understood=understood)
    return {
        **old,
        "metas": {key: None if value in _OLD_UNKNOWN else value for key, value in metas.items()},
        "timings": {key: value for key, value in timings.items() if key in _TIMING_FIELDS},
        "analysis": analysis,
        "stored_generation_info": info,
    }


# Decides, for a job found running at start, whether the previous process crashed under it:
# the sentence to fail it with, or None for a plain interruption (see jobs/crash_evidence.py).
CrashJudge = Callable[[Job], str | None]


def interrupted_error(attempt: int, max_attempts: int) -> str:
    return (
        f"The server stopped while this job was running (attempt {attempt} of {max_attempts}); "
        "it was not retried again."
    )


@dataclasses.dataclass(frozen=True)
class KeyUsage:
    jobs_since: int
    audio_seconds_since: float
    waiting: int


@dataclasses.dataclass
class KeyCounts:
    jobs: dict[str, int]  # by status
    jobs_since: int = 0
    audio_seconds_since: float = 0.0

    @classmethod
    def empty(cls) -> "KeyCounts":
        return cls(jobs={status.value: 0 for status in JobStatus})


def key_counts_from_rows(rows) -> dict[str, KeyCounts]:
    """Per key name, from rows of (key_name, status, jobs, jobs since, audio seconds since),
    one per key and status, as both job stores' queries return them."""
    counts: dict[str, KeyCounts] = {}
    for key_name, status, n, jobs_since, seconds_since in rows:
        entry = counts.setdefault(key_name, KeyCounts.empty())
        entry.jobs[status] = n
        entry.jobs_since += int(jobs_since)
        entry.audio_seconds_since += float(seconds_since)
    return counts


# A cancelled job is failed at this stage; its partial run time is no job duration.
CANCELLED_STAGE = "cancelled"
UPLOAD_FOLDER = "uploads"  # next to the database by default, as Settings.upload_dir places it


class JobStore:
    def __init__(self, path: Path, upload_dir: Path | None = None):
        self.path = Path(path)
        # The one folder a job's recorded uploads (`temp_files`) may be deleted from.
        self.upload_dir = Path(upload_dir) if upload_dir is not None else self.path.parent / UPLOAD_FOLDER
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: autocommit, transactions are opened explicitly where needed.
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a job acknowledged to the client survives a power cut, not only a crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._add_missing_columns()
        self._db.executescript(_LATER_INDEXES)

    def _add_missing_columns(self) -> None:
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, declaration in _ADDED_COLUMNS.items():
            if name not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")

    # --- rows <-> jobs ---------------------------------------------------------------

    @staticmethod
    def _values(job: Job) -> tuple:
        return (
            job.id,
            JobApi(job.api).value,
            JobStatus(job.status).value,
            job.created_at,
            job.started_at,
            job.finished_at,
            job.progress,
            job.stage,
            job.request.model_dump_json(),
            job.result.model_dump_json() if job.result is not None else None,
            job.error,
            job.attempts,
            json.dumps(list(job.temp_files)),
            json.dumps(job.run_marker) if job.run_marker is not None else None,
            job.kind.value,
            job.key_name,
            job.audio_seconds,
        )

    @staticmethod
    def _job(row: tuple) -> Job:
        (job_id, api, status, created_at, started_at, finished_at, progress, stage,
         request, result, error, attempts, temp_files, run_marker, kind, key_name, audio_seconds) = row
        request_type, result_type = _TYPES[JobKind(kind)]
        return Job(
            id=job_id,
            request=request_type.model_validate_json(request),
            api=JobApi(api),
            status=JobStatus(status),
            created_at=created_at,
            started_at=started_at,
            finished_at=finished_at,
            progress=progress,
            stage=stage,
            result=read_result(result_type, result) if result is not None else None,
            error=error,
            attempts=attempts,
            temp_files=json.loads(temp_files),
            run_marker=json.loads(run_marker) if run_marker is not None else None,
            key_name=key_name,
            audio_seconds=audio_seconds,
        )

    def _select(self, where: str, params: tuple = ()) -> list[Job]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs {where}", params).fetchall()
        return [self._job(row) for row in rows]

    # --- public API ------------------------------------------------------------------

    def add(self, job: Job) -> None:
        placeholders = ", ".join("?" * len(_FIELDS))
        with self._lock:
            self._db.execute(f"INSERT INTO jobs ({_COLUMNS}) VALUES ({placeholders})", self._values(job))

    def get(self, job_id: str) -> Job | None:
        jobs = self._select("WHERE id = ?", (job_id,))
        return jobs[0] if jobs else None

    def save(self, job: Job) -> None:
        values = self._values(job)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {_ASSIGNMENTS} WHERE id = ?", (*values[1:], values[0]))

    def waiting(self) -> list[Job]:
        return self._select("WHERE status = ? ORDER BY seq", (JobStatus.QUEUED.value,))

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        counts = {status.value: 0 for status in JobStatus}
        counts.update({status: n for status, n in rows})
        return {"total": sum(counts.values()), **counts}

    def key_usage(self, key_name: str, since: float) -> KeyUsage:
        """What a key has used: jobs and audio seconds submitted since `since` (epoch seconds),
        and its jobs waiting now. The one question the key quotas ask of a backend."""
        with self._lock:
            jobs, seconds, waiting = self._db.execute(
                "SELECT COALESCE(SUM(created_at >= ?), 0), "
                "COALESCE(SUM(CASE WHEN created_at >= ? THEN audio_seconds ELSE 0 END), 0), "
                "COALESCE(SUM(status = ?), 0) FROM jobs WHERE key_name = ?",
                (since, since, JobStatus.QUEUED.value, key_name),
            ).fetchone()
        return KeyUsage(jobs_since=int(jobs), audio_seconds_since=float(seconds), waiting=int(waiting))

    def key_counts(self, since: float) -> dict[str, KeyCounts]:
        """Per key name: its stored jobs by status, and the jobs and audio seconds submitted
        since `since` (for /v1/stats)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key_name, status, COUNT(*), COALESCE(SUM(created_at >= ?), 0), "
                "COALESCE(SUM(CASE WHEN created_at >= ? THEN audio_seconds ELSE 0 END), 0) "
                "FROM jobs WHERE key_name IS NOT NULL GROUP BY key_name, status ORDER BY key_name",
                (since, since),
            ).fetchall()
        return key_counts_from_rows(rows)

    def recent_durations(self, n: int) -> list[float]:
        """Run times of the last `n` finished generation jobs, newest first (an LM-only job
        takes seconds and says nothing about how long a song takes)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT finished_at - started_at FROM jobs "
                "WHERE status IN (?, ?) AND started_at IS NOT NULL AND finished_at IS NOT NULL "
                "AND interrupted = 0 AND stage != ? AND kind = ? ORDER BY finished_at DESC, seq DESC LIMIT ?",
                (*_FINISHED, CANCELLED_STAGE, JobKind.GENERATION.value, n),
            ).fetchall()
        return [max(0.0, duration) for (duration,) in rows]

    def audio_paths(self) -> list[str]:
        """Every audio path a stored job's result names (the files the audio sweep keeps)."""
        with self._lock:
            rows = self._db.execute(
                # A damaged row must not stop the server from starting: it names no files.
                "SELECT value FROM jobs, json_each(CASE WHEN json_valid(jobs.result) THEN jobs.result "
                "ELSE '{}' END, '$.audio_paths') WHERE jobs.result IS NOT NULL"
            ).fetchall()
        return [path for (path,) in rows if isinstance(path, str)]

    def recover_interrupted(self, max_attempts: int = 2, crashed: CrashJudge | None = None) -> list[Job]:
        """Deal with jobs left 'running' by a server that stopped: a job the previous process
        crashed under (as `crashed` judges) fails at once, for running it again would crash
        this one too; any other is retried while it has attempts left, else failed."""
        changed = []
        now = time.time()
        for job in self._select("WHERE status = ? ORDER BY seq", (JobStatus.RUNNING.value,)):
            crash = crashed(job) if crashed is not None else None
            if crash is not None:
                job.status, job.stage = JobStatus.FAILED, "failed"
                job.finished_at = now
                job.error = crash
                interrupted = 1
            elif job.attempts < max_attempts:
                # Back to queued; its seq is unchanged, so it keeps its place in line.
                job.status, job.stage, job.progress = JobStatus.QUEUED, "queued", 0.0
                job.started_at = None
                interrupted = 0
            else:
                job.status, job.stage = JobStatus.FAILED, "failed"
                job.finished_at = now
                job.error = interrupted_error(job.attempts, max_attempts)
                interrupted = 1
            with self._lock:
                self._db.execute(
                    f"UPDATE jobs SET {_ASSIGNMENTS}, interrupted = ? WHERE id = ?",
                    (*self._values(job)[1:], interrupted, job.id),
                )
            changed.append(job)
        return changed

    def purge_finished_before(self, cutoff: float) -> list[Job]:
        """Delete finished jobs older than `cutoff`; the caller removes their files."""
        where = "WHERE status IN (?, ?) AND finished_at < ?"
        params = (*_FINISHED, cutoff)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs {where}", params).fetchall()
                self._db.execute(f"DELETE FROM jobs {where}", params)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return [self._job(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


# The row shape of a job, shared with the distributed store (jobs/distributed/store.py), so a
# field added here is stored there the same way.
JOB_FIELDS = _FIELDS
job_to_row = JobStore._values
row_to_job = JobStore._job
