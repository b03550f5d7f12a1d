"""`acestep-api ui` arguments, and where the UI finds an API on this machine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from acestep_api.cli import build_parser
from acestep_api.ui.command import local_api_url


@pytest.mark.parametrize("host, url", [
    ("0.0.0.0", "http://127.0.0.1:8001"),
    ("", "http://127.0.0.1:8001"),
    ("::", "http://127.0.0.1:8001"),
    ("127.0.0.1", "http://127.0.0.1:8001"),
    ("10.1.2.3", "http://10.1.2.3:8001"),
    ("::1", "http://[::1]:8001"),
    ("api.internal", "http://api.internal:8001"),
])
def test_local_api_url(host, url):
    assert local_api_url(host, 8001) == url


def test_ui_arguments():
    args = build_parser().parse_args(["ui", "--api-url", "http://gpu:8001", "--host", "0.0.0.0", "--port", "9000",
                                      "--api-key", "k"])
    assert (args.command, args.api_url, args.host, args.port, args.api_key) == ("ui", "http://gpu:8001", "0.0.0.0",
                                                                                 9000, "k")
    defaults = build_parser().parse_args(["ui"])
    assert defaults.api_url is None and defaults.port is None and defaults.api_key is None


def test_the_command_line_does_not_import_gradio():
    # `acestep-api serve` and `generate` must not pay for (or need) the UI's dependencies.
    code = "import sys; from acestep_api.cli import build_parser; build_parser(); print('gradio' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
