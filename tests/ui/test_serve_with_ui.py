"""`acestep-api serve --demo --ui`: the API and the UI from one process."""

from __future__ import annotations

import httpx

from tests.e2e.server_process import free_port
from tests.ui.ui_process import UiProcess, wait_until_answering


def test_one_process_serves_the_api_and_the_ui(tmp_path):
    api_port, ui_port = free_port(), free_port()
    process = UiProcess(
        ["serve", "--demo", "--ui", "--host", "127.0.0.1", "--port", str(api_port), "--output-dir", str(tmp_path)],
        tmp_path / "serve.log",
        env={"ACESTEP_UI_HOST": "127.0.0.1", "ACESTEP_UI_PORT": str(ui_port)},
    )
    process.port = ui_port
    try:
        process.start(timeout=180)  # returns once the UI answers
        wait_until_answering(f"http://127.0.0.1:{api_port}/health", process.proc, process.log_path, 180)
        page = httpx.get(process.url + "/", timeout=10)
        assert page.status_code == 200 and "ACE-Step 1.5" in page.text
        health = httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=10).json()
        assert health["data"]["status"] == "ok" and health["data"]["demo"] is True
        assert f"for the API at http://127.0.0.1:{api_port}" in process.log()
    finally:
        process.stop()
    assert process.proc.returncode is not None
