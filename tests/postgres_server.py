"""A real PostgreSQL for the tests: initdb into a temporary folder, pg_ctl on a free loopback
port, stopped at the end. PostgreSQL refuses to run as root, so under root the folder is
handed to an unprivileged user (`postgres` when it exists, else one created with useradd)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

from tests.e2e.server_process import free_port

SERVICE_USER = "acestep-pg"


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian's layout), or one on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _service_user() -> str | None:
    """None when not root (the server runs as the current user)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", SERVICE_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", SERVICE_USER], check=True)
    return SERVICE_USER


class PostgresServer:
    def __init__(self, root: Path):
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (no initdb); scripts/test.sh installs it")
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.user = _service_user()

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True)

    def start(self) -> "PostgresServer":
        self.root.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            # The folder above must be passable for the service user.
            os.chmod(self.root.parent, os.stat(self.root.parent).st_mode | 0o711)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        self.restart()
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, template: str | None = None) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            clause = f" TEMPLATE {template}" if template else ""
            conn.execute(f"CREATE DATABASE {name}{clause}")
        return name

    def stop(self, mode: str = "fast") -> None:
        result = self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {result.stdout} {result.stderr}")

    def restart(self) -> None:
        """Start again after `stop` (same data, same port)."""
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=200")
        result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
                           "-w", "-t", "30", "start", check=False)
        if result.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"pg_ctl start failed: {result.stdout} {result.stderr}\n{log}")
