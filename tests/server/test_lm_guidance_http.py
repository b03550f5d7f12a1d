"""A server whose 5 Hz LM has no classifier-free guidance (the vllm backend) refuses
lm_cfg_scale other than 1 with a 400 before anything is queued, and gives 1 to a request that
leaves it unset; it decides from what the engine serves (ServedModels.lm_guidance), never from
the backend itself. The engine here is the tiny one with the tiny LM, described as vllm's."""

from __future__ import annotations

import dataclasses

import pytest

from acestep_api.jobs.models import JobStatus
from tests.server.conftest import serve, wait_finished

pytestmark = pytest.mark.anyio

FULL_METADATA = {"bpm": 100, "key_scale": "C major", "time_signature": "4", "audio_duration": 10}


class UnguidedLMEngine:
    """The tiny LM engine, served as one whose LM runs on a backend without guidance."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def served(self):
        return dataclasses.replace(self._inner.served(), lm_backend="vllm", lm_guidance=False)


@pytest.fixture
async def unguided(settings, lm_engine):
    async with serve(settings, UnguidedLMEngine(lm_engine), start_worker=False) as (app, client):
        yield app, client


def queued(app) -> int:
    return app.state.queue.stats()["jobs"]["total"]


@pytest.mark.parametrize("route", ["/release_task", "/v1/music/generate"])
@pytest.mark.parametrize("body", [{"thinking": True}, {}], ids=["codes", "metadata"])
async def test_guidance_is_refused_before_queueing(unguided, route, body):
    app, client = unguided
    response = await client.post(route, json={"prompt": "x", "lm_cfg_scale": 2.0, **body})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"] if "detail" in response.json() else response.json()["error"]
    assert detail.startswith("lm_cfg_scale must be 1 on this server (got 2)")
    assert "vllm" in detail and "no classifier-free guidance" in detail
    assert queued(app) == 0


async def test_scale_one_and_unset_are_queued_unset_as_one(unguided):
    app, client = unguided
    one = await client.post("/release_task", json={"prompt": "x", "thinking": True, "lm_cfg_scale": 1})
    unset = await client.post("/release_task", json={"prompt": "x", "thinking": True})
    assert (one.status_code, unset.status_code) == (200, 200), (one.text, unset.text)
    for response in (one, unset):
        job = app.state.queue.get(response.json()["data"]["task_id"])
        assert job.request.lm_cfg_scale == 1.0


async def test_guidance_the_lm_would_not_use_is_no_reason_to_refuse(unguided):
    """Every metadata given and no codes asked for: the LM does not sample, the scale stays."""
    app, client = unguided
    response = await client.post("/release_task", json={"prompt": "x", "lm_cfg_scale": 3.0, **FULL_METADATA})
    assert response.status_code == 200, response.text
    assert app.state.queue.get(response.json()["data"]["task_id"]).request.lm_cfg_scale == 3.0


async def test_a_guided_lm_takes_any_scale_and_keeps_the_default(settings, lm_engine):
    async with serve(settings, lm_engine, start_worker=False) as (app, client):
        assert app.state.served.lm_guidance is True and app.state.served.lm_backend == "transformers"
        chosen = await client.post("/release_task", json={"prompt": "x", "thinking": True, "lm_cfg_scale": 2.0})
        default = await client.post("/release_task", json={"prompt": "x", "thinking": True})
        scales = [app.state.queue.get(r.json()["data"]["task_id"]).request.lm_cfg_scale for r in (chosen, default)]
        assert scales == [2.0, 2.5]


async def test_an_unguided_song_runs_to_the_end(settings, lm_engine):
    """The LM plans with scale 1 (its unconditional rows are not run) and the song is written."""
    async with serve(settings, UnguidedLMEngine(lm_engine)) as (app, client):
        body = {"prompt": "x", "thinking": True, "audio_duration": 10, "batch_size": 1, "inference_steps": 2,
                "audio_format": "wav"}
        response = await client.post("/release_task", json=body)
        job = await wait_finished(app, response.json()["data"]["task_id"])
        assert job.status is JobStatus.SUCCEEDED, job.error
        assert job.request.lm_cfg_scale == 1.0 and job.result.timings.lm_codes is not None
