"""Telling, at the next start, whether the server process died under a job or was only stopped.

A job found 'running' at start was cut short. If the process was stopped (kill -9 by an operator,
a power cut, a container moved) the job deserves another attempt; if the job itself killed the
process (it ran out of memory, the native code crashed), running it again would kill the new
process too: a poison job. Two kinds of evidence separate the cases:

* Fatal signals. `start` points Python's faulthandler at a crash log in the output folder,
  under a header naming this process. A SIGSEGV, SIGBUS, SIGABRT, SIGFPE or SIGILL leaves the
  threads' tracebacks after the header; the next start reads them before writing its own header.
* OOM kills (SIGKILL from the kernel: nothing runs in the victim). Each job records, as it
  starts, the boot id and the kernel's OOM-kill counters: /proc/vmstat `oom_kill` (the whole
  machine) and its cgroup's (v2 `memory.events`, v1 `memory.oom_control`). A counter that grew
  on the same boot means some process was OOM-killed after the job started.

Limits: an OOM kill of another process on the machine between the job's start and the next
start also counts, and fails the job; a kill -9 or power cut leaves no evidence and gets the
ordinary bounded retry (JobStore.recover_interrupted). The paths are injectable for tests.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from acestep_api.jobs.models import Job

log = logging.getLogger(__name__)

CRASH_LOG_NAME = "server-crash.log"
# The crashed process's log, kept for the operator when the next one starts its own.
PREVIOUS_CRASH_LOG_NAME = "server-crash.previous.log"
OOM_ERROR = "This job stopped the server (it ran out of memory) and was not run again."
CRASH_ERROR = "This job stopped the server (it crashed with {what}) and was not run again."
# faulthandler's names of the fatal signals -> words for the user.
_FATAL_ERRORS = {
    "Segmentation fault": "a segmentation fault",
    "Bus error": "a bus error",
    "Aborted": "an abort",
    "Floating point exception": "a floating-point exception",
    "Illegal instruction": "an illegal instruction",
}
_HEADER = "acestep-api server pid={pid} started={started!r}\n"
_HEADER_PATTERN = re.compile(r"acestep-api server pid=(\d+) started=([0-9.]+)\n")
_FATAL_LINE = re.compile(r"Fatal Python error: ([^\n]+)")
_CRASH_LOG_READ_LIMIT = 1 << 20  # tracebacks of every thread fit many times over


@dataclass(frozen=True)
class SystemFiles:
    """Where the kernel's files are (a fake tree in tests)."""

    proc: Path = Path("/proc")
    cgroup_root: Path = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class FatalCrash:
    """A process that died of a fatal signal, as its crash log tells."""

    pid: int
    started: float
    what: str  # words for the user, e.g. "a segmentation fault"


# --- reading the kernel's counters --------------------------------------------------------

def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def read_counter(path: Path, key: str) -> int | None:
    """The value of a `key value` line (vmstat, memory.events, memory.oom_control)."""
    text = _read_text(path)
    if text is None:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key and parts[1].isdigit():
            return int(parts[1])
    return None


def read_boot_id(files: SystemFiles) -> str | None:
    text = _read_text(files.proc / "sys" / "kernel" / "random" / "boot_id")
    return (text.strip() or None) if text is not None else None


def cgroup_oom_kills(files: SystemFiles) -> tuple[str, int] | None:
    """(the cgroup, its OOM-kill count) for this process: cgroup v2 first, then v1's memory
    controller; None where neither can be read (not Linux, the root cgroup, an old kernel)."""
    text = _read_text(files.proc / "self" / "cgroup")
    if text is None:
        return None
    candidates = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        relative = path.strip().lstrip("/")
        if controllers == "":  # v2: the unified hierarchy, mounted alone or under unified/
            for root in (files.cgroup_root, files.cgroup_root / "unified"):
                candidates.append((f"v2:{path.strip()}", root / relative / "memory.events"))
        elif "memory" in controllers.split(","):
            candidates.append((f"v1:{path.strip()}", files.cgroup_root / "memory" / relative / "memory.oom_control"))
    for name, counter_file in candidates:
        count = read_counter(counter_file, "oom_kill")
        if count is not None:
            return name, count
    return None


def readings(files: SystemFiles) -> dict:
    """The boot and the OOM-kill counters now (None where unreadable)."""
    cgroup = cgroup_oom_kills(files)
    return {
        "boot_id": read_boot_id(files),
        "vmstat_oom_kill": read_counter(files.proc / "vmstat", "oom_kill"),
        "cgroup": cgroup[0] if cgroup else None,
        "cgroup_oom_kill": cgroup[1] if cgroup else None,
    }


