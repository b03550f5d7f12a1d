"""Demo servers as real processes, started once for the tests of the client package: one open,
as the community clients expect, and one that requires an API key. Both start together."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.server_process import ServerProcess

API_KEY = "client-test-key"


def server_process(output_dir, api_key: str | None) -> ServerProcess:
    server = ServerProcess(output_dir)
    # An empty ACESTEP_API_KEY would count as set: drop whatever the caller's shell has.
    server.env.pop("ACESTEP_API_KEY", None)
    if api_key is not None:
        server.env["ACESTEP_API_KEY"] = api_key
    return server


@pytest.fixture(scope="package")
def demo_servers(tmp_path_factory):
    servers = (server_process(tmp_path_factory.mktemp("open-server"), api_key=None),
               server_process(tmp_path_factory.mktemp("keyed-server"), api_key=API_KEY))
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            for started in [pool.submit(server.start) for server in servers]:
                started.result()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="package")
def open_server(demo_servers) -> ServerProcess:
    return demo_servers[0]


@pytest.fixture(scope="package")
def keyed_server(demo_servers) -> ServerProcess:
    return demo_servers[1]
