"""The processes of a distributed deployment, for the end-to-end tests and the benchmark: API
replicas (`acestep-api serve`) and GPU workers (`acestep-api worker`) on the demo checkpoints,
all on one PostgreSQL and one output folder."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg

from tests.e2e.server_process import ServerProcess


class ReplicaProcess(ServerProcess):
    """`acestep-api serve --demo` with ACESTEP_DATABASE_URL: the API only, no model loaded."""

    def __init__(self, output_dir: Path, database_url: str, env: dict | None = None):
        super().__init__(output_dir, env={"ACESTEP_DATABASE_URL": database_url, **(env or {})})


class WorkerProcess(ServerProcess):
    """`acestep-api worker --demo`: loads the demo models and takes jobs; no HTTP port."""

    def __init__(self, output_dir: Path, database_url: str, name: str, env: dict | None = None):
        super().__init__(output_dir, env={"ACESTEP_DATABASE_URL": database_url, **(env or {})})
        self.name = name
        self.database_url = database_url
        self.log_path = output_dir / f"worker-{name}.log"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "acestep_api", "worker", "--demo", "--output-dir", str(self.output_dir),
                "--name", self.name]

    def start(self, timeout: float = 180.0) -> "WorkerProcess":
        self.output_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        return self

    def wait_registered(self, timeout: float = 180.0) -> "WorkerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                if conn.execute("SELECT 1 FROM acestep_workers WHERE name = %s", (self.name,)).fetchone():
                    return self
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"worker {self.name} did not register within {timeout}s:\n{self.log()}")
