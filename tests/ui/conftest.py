"""One demo API process for the UI tests (starting one costs seconds, each job about ten)."""

from __future__ import annotations

import pytest

from tests.e2e.server_process import ServerProcess, free_port


@pytest.fixture(scope="package")
def demo_api_port() -> int:
    """Chosen before the API starts, so a UI can be started first and pointed at it."""
    return free_port()


@pytest.fixture(scope="package")
def demo_api(tmp_path_factory, demo_api_port):
    server = ServerProcess(tmp_path_factory.mktemp("ui-demo-api"), port=demo_api_port).start()
    yield server
    server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each test's call report on its item, so fixtures can tell a failure at teardown."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report
