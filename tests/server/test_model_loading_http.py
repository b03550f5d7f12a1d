"""Models loaded at run time, through HTTP: POST /v1/init into a slot, on-demand loading of a
model or an LM a request names, the 400 for one that is not on disk, POST /v1/reinitialize,
ACESTEP_NO_INIT, and /v1/model_inventory listing every folder on disk.

The checkpoints: the session's tiny turbo DiT, VAE, text encoder and LM (linked, not copied),
plus a tiny `acestep-v15-sft` DiT written here; `acestep-v15-base` is left out, so it is an
official name that is not on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from acestep_api.engine.engine import MusicEngine
from acestep_api.engine.layout import DEMO_MARKER, LM_0_6B_FOLDER, TEXT_ENCODER_FOLDER, TURBO_FOLDER, VAE_FOLDER
from acestep_api.engine.model_slots import ModelOptions
from acestep_api.engine.startup import build_engine
from acestep_api.settings import Settings
from tests.server.conftest import serve, wait_finished

pytestmark = pytest.mark.anyio

SFT = "acestep-v15-sft"
BASE = "acestep-v15-base"  # official, not on disk here
SONG = {"prompt": "a short test", "audio_duration": 10, "batch_size": 1, "inference_steps": 2, "thinking": False,
        "use_random_seed": False, "seed": 3}


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from acestep_api.engine.tiny import write_tiny_dit

    root = tmp_path_factory.mktemp("slot-checkpoints")
    for name in (TURBO_FOLDER, VAE_FOLDER, TEXT_ENCODER_FOLDER, LM_0_6B_FOLDER, DEMO_MARKER):
        os.symlink(tiny_checkpoints / name, root / name)
    write_tiny_dit(root / SFT, turbo=False, seed=5)
    return root


def slot_engine(tiny_engine, checkpoints: Path, settings: Settings, *, planner=None, lm_error=None,
                **options) -> MusicEngine:
    """An engine on the session's tiny models with the turbo DiT in slot 1, loading from `checkpoints`."""
    return MusicEngine(
        tiny_engine.tokenizer, tiny_engine.text_encoder, tiny_engine.vae, [tiny_engine.dits[TURBO_FOLDER]],
        output_dir=settings.audio_dir, device=tiny_engine.device, dtype=tiny_engine.dtype, is_demo=True,
        planner=planner, lm_error=lm_error,
        options=ModelOptions(checkpoint_dir=checkpoints, **options),
    )


async def generate(app, client, **fields):
    response = await client.post("/release_task", json={**SONG, **fields})
    assert response.status_code == 200, response.text
    return await wait_finished(app, response.json()["data"]["task_id"])


def entry(models: list[dict], name: str) -> dict:
    return next(model for model in models if model["name"] == name)


async def test_init_into_slot_2_then_a_request_for_that_model_uses_it(tiny_engine, checkpoints, settings):
    async with serve(settings, slot_engine(tiny_engine, checkpoints, settings)) as (app, client):
        # Not loaded, on-demand loading off: refused, saying how to load it.
        refused = await client.post("/release_task", json={**SONG, "model": SFT})
        assert refused.status_code == 400 and "on disk but not loaded" in refused.json()["detail"]

        answer = (await client.post("/v1/init", json={"model": SFT, "slot": 2})).json()
        assert answer["code"] == 200, answer
        data = answer["data"]
        assert (data["message"], data["slot"], data["loaded_model"]) == ("Model initialization completed", 2, SFT)
        assert data["loaded_lm_model"] is None and data["llm_initialized"] is False
        assert entry(data["models"], SFT)["is_loaded"] is True and entry(data["models"], TURBO_FOLDER)["is_default"]
        assert data["lm_models"] == [{"name": LM_0_6B_FOLDER, "is_loaded": False}]

        job = await generate(app, client, model=SFT)
        assert job.status.value == "succeeded", job.error
        assert job.result.dit_model == SFT
        job = await generate(app, client)  # no model: the primary
        assert job.result.dit_model == TURBO_FOLDER


async def test_init_refuses_what_it_cannot_load(tiny_engine, checkpoints, settings):
    async with serve(settings, slot_engine(tiny_engine, checkpoints, settings, slot_count=2,
                                           download=False)) as (_, client):
        missing = await client.post("/v1/init", json={"model": "acestep-v15-xl", "slot": 2})
        assert missing.status_code == 400
        assert missing.json()["detail"] == (
            f"model 'acestep-v15-xl' is not on this server; DiT models on disk: {SFT}, {TURBO_FOLDER}")
        no_slot = await client.post("/v1/init", json={"model": SFT, "slot": 3})
        assert no_slot.status_code == 400 and no_slot.json()["detail"].startswith("slot 3 is not available")
        empty = await client.post("/v1/init", json={"slot": 2})
        assert empty.status_code == 400 and "slot 2 is empty" in empty.json()["detail"]
        bad_lm = await client.post("/v1/init", json={"init_llm": True, "lm_model_path": "acestep-5Hz-lm-4B"})
        assert bad_lm.status_code == 400
        assert bad_lm.json()["detail"].endswith(f"LM models on disk: {LM_0_6B_FOLDER}")


