"""Fixtures shared by the whole suite: tiny random checkpoints and an engine on them.

Both are session-scoped: the checkpoints are written once and the models loaded once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.answer_hygiene import SUITE_LOG, install

TINY_DIT_MODELS = ["acestep-v15-turbo", "acestep-v15-base"]

# Test modules that start real processes (servers, workers, the CLI, a browser): the `e2e` tier,
# or `browser` for the one that drives Chromium. Everything under tests/e2e/ is e2e too.
E2E_MODULES = {
    "tests/client/test_api_client.py",
    "tests/client/test_generate.py",
    "tests/serverless/test_local_api_server.py",
    "tests/serverless/test_local_test_input.py",
    "tests/ui/test_serve_with_ui.py",
    "tests/ui/test_command.py",
}
BROWSER_MODULES = {"tests/ui/test_browser.py"}


def pytest_collection_modifyitems(config, items):
    root = Path(str(config.rootpath))
    for item in items:
        module = Path(str(item.path)).relative_to(root).as_posix()
        if module in BROWSER_MODULES:
            item.add_marker(pytest.mark.browser)
        elif module in E2E_MODULES or module.startswith("tests/e2e/"):
            item.add_marker(pytest.mark.e2e)
        elif "postgres" in getattr(item, "fixturenames", ()) or "[postgres]" in item.name:
            # They start a real PostgreSQL server process (tests/postgres_server.py).
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint dir in the official layout (turbo, base, vae, text encoder, 5 Hz LM, demo marker)."""
    from acestep_api.engine.tiny import write_tiny_checkpoints

    return write_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory):
    """A MusicEngine on CPU, fp32, with the tiny turbo DiT as primary and the tiny base DiT second,
    and no 5 Hz LM (the DiT-only path: requests run as the user wrote them)."""
    from acestep_api.engine.engine import MusicEngine

    return MusicEngine.from_checkpoints(
        tiny_checkpoints,
        TINY_DIT_MODELS,
        output_dir=tmp_path_factory.mktemp("engine-outputs"),
        device="cpu",
        init_llm="off",
    )


@pytest.fixture(scope="session")
def tiny_lm_engine(tiny_engine, tiny_checkpoints: Path):
    """The same engine with the tiny 5 Hz LM loaded (it shares the DiT, VAE and text encoder)."""
    import copy

    from acestep_api.engine.lm.planner import DEMO_TEXT_LIMITS, load_planner

    planner, error = load_planner(tiny_checkpoints, "acestep-5Hz-lm-0.6B", mode="on", device="cpu", duration_max=30,
                                  limits=DEMO_TEXT_LIMITS)
    assert planner is not None, error
    engine = copy.copy(tiny_engine)
    engine.planner, engine.lm_model, engine.lm_error = planner, planner.model_name, None
    return engine


@pytest.fixture(scope="session")
def tiny_lm_planner(tiny_lm_engine):
    return tiny_lm_engine.planner


install(SUITE_LOG)


@pytest.fixture(autouse=True)
def answers_show_no_internals():
    """Every test's HTTP answers obey the error-hygiene rule (tests/answer_hygiene.py)."""
    SUITE_LOG.take()
    yield
    found = SUITE_LOG.take()
    assert not found, "answers that show internals:\n" + "\n".join(found)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/postgres_server.py), with a template
    database already migrated; skipped where PostgreSQL is not installed (scripts/test.sh
    installs it)."""
    from tests.postgres_server import PostgresServer, postgres_bin

    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (scripts/test.sh installs it)")
    from acestep_api.jobs.distributed.schema import migrate

    import shutil
    import tempfile

    # Outside pytest's temporary tree, whose folders only root may enter.
    root = Path(tempfile.mkdtemp(prefix="acestep-pg-"))
    server = PostgresServer(root / "pg").start()
    try:
        server.template = server.create_database()
        migrate(server.url(server.template))
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres) -> str:
    """A fresh, migrated database of its own for one test."""
    return postgres.url(postgres.create_database(template=postgres.template))
