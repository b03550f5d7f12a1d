"""Adapters (LoRA / LoKr) through HTTP: the official /v1/lora/* routes, a job's own lora_name /
lora_scale, the worker switching between queued jobs, bad adapter folders as 400s, and exact
replay with the adapter. Audio is compared by the hash of the WAV files the server wrote."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from acestep_api.engine.adapters import AdapterManager
from acestep_api.engine.layout import DEMO_ADAPTER, LORA_FOLDER
from acestep_api.engine.tiny import write_tiny_adapter
from tests.server.conftest import serve

pytestmark = pytest.mark.anyio

SONG = {"prompt": "a calm piano piece", "audio_duration": 10, "batch_size": 1, "audio_format": "wav",
        "use_random_seed": False, "seed": 42, "inference_steps": 2}


def adapted(engine, lora_dir: Path, cache_size: int = 4):
    """The test's engine with DiTs of its own (adapters change their layers) and a fresh manager."""
    own = copy.copy(engine)
    own.dits = {name: copy.deepcopy(dit) for name, dit in engine.dits.items()}
    own.adapters = AdapterManager(lora_dir, cache_size)
    return own


@pytest.fixture
def lora_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "loras"
    write_tiny_adapter(folder / "first", seed=11)
    write_tiny_adapter(folder / "second", seed=12)
    return folder


@pytest.fixture
async def demo(settings, engine, tiny_checkpoints):
    """The demo checkpoints' own adapters folder (with the tiny official-format LoRA)."""
    async with serve(settings, adapted(engine, tiny_checkpoints / LORA_FOLDER)) as (app, client):
        yield app, client


@pytest.fixture
async def two(settings, engine, lora_dir):
    """Two adapters and room for one loaded for requests: every switch loads again."""
    async with serve(settings, adapted(engine, lora_dir, cache_size=1)) as (app, client):
        yield app, client


async def submit(client, **fields) -> str:
    answer = await client.post("/release_task", json={**SONG, **fields})
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["task_id"]


