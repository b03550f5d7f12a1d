"""Running `python -m acestep_api.serverless.handler` as the runpod SDK runs it locally."""

from __future__ import annotations

import ast
import base64
import os
import re
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HANDLER = [sys.executable, "-m", "acestep_api.serverless.handler"]
RESULT_LINE = re.compile(r"^INFO\s*\| Job result: (.*)$", re.MULTILINE)
TRUNCATED = re.compile(r"\n\.\.\.TRUNCATED \d+ CHARACTERS\.\.\.\n")


def worker_env(workdir: Path, **extra: str) -> dict:
    """The demo models, files under `workdir`, the SDK's INFO log (the result line, not the
    debug dump of the whole output)."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACESTEP_DEMO": "1",
        "ACESTEP_OUTPUT_DIR": str(workdir / "outputs"),
        "RUNPOD_LOG_LEVEL": "INFO",
        **extra,
    }


def start_test_input(workdir: Path, job: str, **env: str) -> subprocess.Popen:
    """`--test_input`: the SDK runs the one job, logs its result and exits (1 on an error)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([*HANDLER, "--test_input", job], cwd=workdir, env=worker_env(workdir, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@dataclass
class LoggedResult:
    """The SDK's `Job result: {...}` line. It prints the dict's repr and keeps only the first
    and last 2048 characters of a longer message."""

    head: str
    tail: str
    value: dict | None  # the whole dict, when it was short enough to print whole


def logged_result(stdout: str) -> LoggedResult:
    match = RESULT_LINE.search(stdout)
    assert match, f"no result line in the worker's output:\n{stdout[-3000:]}"
    start = match.start(1)
    message = stdout[start:stdout.index("\nINFO   | Local testing complete", start)]
    parts = TRUNCATED.split(message)
    if len(parts) == 1:
        return LoggedResult(message, message, ast.literal_eval(message))
    return LoggedResult(parts[0], parts[1], None)


def wav_header(prefix_base64: str) -> dict:
    """The format and data size of a 16-bit PCM WAV from the start of its base64."""
    usable = len(prefix_base64) // 4 * 4
    data = base64.b64decode(prefix_base64[:usable])
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", data[:16]
    offset, header = 12, {}
    while offset + 8 <= len(data):
        chunk, size = data[offset:offset + 4], struct.unpack("<I", data[offset + 4:offset + 8])[0]
        if chunk == b"fmt ":
            _, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[offset + 8:offset + 24])
            header.update(channels=channels, sample_rate=rate, bits=bits)
        if chunk == b"data":
            header["data_bytes"] = size
            return header
        offset += 8 + size + (size & 1)
    raise AssertionError("no data chunk in the WAV's first bytes")