async def test_on_demand_load_takes_the_least_recently_used_slot(tiny_engine, checkpoints, settings, tmp_path):
    # A second copy of the turbo weights under another official-looking name, so three DiTs
    # compete for two slots.
    turbo_copy = tmp_path / "ckpt" / "acestep-v15-turbo-rl"
    root = tmp_path / "ckpt"
    root.mkdir()
    for child in checkpoints.iterdir():
        os.symlink(child.resolve(), root / child.name)
    os.symlink((checkpoints / TURBO_FOLDER).resolve(), turbo_copy)
    engine = slot_engine(tiny_engine, root, settings, on_demand=True, slot_count=2)
    async with serve(settings, engine) as (app, client):
        job = await generate(app, client, model=SFT)
        assert (job.status.value, job.result.dit_model) == ("succeeded", SFT)
        inventory = (await client.get("/v1/model_inventory")).json()["data"]
        assert entry(inventory["models"], SFT)["is_loaded"] is True

        # Slot 2 is the only one but the primary: the new model replaces SFT there.
        job = await generate(app, client, model=turbo_copy.name)
        assert (job.status.value, job.result.dit_model) == ("succeeded", turbo_copy.name)
        models = (await client.get("/v1/model_inventory")).json()["data"]["models"]
        assert [(m["name"], m["is_loaded"]) for m in models] == [
            (TURBO_FOLDER, True), (turbo_copy.name, True), (SFT, False)]
        assert app.state.served.slots == (TURBO_FOLDER, turbo_copy.name)
    assert tiny_engine.model_names == [TURBO_FOLDER, "acestep-v15-base"]  # the session's engine is untouched


async def test_a_model_not_on_disk_is_a_400_naming_those_on_disk(tiny_engine, checkpoints, settings):
    async with serve(settings, slot_engine(tiny_engine, checkpoints, settings, on_demand=True,
                                           download=False)) as (app, client):
        response = await client.post("/release_task", json={**SONG, "model": BASE})
        assert response.status_code == 400
        assert response.json()["detail"] == (
            f"model {BASE!r} is not on this server; DiT models on disk: {SFT}, {TURBO_FOLDER}")
        response = await client.post("/release_task", json={**SONG, "lm_model_path": "acestep-5Hz-lm-4B"})
        assert response.status_code == 400
        assert response.json()["detail"] == (
            f"5Hz LM 'acestep-5Hz-lm-4B' is not on this server; LM models on disk: {LM_0_6B_FOLDER}")
        # A path names its last folder, and only one directly under the checkpoints.
        assert (await client.post("/release_task", json={**SONG, "model": "../.."})).status_code == 400
        assert app.state.queue.size == 0
        job = await generate(app, client, model=f"/elsewhere/{SFT}")
        assert (job.status.value, job.result.dit_model) == ("succeeded", SFT)


