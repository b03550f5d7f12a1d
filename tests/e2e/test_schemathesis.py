"""schemathesis over the server's own /openapi.json, against a real demo server process.

Phases examples, coverage, fuzzing (property-based, --max-examples per operation) and
stateful (the document's links: release_task -> query_result / cancel_task, music/generate ->
jobs/{id}); checks: no 5xx, every status and every JSON answer as the document says, and the
error-hygiene rule (schemathesis_hooks.py). Configuration: schemathesis.toml beside this file.
Seeded and without an example database, so each run sends the same requests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
ST = Path(sys.executable).with_name("st")
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,answers_show_no_internals"
MAX_EXAMPLES = 10
# Jobs stay cheap (one item each) and the queue never fills, so every phase's submissions are
# accepted and the stateful phase has ids to follow (the 429 is tested in test_openapi.py); the
# synchronous routes give up after 3 s (504, allowed there by schemathesis.toml) rather than
# wait behind the queue.
SERVER_ENV = {"ACESTEP_BATCH_MAX": "1", "ACESTEP_QUEUE_MAXSIZE": "100000", "ACESTEP_GENERATION_TIMEOUT": "3"}
RUN_TIMEOUT = 600


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess(tmp_path_factory.mktemp("schemathesis"), env=SERVER_ENV).start()
    yield process
    process.stop()


def test_the_server_keeps_to_its_openapi_document(server, tmp_path):
    command = [
        str(ST), "--config-file", str(CONFIG), "--no-color", "run", f"{server.url}/openapi.json",
        "--phases", "examples,coverage,fuzzing,stateful", "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES), "--seed", "1", "--generation-database", "none",
        "--workers", "1", "--request-timeout", "30",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-12000:]
    assert server.proc.poll() is None, "the server died during the run:\n" + server.log()
    # It really ran: every operation of the document was tested, and links were followed.
    operations = re.search(r"Operations:\s+(\d+) selected / (\d+) total", output)
    assert operations and operations.group(1) == operations.group(2) and int(operations.group(2)) >= 17, output
    assert re.search(r"Tested:\s+(\d+)", output).group(1) == operations.group(2), output
    links = re.search(r"API Links:\s+(\d+) covered", output)
    assert links and int(links.group(1)) >= 3, output
