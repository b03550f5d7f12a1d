"""The 5 Hz LM through HTTP: thinking, sample mode, format, /format_input, /v1/create_sample,
analysis_only, and the documented answers when the LM is disabled or failed to load."""

from __future__ import annotations

import copy
import json
import urllib.parse

import pytest
import soundfile

from acestep_api.engine.lm.cot import KEYSCALES, LANGUAGES
from acestep_api.engine.lm.vocab import parse_audio_codes
from tests.server.conftest import serve, wait_finished

pytestmark = pytest.mark.anyio


@pytest.fixture
async def lm_live(settings, lm_engine):
    async with serve(settings, lm_engine) as (app, client):
        yield app, client


async def finish(app, client, response) -> tuple[object, list[dict]]:
    """The job a /release_task response created, once ended, and its /query_result elements."""
    assert response.status_code == 200, response.text
    task_id = response.json()["data"]["task_id"]
    job = await wait_finished(app, task_id)
    response = await client.post("/query_result", json={"task_id_list": [task_id]})
    [item] = response.json()["data"]
    return job, json.loads(item["result"])


async def run_job(app, client, **body) -> tuple[object, list[dict]]:
    return await finish(app, client, await client.post("/release_task", json=body))


def audio_seconds(element: dict) -> float:
    path = urllib.parse.unquote(element["file"].split("path=", 1)[1])
    info = soundfile.info(path)
    assert info.samplerate == 48000 and info.channels == 2
    return info.frames / info.samplerate


def assert_valid_metas(metas: dict) -> None:
    assert isinstance(metas["bpm"], int) and 30 <= metas["bpm"] <= 300
    assert metas["keyscale"] in KEYSCALES
    assert metas["timesignature"] in ("2", "3", "4", "6")


async def test_thinking_plans_metas_and_codes_for_every_item(lm_live):
    app, client = lm_live
    job, elements = await run_job(
        app, client, prompt="lofi beat", lyrics="[inst]", thinking=True, audio_duration=10,
        batch_size=2, audio_format="wav",
    )
    assert job.status.value == "succeeded", job.error
    assert len(elements) == 2
    for element in elements:
        assert element["status"] == 1
        assert abs(audio_seconds(element) - 10.0) < 0.05
        assert_valid_metas(element["metas"])
        assert element["metas"]["duration"] == 10
        assert element["lm_model"] == "acestep-5Hz-lm-0.6B"
        info = element["generation_info"]
        assert "LM-Generated Metadata" in info and "LM Time Costs" in info
        # Clients grep these lines: each must appear once.
        assert [sum(word in line for line in info.splitlines()) for word in ("BPM:", "Key Scale:", "Total Time:")] == [1, 1, 1]
    # The LM wrote five codes per second for each item, and they reached the DiT.
    assert job.result.metas.duration == 10


async def test_user_metadata_wins_over_the_lm(lm_live):
    app, client = lm_live
    job, elements = await run_job(
        app, client, prompt="waltz", bpm=97, key_scale="F# minor", time_signature="3", audio_duration=10,
        thinking=True, batch_size=1, audio_format="wav",
    )
    assert job.status.value == "succeeded", job.error
    metas = elements[0]["metas"]
    assert (metas["bpm"], metas["keyscale"], metas["timesignature"], metas["duration"]) == (97, "F# minor", "3", 10)


async def test_without_thinking_the_lm_still_fills_missing_metadata(lm_live):
    app, client = lm_live
    job, elements = await run_job(app, client, prompt="ambient pad", audio_duration=10, batch_size=1,
                                  audio_format="wav")
    assert job.status.value == "succeeded", job.error
    assert_valid_metas(elements[0]["metas"])
    # use_cot_caption (on by default) gives the DiT the LM's caption; the original stays in metas.
    assert elements[0]["metas"]["prompt"] == "ambient pad"


async def test_sample_query_invents_caption_lyrics_and_metas(lm_live):
    app, client = lm_live
    job, elements = await run_job(app, client, sample_query="a calm instrumental piano piece", batch_size=1,
                                  audio_format="wav")
    assert job.status.value == "succeeded", job.error
    element = elements[0]
    assert element["prompt"].strip() and element["prompt"] != "a calm instrumental piano piece"
    assert element["lyrics"] == "[Instrumental]"  # "instrumental" in the description
    assert_valid_metas(element["metas"])
    assert abs(audio_seconds(element) - element["metas"]["duration"]) < 0.05


async def test_use_format_rewrites_caption_and_keeps_user_metas(lm_live):
    app, client = lm_live
    job, elements = await run_job(
        app, client, prompt="rock", lyrics="[verse]\nhello there", use_format=True, bpm=120, audio_duration=10,
        batch_size=1, audio_format="wav",
    )
    assert job.status.value == "succeeded", job.error
    element = elements[0]
    assert element["prompt"] != "rock"
    assert element["metas"]["bpm"] == 120 and element["metas"]["duration"] == 10


async def test_analysis_only_answers_metas_without_audio(lm_live):
    app, client = lm_live
    job, elements = await run_job(app, client, prompt="jazz trio", analysis_only=True, audio_duration=20)
    assert job.status.value == "succeeded", job.error
    [element] = elements
    assert element["file"] == "" and element["status"] == 1
    assert_valid_metas(element["metas"])
    assert element["metas"]["duration"] == 20
    assert element["dit_model"] == "None (Analysis Only)"
    assert element["generation_info"] == "Analysis Only Mode Complete"


