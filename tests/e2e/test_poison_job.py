"""A job that crashes the server is failed at the next start, not run again (issue #10, 1).

Real server processes on one output folder: the first dies of SIGSEGV inside the poison job's
generate call; the second must fail that job with a sentence and run the job queued behind it.
"""

from __future__ import annotations

import json
import signal
import sys
import time

import httpx

from acestep_api.jobs.crash_evidence import CRASH_ERROR
from acestep_api.jobs.models import JobStatus
from acestep_api.jobs.store import JobStore
from tests.e2e.crashing_server import ATTEMPTS_FILE, CRASH_PROMPT, GO_FILE
from tests.e2e.server_process import ServerProcess
from tests.e2e.test_restart_durability import query, submit, wait_finished, wait_until_running


class CrashingServerProcess(ServerProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.e2e.crashing_server",
                "--port", str(self.port), "--output-dir", str(self.output_dir)]


def wait_exit(server: ServerProcess, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return server.proc.returncode
        time.sleep(0.1)
    server.kill()
    raise AssertionError(f"the server did not crash:\n{server.log()}")


def test_a_job_that_crashed_the_server_fails_at_restart_and_the_next_job_runs(tmp_path):
    server = CrashingServerProcess(tmp_path).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            poison = submit(client, {"prompt": CRASH_PROMPT, "audio_duration": 10, "batch_size": 1})
            wait_until_running(client, poison)
            following = submit(client, {"prompt": "a song after the crash", "audio_duration": 10, "batch_size": 1})
            (tmp_path / GO_FILE).touch()
        assert wait_exit(server) == -signal.SIGSEGV, server.log()
    finally:
        server.kill()

    server = CrashingServerProcess(tmp_path).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            item = query(client, poison)
            assert item["status"] == 2, item
            (entry,) = json.loads(item["result"])
            assert entry["error"] == CRASH_ERROR.format(what="a segmentation fault")
            assert entry["error"] == ("This job stopped the server (it crashed with a segmentation fault) "
                                      "and was not run again.")
            (done,) = wait_finished(client, [following])
            assert done["status"] == 1 and json.loads(done["result"])[0]["file"]
            assert client.get("/health").status_code == 200  # the poison job did not run again
    finally:
        server.stop()
    assert server.proc.returncode is not None and server.proc.returncode != -signal.SIGSEGV

    # Run once, in the process it killed; never in the second.
    assert len((tmp_path / ATTEMPTS_FILE).read_text().split()) == 1
    store = JobStore(tmp_path / "jobs.sqlite3")
    try:
        job = store.get(poison)
        assert job.status is JobStatus.FAILED and job.attempts == 1
        assert store.get(following).status is JobStatus.SUCCEEDED
    finally:
        store.close()