def oom_killed_since(before: dict, now: dict) -> bool:
    """Whether an OOM kill happened between two readings: a counter grew on the same boot."""
    if not before.get("boot_id") or before.get("boot_id") != now.get("boot_id"):
        return False  # a reboot resets every counter; nothing can be told
    if _grew(before.get("vmstat_oom_kill"), now.get("vmstat_oom_kill")):
        return True
    # A restarted container may get a fresh cgroup of the same name whose count starts at 0:
    # then it shrank, which says nothing (the vmstat count above still does).
    return before.get("cgroup") is not None and before.get("cgroup") == now.get("cgroup") and _grew(
        before.get("cgroup_oom_kill"), now.get("cgroup_oom_kill"))


def _grew(before, after) -> bool:
    return isinstance(before, int) and isinstance(after, int) and after > before


# --- the crash log ------------------------------------------------------------------------

def read_crash_log(path: Path) -> FatalCrash | None:
    """The process named in the crash log's header, if tracebacks follow it (it crashed)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(_CRASH_LOG_READ_LIMIT)
    except OSError:
        return None
    header = _HEADER_PATTERN.match(text)
    if header is None or not text[header.end():].strip():
        return None  # no log, someone else's file, or the process did not crash
    try:
        pid, started = int(header.group(1)), float(header.group(2))
    except ValueError:  # a damaged header names no process
        return None
    fatal = _FATAL_LINE.search(text, header.end())
    what = _FATAL_ERRORS.get(fatal.group(1).strip(), "a fatal error") if fatal else "a fatal error"
    return FatalCrash(pid=pid, started=started, what=what)


class CrashEvidence:
    """Reads what the previous process left, marks jobs as they start, and judges the jobs
    found running. Construct it before the queue recovers jobs; `start` once they are judged."""

    def __init__(self, crash_log: Path, files: SystemFiles = SystemFiles(), pid: int | None = None):
        self.crash_log = Path(crash_log)
        self.kept_crash_log = self.crash_log.with_name(PREVIOUS_CRASH_LOG_NAME)
        self.files = files
        self.pid = os.getpid() if pid is None else pid
        # pid and start time together name one process: in a container the pid repeats.
        self.started = time.time()
        self.previous = read_crash_log(self.crash_log)  # before this process writes its header
        if self.previous is not None:
            log.error("The previous server process (pid %d) died of %s; its threads' tracebacks are in %s",
                      self.previous.pid, self.previous.what, self.kept_crash_log)
        self._now: dict | None = None
        self._handle: IO[str] | None = None
        self._faulthandler_was_enabled = False

    def marker(self) -> dict:
        """What a job records as it starts running."""
        return {"pid": self.pid, "process_started": self.started, **readings(self.files)}

    def verdict(self, job: Job) -> str | None:
        """For a job found running at start: the sentence to fail it with if the previous
        process died under it, None if it was only interrupted (or nothing can be told)."""
        marker = job.run_marker
        if not isinstance(marker, dict):
            return None  # started by a version that kept no marker
        crash = self.previous
        if crash is not None and crash.pid == marker.get("pid") and crash.started == marker.get("process_started"):
            return CRASH_ERROR.format(what=crash.what)
        if self._now is None:
            self._now = readings(self.files)  # once per start: every job is compared with it
        if oom_killed_since(marker, self._now):
            return OOM_ERROR
        return None

    def start(self) -> None:
        """From now on a fatal signal leaves this process's tracebacks in the crash log."""
        if self._handle is not None:
            return
        try:
            self.crash_log.parent.mkdir(parents=True, exist_ok=True)
            if self.previous is not None:
                os.replace(self.crash_log, self.kept_crash_log)
            handle = open(self.crash_log, "w", encoding="utf-8")
            handle.write(_HEADER.format(pid=self.pid, started=self.started))
            handle.flush()  # faulthandler writes to the descriptor, after what is already there
        except OSError as error:
            log.warning("No crash log (%s): a crash under a job will not be told from a stop", error)
            return
        self._faulthandler_was_enabled = faulthandler.is_enabled()
        faulthandler.enable(file=handle, all_threads=True)
        self._handle = handle

    def stop(self) -> None:
        if self._handle is None:
            return
        faulthandler.disable()
        self._handle.close()
        self._handle = None
        if self._faulthandler_was_enabled and sys.__stderr__ is not None:
            # Someone (python -X faulthandler, pytest) had it on stderr: give it back there.
            try:
                faulthandler.enable(file=sys.__stderr__, all_threads=True)
            except (OSError, ValueError, AttributeError):
                pass