async def test_a_missing_official_model_is_fetched_or_the_job_says_why(tiny_engine, checkpoints, settings, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network in the tests
    async with serve(settings, slot_engine(tiny_engine, checkpoints, settings, on_demand=True,
                                           download=True)) as (app, client):
        # Only official DiTs are fetched for `model`, only official LMs for `lm_model_path`.
        assert (await client.post("/release_task", json={**SONG, "model": "vae"})).status_code == 400
        assert (await client.post("/release_task", json={**SONG, "lm_model_path": BASE})).status_code == 400
        job = await generate(app, client, model=BASE)
        assert job.status.value == "failed"
        assert job.error == (f"the checkpoint {BASE!r} is not on this server and could not be downloaded "
                             "(no network access to the Hugging Face Hub, or the download failed)")
        answer = (await client.post("/v1/init", json={"model": BASE, "slot": 2})).json()
        assert answer["code"] == 500 and answer["data"] is None
        assert answer["error"].startswith(f"Model initialization failed: the checkpoint {BASE!r} is not on this server")
        # Nothing changed: the primary still serves.
        job = await generate(app, client)
        assert (job.status.value, job.result.dit_model) == ("succeeded", TURBO_FOLDER)


@pytest.mark.slow  # loads the LM and runs it
async def test_lm_model_path_loads_that_lm_for_its_job(tiny_engine, checkpoints, settings):
    from acestep_api.engine.lm.planner import DEMO_TEXT_LIMITS

    engine = slot_engine(tiny_engine, checkpoints, settings, on_demand=True, lm_duration_max=30,
                         lm_limits=DEMO_TEXT_LIMITS)
    async with serve(settings, engine) as (app, client):
        health = (await client.get("/health")).json()["data"]
        assert health["llm_initialized"] is False
        job = await generate(app, client, lm_model_path=LM_0_6B_FOLDER, use_cot_caption=False)
        assert job.status.value == "succeeded", job.error
        assert job.result.lm_model == LM_0_6B_FOLDER
        health = (await client.get("/health")).json()["data"]
        assert (health["llm_initialized"], health["loaded_lm_model"]) == (True, LM_0_6B_FOLDER)
        inventory = (await client.get("/v1/model_inventory")).json()["data"]
        assert inventory["lm_models"] == [{"name": LM_0_6B_FOLDER, "is_loaded": True}]


@pytest.mark.slow  # loads the LM twice
async def test_init_llm_and_reinitialize_load_the_lm(tiny_engine, checkpoints, settings):
    from acestep_api.engine.lm.planner import DEMO_TEXT_LIMITS

    # The LM's load failed at start-up: reinitialize loads it again.
    engine = slot_engine(tiny_engine, checkpoints, settings, lm_error="the 5 Hz LM could not be loaded",
                         lm_mode="on", lm_limits=DEMO_TEXT_LIMITS)
    async with serve(settings, engine) as (app, client):
        assert (await client.post("/format_input", json={"prompt": "x"})).status_code == 500
        answer = (await client.post("/v1/reinitialize")).json()
        assert answer["code"] == 200
        assert answer["data"] == {"message": "Service reinitialized; reloaded: LLM", "reloaded": ["LLM"]}
        assert (await client.get("/health")).json()["data"]["loaded_lm_model"] == LM_0_6B_FOLDER
        again = (await client.post("/v1/reinitialize")).json()["data"]
        assert again == {"message": "Service reinitialized", "reloaded": []}

    engine = slot_engine(tiny_engine, checkpoints, settings, lm_limits=DEMO_TEXT_LIMITS)
    async with serve(settings, engine) as (app, client):
        data = (await client.post("/v1/init", json={"init_llm": True, "lm_model_path": LM_0_6B_FOLDER})).json()["data"]
        assert (data["slot"], data["loaded_model"], data["loaded_lm_model"]) == (1, TURBO_FOLDER, LM_0_6B_FOLDER)
        assert data["llm_initialized"] is True


async def test_no_init_loads_the_models_with_the_first_job(checkpoints, tmp_path):
    settings = Settings(_env_file=None, output_dir=tmp_path / "out", checkpoint_dir=checkpoints, config_path=SFT,
                        device="cpu", no_init=True, init_llm="false")
    engine = build_engine(settings)
    assert not engine.loaded
    async with serve(settings, engine) as (app, client):
        health = (await client.get("/health")).json()["data"]
        assert (health["models_initialized"], health["loaded_model"]) == (False, SFT)
        models = (await client.get("/v1/model_inventory")).json()["data"]["models"]
        assert [(m["name"], m["is_loaded"]) for m in models] == [(SFT, False), (TURBO_FOLDER, False)]
        answer = (await client.post("/v1/reinitialize")).json()["data"]
        assert answer["reloaded"] == ["DiT/VAE/Text Encoder"]
        assert (await client.get("/health")).json()["data"]["models_initialized"] is True
        job = await generate(app, client)
        assert (job.status.value, job.result.dit_model) == ("succeeded", SFT)


async def test_a_key_may_init_only_its_models(tiny_engine, checkpoints, settings, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[[keys]]\nname = "bob"\nkey = "b-secret"\nmodels = ["{TURBO_FOLDER}"]\n'
                    f'[[keys]]\nname = "ops"\nkey = "o-secret"\n', encoding="utf-8")
    settings = settings.model_copy(update={"api_keys_file": keys})
    async with serve(settings, slot_engine(tiny_engine, checkpoints, settings)) as (app, client):
        refused = await client.post("/v1/init", json={"model": SFT, "slot": 2},
                                    headers={"Authorization": "Bearer b-secret"})
        assert refused.status_code == 403
        assert refused.json()["detail"] == f"key 'bob' may not use the model {SFT!r}; its models: {TURBO_FOLDER}"
        answer = await client.post("/v1/init", json={"model": SFT, "slot": 2}, headers={"Authorization": "Bearer o-secret"})
        assert answer.json()["data"]["loaded_model"] == SFT
        assert app.state.store.counts()["total"] == 1  # the model job, recorded as any job
