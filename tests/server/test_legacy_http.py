"""The older API over HTTP (docs/wire-contract.md#the-older-api): POST /v1/music/generate, POST
/v1/music/random, GET /v1/jobs/{id}; the same queue as /release_task; the optional key.
Cancelling: test_cancel_http.py."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import soundfile as sf

from tests.server.conftest import serve, wait_finished

pytestmark = pytest.mark.anyio

E19_JSON = {"caption": "upbeat pop song", "lyrics": "Hello world", "inference_steps": 16}
E19_FORM = "caption=upbeat+pop+song&lyrics=Hello+world&inference_steps=16"
VIEW_KEYS = {"job_id", "status", "created_at", "started_at", "finished_at", "queue_position", "eta_seconds",
             "avg_job_seconds", "result", "error"}
RESULT_KEYS = {"first_audio_path", "second_audio_path", "audio_paths", "generation_info", "status_message",
               "seed_value", "metas", "bpm", "duration", "genres", "keyscale", "timesignature", "lm_model",
               "dit_model"}
LLM_NOT_INITIALIZED = "LLM not initialized. Set ACESTEP_INIT_LLM=true in .env to enable."


async def submit(client, **kwargs) -> str:
    response = await client.post("/v1/music/generate", **kwargs)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"job_id", "status", "queue_position"} and body["status"] == "queued"
    return body["job_id"]


async def view(client, job_id: str) -> dict:
    response = await client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def sine_wav(path, seconds: float = 1.0, rate: int = 48000):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), rate)
    return path


# --- Legacy submit and poll (docs/wire-contract.md#conformance-examples) ------------------------


@pytest.mark.parametrize("body", [
    {"json": E19_JSON},
    {"content": E19_FORM, "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
], ids=["json", "form"])
async def test_e19_submit_answers_unwrapped_and_the_job_shows_queued(idle, body):
    app, client = idle
    response = await client.post("/v1/music/generate", **body)
    assert response.status_code == 200
    answer = response.json()
    assert answer == {"job_id": answer["job_id"], "status": "queued", "queue_position": 1}
    job = app.state.queue.get(answer["job_id"])
    assert job.api.value == "legacy"
    request = job.request
    assert (request.prompt, request.lyrics, request.inference_steps) == ("upbeat pop song", "Hello world", 16)

    shown = await view(client, answer["job_id"])
    created_at = shown.pop("created_at")
    assert isinstance(created_at, float) and created_at == job.created_at
    assert shown == {
        "job_id": answer["job_id"], "status": "queued", "started_at": None, "finished_at": None,
        "queue_position": 1, "eta_seconds": 5.0, "avg_job_seconds": 5.0, "result": None, "error": None,
    }


async def test_unknown_job_is_a_404(idle):
    _, client = idle
    response = await client.get("/v1/jobs/nope")
    assert (response.status_code, response.json()) == (404, {"detail": "Job not found"})


async def test_e19_job_succeeds_with_the_result_fields_and_its_audio_downloads(live):
    app, client = live
    # The example's fields, kept short so the tiny model finishes quickly.
    job_id = await submit(client, json={**E19_JSON, "duration": 10, "batch_size": 1})
    job = await wait_finished(app, job_id)
    assert job.status.value == "succeeded", job.error

    shown = await view(client, job_id)
    assert set(shown) == VIEW_KEYS
    assert [shown[key] for key in ("status", "queue_position", "eta_seconds", "error")] == ["succeeded", 0, None, None]
    assert shown["started_at"] <= shown["finished_at"]
    assert shown["avg_job_seconds"] == pytest.approx(shown["finished_at"] - shown["started_at"], abs=0.01)
    result = shown["result"]
    assert set(result) == RESULT_KEYS
    assert result["audio_paths"] == [result["first_audio_path"]] and result["second_audio_path"] is None
    assert result["first_audio_path"].startswith("/v1/audio?path=%2F") and result["first_audio_path"].endswith(".mp3")
    assert result["status_message"] == "✅ Generation completed successfully!"
    assert result["seed_value"] == str(job.result.seeds[0])
    assert "Total Time:" in result["generation_info"]
    assert result["metas"] == {"bpm": "N/A", "duration": 10.0, "genres": "N/A", "keyscale": "N/A",
                               "timesignature": "N/A", "caption": "upbeat pop song", "lyrics": "Hello world"}
    # "N/A" reads as null in the typed copies.
    typed = [result[key] for key in ("bpm", "duration", "genres", "keyscale", "timesignature")]
    assert typed == [None, 10.0, None, None, None]
    assert (result["dit_model"], result["lm_model"]) == ("acestep-v15-turbo", "acestep-5Hz-lm-0.6B")

    download = await client.get(result["first_audio_path"])
    assert download.status_code == 200 and download.headers["content-type"] == "audio/mpeg"
    assert download.content[:3] == b"ID3" or download.content[0] == 0xFF  # an MP3 stream


# --- Bodies and uploads -----------------------------------------------------------------------


async def test_multipart_src_audio_upload_with_task_type_repaint(live, settings, tmp_path):
    app, client = live
    audio = sine_wav(tmp_path / "song.wav").read_bytes()
    job_id = await submit(
        client,
        data={"caption": "remix this song", "task_type": "repaint", "batch_size": "1", "audio_format": "wav"},
        files={"src_audio": ("song.wav", audio, "audio/wav")},
    )
    path = app.state.store.get(job_id).request.src_audio_path
    assert os.path.dirname(path) == str(settings.upload_dir.resolve())
    job = await wait_finished(app, job_id)
    assert job.status.value == "succeeded", job.error
    assert job.request.task_type == "repaint" and job.request.prompt == "remix this song"
    assert not os.path.exists(path)  # the upload goes with the job
    result = (await view(client, job_id))["result"]
    assert result["first_audio_path"].endswith(".wav")
    assert (await client.get(result["first_audio_path"])).status_code == 200


async def test_an_analysis_result_keeps_its_own_fields(live, tmp_path):
    app, client = live
    audio = sine_wav(tmp_path / "song.wav", seconds=2.0).read_bytes()
    job_id = await submit(client, data={"extract_codes_only": "true"}, files={"src_audio": ("song.wav", audio)})
    job = await wait_finished(app, job_id)
    assert job.status.value == "succeeded", job.error
    result = (await view(client, job_id))["result"]
    assert RESULT_KEYS <= set(result)
    assert result["status_message"] == "Audio Codes Extraction Success"
    assert result["audio_codes"] == job.result.analysis.audio_codes != ""
    assert (result["first_audio_path"], result["audio_paths"], result["bpm"]) == (None, [], None)


async def test_a_refused_upload_is_removed_and_the_answer_names_the_field(idle, settings, tmp_path):
    app, client = idle
    audio = sine_wav(tmp_path / "song.wav").read_bytes()
    response = await client.post("/v1/music/generate", data={"caption": "x", "task_type": "lego"},
                                 files={"src_audio": ("song.wav", audio, "audio/wav")})
    assert response.status_code == 400 and "task_type" in response.json()["detail"]
    assert list(settings.upload_dir.iterdir()) == []
    assert app.state.queue.size == 0


async def test_content_type_errors_match_release_task(idle):
    _, client = idle
    response = await client.post("/v1/music/generate", content=b"[1,2]", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (400, {"detail": "JSON payload must be an object"})
    response = await client.post("/v1/music/generate", content=b"hello", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["detail"].startswith("Unsupported Content-Type: text/plain;")
    response = await client.post("/v1/music/generate", json={"caption": "x", "inference_steps": 0})
    assert response.status_code == 400 and "inference_steps" in response.json()["detail"]


async def test_queue_full_answers_429(settings, engine):
    async with serve(settings.model_copy(update={"queue_maxsize": 1}), engine, start_worker=False) as (_, client):
        await submit(client, json={"caption": "x"})
        response = await client.post("/v1/music/generate", json={"caption": "y"})
        assert (response.status_code, response.json()) == (429, {"detail": "Server busy: queue is full"})


# --- One queue for both APIs ------------------------------------------------------------------


async def test_both_apis_see_each_others_jobs(idle):
    _, client = idle
    legacy_id = await submit(client, json={"caption": "legacy"})
    response = await client.post("/release_task", json={"prompt": "official"})
    task_id = response.json()["data"]["task_id"]
    assert response.json()["data"]["queue_position"] == 2  # behind the legacy job

    response = await client.post("/query_result", json={"task_id_list": [legacy_id]})
    [item] = response.json()["data"]
    assert (item["task_id"], item["status"]) == (legacy_id, 0)
    assert json.loads(item["result"])[0]["stage"] == "queued"

    shown = await view(client, task_id)
    place = [shown[key] for key in ("job_id", "status", "queue_position", "eta_seconds")]
    assert place == [task_id, "queued", 2, 10.0]


# --- /v1/music/random -------------------------------------------------------------------------


@pytest.fixture
def lm_engine(tiny_lm_engine, settings):
    engine = copy.copy(tiny_lm_engine)
    engine.output_dir = settings.audio_dir
    return engine


async def test_random_without_the_lm_is_refused_at_once(idle):
    app, client = idle
    response = await client.post("/v1/music/random", json={})
    assert (response.status_code, response.json()) == (503, {"detail": LLM_NOT_INITIALIZED})
    assert app.state.queue.size == 0


async def test_random_when_the_lm_failed_to_load(settings, engine):
    broken = copy.copy(engine)
    broken.lm_error = "no such folder: acestep-5Hz-lm-4B"
    async with serve(settings, broken, start_worker=False) as (_, client):
        response = await client.post("/v1/music/random")
        assert response.status_code == 500
        assert response.json() == {"detail": "LLM init failed: no such folder: acestep-5Hz-lm-4B"}


@pytest.mark.parametrize("request_kwargs, thinking", [
    ({}, True),
    ({"json": {}}, True),
    ({"json": {"thinking": False}}, False),
    ({"json": {"Thinking": "false"}}, False),
    ({"params": {"thinking": "0"}}, False),
    ({"params": {"Thinking": "true"}}, True),
])
async def test_random_creates_a_sample_mode_job(settings, lm_engine, request_kwargs, thinking):
    async with serve(settings, lm_engine, start_worker=False) as (app, client):
        response = await client.post("/v1/music/random", **request_kwargs)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer == {"job_id": answer["job_id"], "status": "queued", "queue_position": 1}
        request = app.state.queue.get(answer["job_id"]).request
        assert (request.sample_mode, request.thinking, request.prompt, request.lyrics) == (True, thinking, "", "")


async def test_random_job_gets_its_caption_from_the_lm(settings, lm_engine):
    async with serve(settings, lm_engine) as (app, client):
        response = await client.post("/v1/music/random", json={"thinking": True})
        job = await wait_finished(app, response.json()["job_id"])
        assert job.status.value == "succeeded", job.error
        result = (await view(client, job.id))["result"]
        assert result["metas"]["caption"] == job.result.prompt != ""
        assert isinstance(result["bpm"], int) and isinstance(result["duration"], float)
        assert len(result["audio_paths"]) == 2  # the default batch


# --- The optional key -------------------------------------------------------------------------


async def test_the_key_is_enforced_when_set(settings, engine):
    async with serve(settings.model_copy(update={"api_key": "secret"}), engine, start_worker=False) as (_, client):
        response = await client.post("/v1/music/generate", json={"caption": "x"})
        assert (response.status_code, response.json()) == (401, {"detail": "Missing ai_token or Authorization header"})
        response = await client.post("/v1/music/generate", json={"caption": "x", "ai_token": "bad"})
        assert (response.status_code, response.json()) == (401, {"detail": "Invalid ai_token"})
        job_id = await submit(client, json={"caption": "x", "ai_token": "secret"})
        await submit(client, data={"caption": "x"}, headers={"Authorization": "Bearer secret"})

        response = await client.get(f"/v1/jobs/{job_id}")
        assert (response.status_code, response.json()) == (401, {"detail": "Missing Authorization header"})
        response = await client.get(f"/v1/jobs/{job_id}", headers={"Authorization": "Bearer wrong"})
        assert (response.status_code, response.json()) == (401, {"detail": "Invalid API key"})
        response = await client.get(f"/v1/jobs/{job_id}", headers={"Authorization": "Bearer secret"})
        assert response.status_code == 200 and response.json()["queue_position"] == 1

        # Auth comes before the LM check: a stranger learns nothing about the server.
        response = await client.post("/v1/music/random", json={})
        assert response.status_code == 401
        response = await client.post("/v1/music/random", json={}, headers={"Authorization": "Bearer secret"})
        assert response.status_code == 503
