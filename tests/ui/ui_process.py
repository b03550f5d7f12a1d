"""Runs `acestep-api ui` (or `serve --demo --ui`) as a real process on free loopback ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.server_process import free_port

# No internet here: nothing in the UI process may try to reach it.
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def wait_until_answering(url: str, proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{read_log(log_path)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{read_log(log_path)}")


def read_log(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


class UiProcess:
    """`python -m acestep_api <argv>` in its own process group, with its output in a log file."""

    def __init__(self, argv: list[str], log_path: Path, env: dict | None = None):
        self.argv = argv
        self.log_path = log_path
        self.env = {**os.environ, **OFFLINE_ENV, **(env or {})}
        self.proc: subprocess.Popen | None = None

    @classmethod
    def ui(cls, api_url: str, workdir: Path, port: int | None = None, extra: list[str] = ()) -> "UiProcess":
        port = port or free_port()
        process = cls(["ui", "--api-url", api_url, "--host", "127.0.0.1", "--port", str(port), *extra],
                      workdir / f"ui-{port}.log")
        process.port = port
        return process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> "UiProcess":
        """Start the process without waiting for it to answer."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "acestep_api", *self.argv], stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        return self

    def wait(self, timeout: float = 120.0) -> "UiProcess":
        wait_until_answering(self.url + "/", self.proc, self.log_path, timeout)
        return self

    def start(self, timeout: float = 120.0) -> "UiProcess":
        return self.launch().wait(timeout)

    def log(self) -> str:
        return read_log(self.log_path)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
