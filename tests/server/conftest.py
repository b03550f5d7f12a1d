"""An app on the tiny engine, served in-process through httpx's ASGI transport with its
lifespan running (store, queue and worker really open)."""

from __future__ import annotations

import asyncio
import copy
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from acestep_api.server.app import create_app
from acestep_api.settings import Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, output_dir=tmp_path / "outputs", checkpoint_dir=tmp_path / "none")


@pytest.fixture
def engine(tiny_engine, settings: Settings):
    # The models are shared with the session fixture; only the output folder is this test's,
    # the server's audio folder, as in a real deployment.
    engine = copy.copy(tiny_engine)
    engine.output_dir = settings.audio_dir
    return engine


@pytest.fixture
def lm_engine(tiny_lm_engine, settings: Settings):
    """The tiny engine with the tiny 5 Hz LM, writing to this test's audio folder."""
    engine = copy.copy(tiny_lm_engine)
    engine.output_dir = settings.audio_dir
    return engine


@asynccontextmanager
async def serve(settings: Settings, engine, *, start_worker: bool = True):
    app = create_app(settings, engine, start_worker=start_worker)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client


@pytest.fixture
async def idle(settings, engine):
    """App whose worker is not started: submitted jobs stay queued."""
    async with serve(settings, engine, start_worker=False) as (app, client):
        yield app, client


@pytest.fixture
async def live(settings, engine):
    """App with its worker running on the tiny engine."""
    async with serve(settings, engine) as (app, client):
        yield app, client


async def wait_finished(app, task_id: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = app.state.queue.get(task_id)
        if job is not None and job.status.value in ("succeeded", "failed"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {task_id} did not finish within {timeout}s")
