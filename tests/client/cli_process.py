"""Runs `python -m acestep_api generate ...` as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli_env(**extra: str) -> dict:
    """The caller's environment without an API key of its own, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if key != "ACESTEP_API_KEY"}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def generate_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "acestep_api", "generate", *map(str, args)]


def run_generate(*args: str | Path, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(generate_command(*args), capture_output=True, text=True,
                          env=env or cli_env(), timeout=timeout)