async def result(client, task_id: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        item = (await client.post("/query_result", json={"task_id_list": [task_id]})).json()["data"][0]
        if item["status"] != 0:
            assert item["status"] == 1, item
            [element] = json.loads(item["result"])
            element["hash"] = hashlib.sha256((await client.get(element["file"])).content).hexdigest()
            return element
        await asyncio.sleep(0.05)
    raise AssertionError("the job did not finish")


async def song(client, **fields) -> str:
    return (await result(client, await submit(client, **fields)))["hash"]


async def test_the_demo_adapter_changes_the_song_and_scale_zero_or_none_is_the_plain_song(demo):
    app, client = demo
    plain = await song(client)
    adapted_song = await song(client, lora_name=DEMO_ADAPTER)
    assert adapted_song != plain
    assert await song(client, lora_name=DEMO_ADAPTER, lora_scale=0.5) not in (plain, adapted_song)
    assert await song(client, lora_name=DEMO_ADAPTER, lora_scale=0) == plain
    assert await song(client) == plain  # a job after one with an adapter runs the plain layers
    assert await song(client, loraName=DEMO_ADAPTER, loraScale="1.0") == adapted_song


async def test_queued_jobs_with_different_adapters_each_get_their_own(two):
    app, client = two
    await app.state.worker.stop()  # hold the jobs in line until all three are queued
    queued = [await submit(client, lora_name="first"), await submit(client, lora_name="second"),
              await submit(client)]
    app.state.worker.start()
    together = [(await result(client, task_id))["hash"] for task_id in queued]
    alone = [await song(client, lora_name="first"), await song(client, lora_name="second"), await song(client)]
    assert together == alone
    assert len(set(alone)) == 3


async def test_the_official_routes_set_the_default_for_jobs_that_name_none(two):
    app, client = two
    status = (await client.get("/v1/lora/status")).json()
    assert status["code"] == 200
    assert {key: status["data"][key] for key in ("lora_loaded", "use_lora", "lora_scale", "adapter_type",
                                                 "scales", "active_adapter", "adapters", "synthetic_default_mode")} \
        == {"lora_loaded": False, "use_lora": False, "lora_scale": 1.0, "adapter_type": None, "scales": {},
            "active_adapter": None, "adapters": [], "synthetic_default_mode": False}
    assert status["data"]["available"] == ["first", "second"]
    plain, first = await song(client), await song(client, lora_name="first")
    half = await song(client, lora_name="first", lora_scale=0.5)

    loaded = (await client.post("/v1/lora/load", json={"lora_path": "first", "adapter_name": "main"})).json()
    assert loaded["code"] == 200 and loaded["data"]["adapter_name"] == "main" and loaded["data"]["lora_path"] == "first"
    status = (await client.get("/v1/lora/status")).json()["data"]
    assert (status["lora_loaded"], status["use_lora"], status["active_adapter"], status["adapters"],
            status["adapter_type"], status["folders"]) == (True, True, "main", ["main"], "lora", {"main": "first"})
    assert await song(client) == first
    assert await song(client, lora_name="second") not in (first, plain)  # a job's own adapter wins

    scaled = (await client.post("/v1/lora/scale", json={"scale": 0.5})).json()
    assert scaled["code"] == 200 and scaled["data"]["scale"] == 0.5
    assert (await client.get("/v1/lora/status")).json()["data"]["scales"] == {"main": 0.5}
    assert await song(client) == half

    off = (await client.post("/v1/lora/toggle", json={"use_lora": False})).json()
    assert off["code"] == 200 and off["data"]["use_lora"] is False
    assert await song(client) == plain
    assert (await client.post("/v1/lora/toggle", json={"use_lora": True})).json()["code"] == 200
    assert await song(client) == half

    unloaded = (await client.post("/v1/lora/unload", json={})).json()
    assert unloaded["code"] == 200
    assert await song(client) == plain
    # Nothing loaded: unload and scale still succeed (as official, with a warning text);
    # toggling on is the envelope's 400 inside an HTTP 200.
    again = await client.post("/v1/lora/unload")
    assert again.status_code == 200 and "No LoRA" in again.json()["data"]["message"]
    assert (await client.post("/v1/lora/scale", json={"scale": 0.3})).json()["code"] == 200
    toggled = await client.post("/v1/lora/toggle", json={"use_lora": True})
    assert toggled.status_code == 200 and toggled.json()["code"] == 400 and "No LoRA" in toggled.json()["error"]
    # A name in use, an unknown adapter_name to scale.
    assert (await client.post("/v1/lora/load", json={"lora_path": str(app.state.served.lora_dir / "second")})).status_code == 200
    taken = await client.post("/v1/lora/load", json={"lora_path": "first", "adapter_name": "second"})
    assert taken.status_code == 400 and "already in use" in taken.json()["detail"]
    unknown = (await client.post("/v1/lora/scale", json={"scale": 0.3, "adapter_name": "nope"})).json()
    assert unknown["code"] == 400 and "Unknown adapter" in unknown["error"]


async def test_route_bodies_are_checked(two):
    app, client = two
    for path, body, field in [("/v1/lora/load", {}, "lora_path"), ("/v1/lora/toggle", {}, "use_lora"),
                              ("/v1/lora/toggle", {"use_lora": "maybe"}, "use_lora"),
                              ("/v1/lora/scale", {}, "scale"), ("/v1/lora/scale", {"scale": 1.5}, "scale"),
                              ("/v1/lora/scale", {"scale": "loud"}, "scale")]:
        answer = await client.post(path, json=body)
        assert answer.status_code == 400 and field in answer.json()["detail"], (path, body, answer.text)


def break_adapter(lora_dir: Path, name: str, how: str) -> None:
    folder = lora_dir / name
    write_tiny_adapter(folder, seed=13)
    weights = folder / "adapter_model.safetensors"
    if how == "no weights":
        weights.unlink()
    elif how == "bad json":
        (folder / "adapter_config.json").write_text("{not json", encoding="utf-8")
    elif how == "ia3":
        config = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    else:
        state = load_file(str(weights))
        key = "base_model.model.layers.0.self_attn.q_proj.lora_A.weight"
        if how == "wrong shape":
            state[key] = torch.zeros(4, 3)
        elif how == "unmapped module":
            state["base_model.model.layers.0.self_attn.x_proj.lora_A.weight"] = state.pop(key)
        elif how == "encoder key":
            state["base_model.model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = state.pop(key)
        elif how == "no adapter tensor":
            state["base_model.model.layers.0.self_attn.q_proj.weight"] = state.pop(key)
        save_file(state, str(weights))


@pytest.mark.parametrize("how,words", [
    ("no weights", "adapter_model.safetensors"), ("bad json", "adapter_config.json"), ("ia3", "peft_type"),
    ("wrong shape", "self_attn.q_proj.lora_A.weight"), ("unmapped module", "x_proj"),
    ("encoder key", "encoder.layers.0"), ("no adapter tensor", "q_proj.weight"),
])
async def test_a_bad_adapter_folder_is_a_400_naming_the_problem(two, lora_dir, how, words):
    app, client = two
    break_adapter(lora_dir, "broken", how)
    answer = await client.post("/v1/lora/load", json={"lora_path": "broken"})
    assert answer.status_code == 400 and words in answer.json()["detail"], answer.text
    assert (await client.get("/v1/lora/status")).json()["data"]["adapters"] == []
    # Named by a job: the job fails with the same reason (before any model work), and the
    # worker goes on to the next job.
    task_id = await submit(client, lora_name="broken")
    following = await submit(client, inference_steps=1)
    deadline = time.monotonic() + 60
    while (item := (await client.post("/query_result", json={"task_id_list": [task_id]})).json()["data"][0])["status"] == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert item["status"] == 2 and words in json.dumps(item)
    await result(client, following)


async def test_paths_and_names_outside_the_adapters_folder_are_refused(two, tmp_path):
    app, client = two
    elsewhere = tmp_path / "elsewhere"
    write_tiny_adapter(elsewhere, seed=14)
    for lora_path in (str(elsewhere), "../elsewhere", "first/..", "/etc", "missing"):
        answer = await client.post("/v1/lora/load", json={"lora_path": lora_path})
        assert answer.status_code == 400 and "lora_path" in answer.json()["detail"], (lora_path, answer.text)
    for name in ("missing", "../elsewhere", "a/b"):
        answer = await client.post("/release_task", json={**SONG, "lora_name": name})
        assert answer.status_code == 400 and "lora_name" in answer.json()["detail"], (name, answer.text)
    listed = (await client.post("/release_task", json={**SONG, "lora_name": "missing"})).json()["detail"]
    assert "first" in listed and "second" in listed
    assert (await client.post("/release_task", json={**SONG, "lora_scale": 2})).status_code == 400


async def test_a_replay_uses_the_same_adapter_even_after_the_default_changed(two):
    app, client = two
    assert (await client.post("/v1/lora/load", json={"lora_path": "second"})).json()["code"] == 200
    assert (await client.post("/v1/lora/scale", json={"scale": 0.7})).json()["code"] == 200
    original_id = await submit(client)
    original = await result(client, original_id)
    stored = app.state.queue.get(original_id).result.resolved
    assert (stored.lora_name, stored.lora_scale) == ("second", 0.7)
    assert (await client.post("/v1/lora/unload")).json()["code"] == 200
    plain = await song(client)
    replay = (await client.post(f"/v1/jobs/{original_id}/replay", json={})).json()
    assert (await result(client, replay["job_id"]))["hash"] == original["hash"] != plain
    # A job without an adapter replays without one, whatever the default is by then.
    plain_id = await submit(client)
    await result(client, plain_id)
    assert (await client.post("/v1/lora/load", json={"lora_path": "first"})).json()["code"] == 200
    replay = (await client.post(f"/v1/jobs/{plain_id}/replay", json={})).json()
    assert (await result(client, replay["job_id"]))["hash"] == plain


async def test_a_lokr_adapter_in_peft_format_loads_and_changes_the_song(two, lora_dir, engine):
    from peft import LoKrConfig, inject_adapter_in_model
    from peft.utils.save_and_load import get_peft_model_state_dict

    from acestep_api.engine.loading.keys import diffusers_to_official_key

    # PEFT's own LoKr tensors for the DiT, saved under the official decoder's names.
    transformer = copy.deepcopy(engine.dits[engine.default_model].transformer)
    inject_adapter_in_model(LoKrConfig(r=4, alpha=4, target_modules=["to_q", "to_v"], init_weights=False),
                            transformer, adapter_name="default")
    state = get_peft_model_state_dict(transformer, adapter_name="default")
    official = {}
    for key, tensor in state.items():
        module, _, tensor_name = key.partition(".lokr_")
        name = diffusers_to_official_key("transformer", module + ".weight").removeprefix("decoder.").removesuffix(".weight")
        official[f"base_model.model.{name}.lokr_{tensor_name}"] = tensor.detach().clone().contiguous()
    folder = lora_dir / "kron"
    folder.mkdir()
    save_file(official, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LOKR", "r": 4, "alpha": 4, "target_modules": ["q_proj", "v_proj"], "rank_dropout": 0.0,
         "module_dropout": 0.0, "init_weights": True}))
    app, client = two
    plain = await song(client)
    kron = await song(client, lora_name="kron")
    assert kron != plain
    assert await song(client, lora_name="first") not in (plain, kron)  # a LoRA after the LoKr (evicted)
    assert await song(client, lora_name="kron") == kron
    loaded = await client.post("/v1/lora/load", json={"lora_path": "kron"})
    assert loaded.status_code == 200 and (await client.get("/v1/lora/status")).json()["data"]["adapter_type"] == "lokr"


