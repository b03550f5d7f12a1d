"""/health, /v1/stats, /v1/models, /v1/model_inventory, samples (their examples in
docs/wire-contract.md#conformance-examples)."""

from __future__ import annotations

import pytest

from acestep_api.server.routes.samples import load_examples
from tests.server.conftest import serve

pytestmark = pytest.mark.anyio


async def test_e1_health(idle):
    _, client = idle
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["data", "code", "error", "timestamp", "extra"]
    data = body["data"]
    assert (data["status"], data["service"], data["version"]) == ("ok", "ACE-Step API", "1.0")
    assert data["models_initialized"] is True and data["llm_initialized"] is False
    assert data["loaded_model"] == "acestep-v15-turbo" and data["loaded_lm_model"] is None
    # The tiny checkpoints carry the demo marker: the server must say its audio is noise.
    assert data["demo"] is True and "noise" in data["note"]


async def test_health_without_demo_has_no_note(settings, engine):
    engine.is_demo = False
    async with serve(settings, engine, start_worker=False) as (_, client):
        data = (await client.get("/health")).json()["data"]
    assert data["demo"] is False and "note" not in data


async def test_e14_stats(idle):
    _, client = idle
    fresh = (await client.get("/v1/stats")).json()
    assert fresh["data"] == {"jobs": {"total": 0, "queued": 0, "running": 0, "succeeded": 0, "failed": 0},
                             "queue_size": 0, "queue_maxsize": 200, "avg_job_seconds": 5.0}
    await client.post("/release_task", json={"prompt": "x"})
    data = (await client.get("/v1/stats")).json()["data"]
    assert data["jobs"]["total"] == 1 and data["jobs"]["queued"] == 1 and data["queue_size"] == 1


async def test_e15_models_openrouter_list(idle):
    _, client = idle
    response = await client.get("/v1/models")
    body = response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["acestep/acestep-v15-turbo", "acestep/acestep-v15-base"]
    model = body["data"][0]
    assert model["name"] == "ACE-Step acestep-v15-turbo"
    assert isinstance(model["created"], int)
    assert model["input_modalities"] == ["text", "audio"] and model["output_modalities"] == ["audio", "text"]
    assert model["context_length"] == 4096 and model["max_output_length"] == 300
    assert model["pricing"] == {"prompt": "0", "completion": "0", "request": "0", "image": "0"}
    assert model["description"] == "AI music generation model" and model["architecture"] is None


async def test_model_inventory(idle):
    _, client = idle
    body = (await client.get("/v1/model_inventory")).json()
    assert body["code"] == 200
    data = body["data"]
    assert data["default_model"] == "acestep-v15-turbo"
    turbo, base = data["models"]
    assert turbo["name"] == "acestep-v15-turbo" and turbo["is_default"] is True and turbo["is_loaded"] is True
    assert turbo["supported_task_types"] == ["text2music", "repaint", "cover", "cover-nofsq"]
    assert base["is_default"] is False and "lego" in base["supported_task_types"]
    assert data["llm_initialized"] is False and data["loaded_lm_model"] is None
    assert data["lm_models"] == [{"name": "acestep-5Hz-lm-0.6B", "is_loaded": False}]


@pytest.mark.parametrize("body,keys", [
    ({"sample_type": "simple_mode"}, {"description", "instrumental", "vocal_language"}),
    ({}, {"description", "instrumental", "vocal_language"}),
    ({"sample_type": "custom"}, {"caption", "lyrics", "bpm", "duration", "keyscale", "language", "timesignature"}),
])
async def test_e16_random_sample(idle, body, keys):
    _, client = idle
    response = await client.post("/create_random_sample", json=body)
    envelope = response.json()
    assert envelope["code"] == 200
    assert keys <= set(envelope["data"])


async def test_random_sample_is_drawn_from_every_packaged_file(idle):
    _, client = idle
    descriptions = {example["description"] for example in load_examples("simple_mode")}
    assert len(descriptions) >= 8
    seen = set()
    for _ in range(60):
        seen.add((await client.post("/create_random_sample", json={})).json()["data"]["description"])
    assert seen <= descriptions and len(seen) > 1


def test_packaged_examples_have_the_official_shapes():
    for example in load_examples("simple_mode"):
        assert isinstance(example["description"], str) and isinstance(example["instrumental"], bool)
        assert isinstance(example["vocal_language"], str)
    for example in load_examples("text2music"):
        assert isinstance(example["bpm"], int) and 30 <= example["bpm"] <= 300
        assert 10 <= example["duration"] <= 600 and example["timesignature"] in ("2", "3", "4", "6")


async def test_e17_format_input_without_lm(idle):
    _, client = idle
    response = await client.post("/format_input", json={"prompt": "pop rock", "lyrics": "Walking down the street",
                                                         "param_obj": '{"duration": 180, "language": "en"}'})
    assert response.status_code == 503
    assert response.json() == {"detail": "LLM not initialized. Set ACESTEP_INIT_LLM=true in .env to enable."}


@pytest.mark.parametrize("origin,allowed", [
    ("http://localhost:7860", True), ("http://127.0.0.1", True), ("null", True), ("https://evil.example", False),
])
async def test_cors_allows_local_pages_only(idle, origin, allowed):
    _, client = idle
    response = await client.options("/release_task", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert (response.headers.get("access-control-allow-origin") == origin) is allowed
