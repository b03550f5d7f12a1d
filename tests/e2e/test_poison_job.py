"""A job that crashes the server is failed at the next start, not run again (issue #10, 1).

Real server processes on one output folder: the first dies inside the poison job's generate
call (a real SIGSEGV, or an OOM kill: SIGKILL with the kernel's OOM counter raised in a fake
/proc); the second must fail that job with its sentence and run the job queued behind it.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from acestep_api.jobs.crash_evidence import CRASH_ERROR, OOM_ERROR
from acestep_api.jobs.models import JobStatus
from acestep_api.jobs.store import JobStore
from tests.e2e.crashing_server import ATTEMPTS_FILE, CRASH_PROMPT, GO_FILE, OOM_PROMPT
from tests.e2e.server_process import ServerProcess
from tests.e2e.test_restart_durability import query, submit, wait_finished, wait_until_running
from tests.jobs.test_crash_evidence import FakeKernel


class CrashingServerProcess(ServerProcess):
    def __init__(self, output_dir: Path, fake_kernel: Path):
        super().__init__(output_dir)
        self.fake_kernel = fake_kernel

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.e2e.crashing_server", "--port", str(self.port),
                "--output-dir", str(self.output_dir), "--fake-kernel", str(self.fake_kernel)]


def wait_exit(server: ServerProcess, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return server.proc.returncode
        time.sleep(0.1)
    server.kill()
    raise AssertionError(f"the server did not die:\n{server.log()}")


@pytest.mark.parametrize(("prompt", "death", "sentence"), [
    (CRASH_PROMPT, signal.SIGSEGV,
     "This job stopped the server (it crashed with a segmentation fault) and was not run again."),
    (OOM_PROMPT, signal.SIGKILL, "This job stopped the server (it ran out of memory) and was not run again."),
], ids=["segfault", "oom-kill"])
def test_a_job_that_killed_the_server_fails_at_restart_and_the_next_job_runs(tmp_path, prompt, death, sentence):
    assert sentence in (CRASH_ERROR.format(what="a segmentation fault"), OOM_ERROR)
    kernel = FakeKernel(tmp_path / "kernel")
    kernel.set(vmstat=3)
    output_dir = tmp_path / "outputs"
    server = CrashingServerProcess(output_dir, tmp_path / "kernel").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            poison = submit(client, {"prompt": prompt, "audio_duration": 10, "batch_size": 1})
            wait_until_running(client, poison)
            following = submit(client, {"prompt": "a song after the crash", "audio_duration": 10, "batch_size": 1})
            (output_dir / GO_FILE).touch()
        assert wait_exit(server) == -death, server.log()
    finally:
        server.kill()

    server = CrashingServerProcess(output_dir, tmp_path / "kernel").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            item = query(client, poison)
            assert item["status"] == 2, item
            (entry,) = json.loads(item["result"])
            assert entry["error"] == sentence
            (done,) = wait_finished(client, [following])
            assert done["status"] == 1 and json.loads(done["result"])[0]["file"]
            assert client.get("/health").status_code == 200  # the poison job did not run again
    finally:
        server.stop()
    assert server.proc.returncode is not None and server.proc.returncode != -death

    # Run once, in the process it killed; never in the second.
    assert len((output_dir / ATTEMPTS_FILE).read_text().split()) == 1
    store = JobStore(output_dir / "jobs.sqlite3")
    try:
        job = store.get(poison)
        assert job.status is JobStatus.FAILED and job.attempts == 1
        assert store.get(following).status is JobStatus.SUCCEEDED
    finally:
        store.close()