async def test_the_legacy_and_chat_dialects_take_lora_name_too(two):
    app, client = two
    legacy = await client.post("/v1/music/generate", json={**SONG, "duration": 10, "lora_name": "first",
                                                           "lora_scale": 0.25})
    assert legacy.status_code == 200, legacy.text
    job_id = legacy.json()["job_id"]
    deadline = time.monotonic() + 60
    while not (job := app.state.queue.get(job_id)).status.ended:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert (job.result.resolved.lora_name, job.result.resolved.lora_scale) == ("first", 0.25)
    assert (await client.post("/v1/music/generate", json={"lora_name": "nope"})).status_code == 400

    chat = {"model": "acestep/acestep-v15-turbo", "batch_size": 1, "seed": 3,
            "messages": [{"role": "user", "content": "<prompt>Lo-fi</prompt>"}],
            "audio_config": {"instrumental": True, "duration": 10, "format": "wav"}}
    unknown = await client.post("/v1/chat/completions", json={**chat, "lora_name": "nope"})
    assert unknown.status_code == 400 and "first" in unknown.json()["detail"]

    async def audio(**fields) -> str:
        answer = await client.post("/v1/chat/completions", json={**chat, **fields})
        assert answer.status_code == 200, answer.text
        return answer.json()["choices"][0]["message"]["audio"][0]["audio_url"]["url"]

    assert await audio(lora_name="second") != await audio()


async def test_the_answers_match_the_openapi_document(two):
    from tests.server.test_openapi import assert_documented

    app, client = two
    spec = (await client.get("/openapi.json")).json()
    for method, path, body in [("post", "/v1/lora/toggle", {"use_lora": True}),  # 200, code 400
                               ("post", "/v1/lora/load", {"lora_path": "first", "adapter_name": "main"}),
                               ("post", "/v1/lora/load", {"lora_path": "first", "adapter_name": "main"}),  # 400
                               ("get", "/v1/lora/status", None), ("post", "/v1/lora/scale", {"scale": 0.5}),
                               ("post", "/v1/lora/toggle", {"use_lora": False}), ("post", "/v1/lora/unload", {})]:
        answer = await client.request(method.upper(), path, json=body)
        assert_documented(spec, method, path, answer)