async def test_format_input_reads_prompt_or_caption_and_keeps_param_obj(lm_live):
    _, client = lm_live
    for text_field in ("prompt", "caption"):
        response = await client.post("/format_input", json={
            text_field: "synth pop", "lyrics": "[chorus]\nla la", "param_obj": json.dumps({"bpm": 90, "duration": 30}),
        })
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["code"] == 200, body
        data = body["data"]
        assert set(data) == {"caption", "lyrics", "bpm", "key_scale", "time_signature", "duration", "vocal_language"}
        assert data["bpm"] == 90 and data["duration"] == 30
        assert data["caption"].strip() and data["caption"] != "synth pop"
        assert data["key_scale"] in KEYSCALES and data["time_signature"] in ("2", "3", "4", "6")
        assert data["vocal_language"] in LANGUAGES


async def test_create_sample_route(lm_live):
    _, client = lm_live
    response = await client.post("/v1/create_sample", json={"query": "festival EDM", "instrumental": "true"})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert set(data) == {"caption", "lyrics", "bpm", "keyscale", "duration", "timesignature", "vocal_language"}
    assert data["lyrics"] == "[Instrumental]"
    assert 30 <= data["bpm"] <= 300 and data["keyscale"] in KEYSCALES
    response = await client.post("/v1/create_sample", json={"query": "x", "vocal_language": "ja"})
    assert response.json()["data"]["vocal_language"] == "ja"


async def test_format_input_rejects_bad_values(lm_live):
    _, client = lm_live
    response = await client.post("/format_input", json={"prompt": "x", "param_obj": {"bpm": 1000}})
    assert response.status_code == 400 and "bpm" in response.json()["detail"]


# --- LM disabled or failed ------------------------------------------------------------------


async def test_lm_routes_answer_503_when_the_lm_is_disabled(idle):
    _, client = idle
    for path in ("/format_input", "/v1/create_sample"):
        response = await client.post(path, json={"prompt": "x", "query": "x"})
        assert response.status_code == 503
        assert response.json() == {"detail": "LLM not initialized. Set ACESTEP_INIT_LLM=true in .env to enable."}


async def test_lm_routes_answer_500_when_the_lm_failed_to_load(settings, engine):
    broken = copy.copy(engine)
    broken.lm_error = "no such folder: acestep-5Hz-lm-4B"
    async with serve(settings, broken, start_worker=False) as (_, client):
        response = await client.post("/format_input", json={"prompt": "x"})
        assert response.status_code == 500
        assert response.json() == {"detail": "LLM init failed: no such folder: acestep-5Hz-lm-4B"}


@pytest.mark.parametrize("field", [{"thinking": True}, {"sample_mode": True}, {"sample_query": "jazz"},
                                   {"use_format": True}, {"analysis_only": True}])
async def test_jobs_needing_the_lm_fail_with_the_documented_error(live, field):
    app, client = live
    job, elements = await run_job(app, client, prompt="x", audio_duration=10, batch_size=1, **field)
    assert job.status.value == "failed"
    assert job.error.startswith("5Hz LM init failed:")
    assert elements[0]["status"] == 2


async def test_without_the_lm_cot_options_are_ignored(live):
    app, client = live
    job, elements = await run_job(app, client, prompt="x", audio_duration=10, batch_size=1, use_cot_caption=True,
                                  use_cot_language=True, audio_format="wav")
    assert job.status.value == "succeeded", job.error
    assert elements[0]["metas"]["bpm"] == "N/A" and elements[0]["prompt"] == "x"


# --- Analysis of a source recording ---------------------------------------------------------


def noise_wav(path, seconds: float, rate: int = 44100):
    import numpy as np

    samples = np.random.default_rng(0).uniform(-0.5, 0.5, (int(seconds * rate), 2)).astype("float32")
    soundfile.write(path, samples, rate)
    return path


async def run_upload_job(app, client, wav, **fields) -> tuple[object, list[dict]]:
    with open(wav, "rb") as handle:
        response = await client.post(
            "/release_task", data={k: str(v) for k, v in fields.items()}, files={"src_audio": ("a.wav", handle)}
        )
    return await finish(app, client, response)


async def test_extract_codes_only_answers_five_codes_per_second_without_the_lm(live, tmp_path):
    app, client = live
    job, elements = await run_upload_job(app, client, noise_wav(tmp_path / "a.wav", 4.0), extract_codes_only="true")
    assert job.status.value == "succeeded", job.error
    [element] = elements
    assert element["status_message"] == "Audio Codes Extraction Success"
    assert element["audio_paths"] == [] and element["first_audio_path"] is None
    codes = parse_audio_codes(element["audio_codes"])
    assert len(codes) == 20 and all(0 <= c < 64000 for c in codes)
    assert len(set(codes)) > 1


async def test_full_analysis_only_describes_the_source(lm_live, tmp_path):
    app, client = lm_live
    job, elements = await run_upload_job(app, client, noise_wav(tmp_path / "a.wav", 4.0), full_analysis_only="1")
    assert job.status.value == "succeeded", job.error
    [element] = elements
    assert element["status_message"] == "Full Hardware Analysis Success"
    assert_valid_metas(element)
    assert element["language"] in LANGUAGES and isinstance(element["prompt"], str)
    assert element["audio_paths"] == []


async def test_analysis_modes_need_source_audio(idle):
    _, client = idle
    for mode in ("extract_codes_only", "full_analysis_only"):
        response = await client.post("/release_task", json={mode: True})
        assert response.status_code == 400 and mode in response.json()["detail"]
