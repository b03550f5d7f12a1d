"""Telling a job that crashed the server from one that was only interrupted (issue #10, 1).

The kernel's files are a fake tree (SystemFiles); the crash log is written by a real
faulthandler in a real child process that dies of a real SIGSEGV.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from acestep_api.jobs.crash_evidence import (
    CRASH_ERROR,
    OOM_ERROR,
    CrashEvidence,
    SystemFiles,
    cgroup_oom_kills,
    oom_killed_since,
    read_crash_log,
    readings,
)
from acestep_api.jobs.models import JobStatus
from acestep_api.jobs.queue import JobQueue
from acestep_api.jobs.store import JobStore
from tests.jobs import make_request

BOOT = "35512762-b8c2-42ef-9599-13d39c5c3380"


class FakeKernel:
    """A /proc and /sys/fs/cgroup with a boot id and OOM-kill counters that tests move."""

    def __init__(self, root: Path, cgroup_lines: str = "0::/system.slice/acestep.service\n"):
        self.files = SystemFiles(proc=root / "proc", cgroup_root=root / "cgroup")
        (self.files.proc / "self").mkdir(parents=True)
        (self.files.proc / "self" / "cgroup").write_text(cgroup_lines)
        self.boot(BOOT)
        self.set(vmstat=0, cgroup=0)

    def boot(self, boot_id: str) -> None:
        path = self.files.proc / "sys" / "kernel" / "random" / "boot_id"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(boot_id + "\n")

    def set(self, vmstat: int | None = None, cgroup: int | None = None) -> None:
        if vmstat is not None:
            (self.files.proc / "vmstat").write_text(f"nr_free_pages 1000\noom_kill {vmstat}\npgfault 7\n")
        if cgroup is not None:
            events = self.files.cgroup_root / "system.slice" / "acestep.service" / "memory.events"
            events.parent.mkdir(parents=True, exist_ok=True)
            events.write_text(f"low 0\nhigh 0\nmax 3\noom 1\noom_kill {cgroup}\noom_group_kill 0\n")


# --- the kernel's counters ----------------------------------------------------------------

def test_readings_take_the_boot_and_both_counters(tmp_path):
    kernel = FakeKernel(tmp_path)
    kernel.set(vmstat=5, cgroup=2)
    assert readings(kernel.files) == {"boot_id": BOOT, "vmstat_oom_kill": 5,
                                      "cgroup": "v2:/system.slice/acestep.service", "cgroup_oom_kill": 2}


def test_cgroup_v1_memory_controller_as_in_a_hybrid_container(tmp_path):
    kernel = FakeKernel(tmp_path, "9:name=systemd:/\n4:memory:/process_api/05da\n1:cpu:/\n0::/\n")
    control = kernel.files.cgroup_root / "memory" / "process_api" / "05da" / "memory.oom_control"
    control.parent.mkdir(parents=True)
    control.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n")
    # v2's root cgroup has no memory.events: the v1 memory controller's count is the one.
    assert cgroup_oom_kills(kernel.files) == ("v1:/process_api/05da", 4)


def test_nothing_readable_gives_no_readings(tmp_path):
    files = SystemFiles(proc=tmp_path / "none", cgroup_root=tmp_path / "none")
    assert readings(files) == {"boot_id": None, "vmstat_oom_kill": None, "cgroup": None, "cgroup_oom_kill": None}


@pytest.mark.parametrize(("before", "now", "expected"), [
    ({"vmstat_oom_kill": 3}, {"vmstat_oom_kill": 4}, True),
    ({"vmstat_oom_kill": 3}, {"vmstat_oom_kill": 3}, False),
    ({"vmstat_oom_kill": 3, "boot_id": "another boot"}, {"vmstat_oom_kill": 9}, False),  # counters reset
    ({"cgroup": "v2:/a", "cgroup_oom_kill": 1}, {"cgroup": "v2:/a", "cgroup_oom_kill": 2}, True),
    ({"cgroup": "v2:/a", "cgroup_oom_kill": 1}, {"cgroup": "v2:/b", "cgroup_oom_kill": 2}, False),
    ({"cgroup": "v2:/a", "cgroup_oom_kill": 5}, {"cgroup": "v2:/a", "cgroup_oom_kill": 0}, False),  # fresh cgroup
    ({"vmstat_oom_kill": None}, {"vmstat_oom_kill": 1}, False),  # nothing was read at the start
])
def test_an_oom_kill_is_a_counter_that_grew_on_the_same_boot(before, now, expected):
    assert oom_killed_since({"boot_id": BOOT, **before}, {"boot_id": BOOT, **now}) is expected


# --- the crash log ------------------------------------------------------------------------

CRASHING_CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from acestep_api.jobs.crash_evidence import CrashEvidence
    evidence = CrashEvidence(Path(sys.argv[1]))
    evidence.start()
    print(evidence.pid, repr(evidence.started), flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
""")


