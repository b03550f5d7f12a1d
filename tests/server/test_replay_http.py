"""Exact replay through HTTP: a finished song queued again from its stored resolved request
makes the same files (by hash) without the 5 Hz LM, and names its origin."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import pytest

from tests.server.conftest import serve

pytestmark = pytest.mark.anyio


class CountingLM:
    """The tiny engine with the LM; counts the planner's calls."""

    def __init__(self, inner):
        self._inner = inner
        self.plans = 0
        planner = inner.planner
        original = planner.plan

        def plan(*args, **kwargs):
            self.plans += 1
            return original(*args, **kwargs)

        planner.plan = plan

    def __getattr__(self, name):
        return getattr(self._inner, name)


async def finished(client, task_id: str) -> list[dict]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        item = (await client.post("/query_result", json={"task_id_list": [task_id]})).json()["data"][0]
        if item["status"] != 0:
            assert item["status"] == 1, item
            return json.loads(item["result"])
        await asyncio.sleep(0.05)
    raise AssertionError("the job did not finish")


async def hashes(client, elements: list[dict]) -> list[str]:
    return [hashlib.sha256((await client.get(element["file"])).content).hexdigest() for element in elements]


@pytest.fixture
async def counted(settings, lm_engine):
    import copy

    engine = copy.copy(lm_engine)
    engine.planner = copy.copy(lm_engine.planner)
    counting = CountingLM(engine)
    async with serve(settings, counting) as (app, client):
        yield app, client, counting


@pytest.mark.parametrize("audio_format", ["wav", "flac"])
async def test_a_replay_makes_the_same_files_without_the_lm(counted, audio_format):
    app, client, engine = counted
    response = await client.post("/release_task", json={
        "prompt": "a calm piano piece", "thinking": True, "audio_duration": 10, "batch_size": 2,
        "audio_format": audio_format})
    original_id = response.json()["data"]["task_id"]
    original = await finished(client, original_id)
    assert engine.plans == 1 and len(original) == 2

    answer = (await client.post(f"/v1/jobs/{original_id}/replay", json={})).json()
    assert answer["status"] == "queued"
    replayed = await finished(client, answer["job_id"])
    assert engine.plans == 1  # the LM did not run again
    assert await hashes(client, replayed) == await hashes(client, original)
    assert [e["replay_of"] for e in replayed] == [original_id] * 2
    assert all("replay_of" not in e for e in original)
    assert [e["seed_value"] for e in replayed] == [e["seed_value"] for e in original]


async def test_a_replay_may_change_the_format_only(counted):
    import io

    import soundfile

    app, client, engine = counted
    response = await client.post("/release_task", json={"prompt": "x", "audio_duration": 10, "batch_size": 1,
                                                        "audio_format": "wav", "thinking": True})
    original_id = response.json()["data"]["task_id"]
    [original] = await finished(client, original_id)
    answer = (await client.post(f"/v1/jobs/{original_id}/replay", json={"audio_format": "flac"})).json()
    [replayed] = await finished(client, answer["job_id"])
    assert replayed["file"].endswith("flac") or ".flac" in replayed["file"]
    wav, _ = soundfile.read(io.BytesIO((await client.get(original["file"])).content))
    flac, _ = soundfile.read(io.BytesIO((await client.get(replayed["file"])).content))
    # The same song in another container: equal but for the two formats' own quantisation.
    assert wav.shape == flac.shape and abs(wav - flac).max() <= 2 / 32768


async def test_what_cannot_be_replayed(counted):
    app, client, engine = counted
    assert (await client.post("/v1/jobs/no-such-job/replay", json={})).status_code == 404
    # A job still waiting (the worker is busy with nothing; stop it to keep the job queued).
    await app.state.worker.stop()
    queued = (await client.post("/release_task", json={"prompt": "x", "audio_duration": 10})).json()["data"]["task_id"]
    refused = await client.post(f"/v1/jobs/{queued}/replay", json={})
    assert refused.status_code == 409 and "queued" in refused.json()["detail"]
    bad = await client.post(f"/v1/jobs/{queued}/replay", json={"audio_format": "midi"})
    assert bad.status_code in (400, 409)


@pytest.mark.parametrize("route,queued_id", [("/release_task", lambda a: a["data"]["task_id"]),
                                              ("/v1/music/generate", lambda a: a["job_id"])])
async def test_replay_of_on_a_submission_replays_in_the_format_asked(counted, route, queued_id):
    app, client, engine = counted
    response = await client.post("/release_task", json={"prompt": "x", "audio_duration": 10, "batch_size": 1,
                                                        "audio_format": "flac", "thinking": True})
    original_id = response.json()["data"]["task_id"]
    [original] = await finished(client, original_id)
    # Every other field of the body is ignored: the replay is the stored request.
    answer = await client.post(route, json={"replay_of": original_id, "prompt": "something else",
                                            "audio_format": "flac"})
    assert answer.status_code == 200, answer.text
    [replayed] = await finished(client, queued_id(answer.json()))
    assert engine.plans == 1 and replayed["replay_of"] == original_id and replayed["prompt"] == original["prompt"]
    assert await hashes(client, [replayed]) == await hashes(client, [original])
    missing = await client.post(route, json={"replay_of": "no-such-job"})
    assert missing.status_code == 404