def test_a_fatal_signal_leaves_its_process_and_reason_in_the_crash_log(tmp_path):
    log_path = tmp_path / "server-crash.log"
    child = subprocess.run([sys.executable, "-c", CRASHING_CHILD, str(log_path)],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGSEGV, child.stderr
    pid, started = child.stdout.split()
    crash = read_crash_log(log_path)
    assert crash is not None and (crash.pid, crash.started) == (int(pid), float(started))
    assert crash.what == "a segmentation fault"
    crashed_text = log_path.read_text()
    assert "Segmentation fault" in crashed_text

    # The next process reads it, keeps it for the operator, and starts a clean log of its own.
    evidence = CrashEvidence(log_path)
    assert evidence.previous == crash
    evidence.start()
    evidence.stop()
    assert (tmp_path / "server-crash.previous.log").read_text() == crashed_text
    assert read_crash_log(log_path) is None


def test_a_process_that_did_not_crash_leaves_only_its_header(tmp_path):
    log_path = tmp_path / "server-crash.log"
    evidence = CrashEvidence(log_path)
    evidence.start()
    evidence.stop()
    assert read_crash_log(log_path) is None
    assert log_path.read_text().startswith(f"acestep-api server pid={evidence.pid} ")
    log_path.write_text("a file that is not ours\nFatal Python error: Aborted\n")
    assert read_crash_log(log_path) is None
    assert read_crash_log(tmp_path / "missing.log") is None
    log_path.write_text("acestep-api server pid=12 started=1.2.3\nFatal Python error: Aborted\n")
    assert read_crash_log(log_path) is None  # a damaged header names no process


# --- through the store and the queue, across a "restart" ----------------------------------

def start_one_running(path: Path, evidence: CrashEvidence, prompts=("poison", "next")) -> list[str]:
    """A server that took the first of its jobs and then died (nothing more is written)."""
    store = JobStore(path)
    queue = JobQueue(store, crash_evidence=evidence)
    ids = [queue.submit(make_request(prompt))[0].id for prompt in prompts]
    assert asyncio.run(queue.next_job()).id == ids[0]
    store.close()
    return ids


def restart(path: Path, evidence: CrashEvidence) -> tuple[JobStore, JobQueue]:
    store = JobStore(path)
    return store, JobQueue(store, crash_evidence=evidence)


def test_a_job_running_when_the_machine_ran_out_of_memory_fails_and_the_next_runs(tmp_path):
    kernel = FakeKernel(tmp_path)
    kernel.set(vmstat=7)
    path = tmp_path / "jobs.sqlite3"
    poison, following = start_one_running(path, CrashEvidence(tmp_path / "crash.log", kernel.files, pid=101))
    marker = JobStore(path).get(poison).run_marker
    assert marker["pid"] == 101 and marker["vmstat_oom_kill"] == 7 and marker["boot_id"] == BOOT

    kernel.set(vmstat=8)  # the kernel killed the server under the job
    store, queue = restart(path, CrashEvidence(tmp_path / "crash.log", kernel.files, pid=102))
    job = store.get(poison)
    assert job.status is JobStatus.FAILED and job.error == OOM_ERROR and job.attempts == 1
    assert queue.position(poison) is None and queue.position(following) == 1
    assert asyncio.run(queue.next_job()).id == following
    store.close()


def test_a_plain_interruption_is_retried_as_before(tmp_path):
    kernel = FakeKernel(tmp_path)
    path = tmp_path / "jobs.sqlite3"
    interrupted, _ = start_one_running(path, CrashEvidence(tmp_path / "crash.log", kernel.files, pid=101))
    kernel.boot("a reboot since")  # a reboot raises no counter that is comparable
    kernel.set(vmstat=50)
    store, queue = restart(path, CrashEvidence(tmp_path / "crash.log", kernel.files, pid=102))
    assert store.get(interrupted).status is JobStatus.QUEUED and queue.position(interrupted) == 1
    store.close()


def test_a_job_running_when_its_process_crashed_fails_with_the_reason(tmp_path):
    kernel = FakeKernel(tmp_path)
    log_path = tmp_path / "crash.log"
    path = tmp_path / "jobs.sqlite3"
    crashed_process = CrashEvidence(log_path, kernel.files, pid=101)
    crashed_process.start()
    try:
        poison, following = start_one_running(path, crashed_process)
    finally:
        crashed_process.stop()
    with open(log_path, "a") as log:  # what faulthandler writes on SIGBUS
        log.write("Fatal Python error: Bus error\n\nThread 0x00007f (most recent call first):\n  <no Python frame>\n")

    store, queue = restart(path, CrashEvidence(log_path, kernel.files, pid=101))  # a container reuses pids
    job = store.get(poison)
    assert job.status is JobStatus.FAILED
    assert job.error == CRASH_ERROR.format(what="a bus error")
    assert job.error == "This job stopped the server (it crashed with a bus error) and was not run again."
    assert queue.position(following) == 1
    store.close()


def test_a_crash_log_of_another_process_does_not_fail_the_job(tmp_path):
    kernel = FakeKernel(tmp_path)
    log_path = tmp_path / "crash.log"
    path = tmp_path / "jobs.sqlite3"
    running, _ = start_one_running(path, CrashEvidence(log_path, kernel.files, pid=101))
    # Same pid, another process (its own start time): it crashed, but not under this job.
    other = CrashEvidence(log_path, kernel.files, pid=101)
    other.start()
    other.stop()
    with open(log_path, "a") as log:
        log.write("Fatal Python error: Segmentation fault\n")
    store, queue = restart(path, CrashEvidence(log_path, kernel.files, pid=101))
    assert store.get(running).status is JobStatus.QUEUED
    store.close()


def test_a_database_from_before_the_marker_gains_its_column(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
              api TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL,
              finished_at REAL, progress REAL NOT NULL, stage TEXT NOT NULL, request TEXT NOT NULL,
              result TEXT, error TEXT, attempts INTEGER NOT NULL, temp_files TEXT NOT NULL);
        """)
        db.execute("INSERT INTO jobs (id, api, status, created_at, progress, stage, request, attempts, temp_files)"
                   " VALUES ('old', 'release_task', 'running', 1.0, 0.5, 'running', ?, 1, '[]')",
                   (make_request("old").model_dump_json(),))
    store = JobStore(path)
    try:
        columns = {row[1] for row in store._db.execute("PRAGMA table_info(jobs)")}
        assert {"interrupted", "run_marker"} <= columns
        job = store.get("old")
        assert job.run_marker is None
        # A job started by the old version has no marker: it gets the ordinary retry.
        evidence = CrashEvidence(tmp_path / "crash.log", SystemFiles(proc=tmp_path, cgroup_root=tmp_path))
        assert [j.status for j in store.recover_interrupted(crashed=evidence.verdict)] == [JobStatus.QUEUED]
        job.run_marker = {"pid": 1}
        store.save(job)
        assert json.loads(store._db.execute("SELECT run_marker FROM jobs").fetchone()[0]) == {"pid": 1}
    finally:
        store.close()
