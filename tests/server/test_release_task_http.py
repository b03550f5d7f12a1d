"""POST /release_task over HTTP: content types, the 400/415/429 answers (uploads: test_uploads.py)."""

from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pytest
import soundfile as sf

from acestep_api.server.app import create_app
from tests.server.conftest import serve, wait_finished

pytestmark = pytest.mark.anyio

ENVELOPE_KEYS = ["data", "code", "error", "timestamp", "extra"]


def assert_envelope(body: dict) -> None:
    assert list(body) == ENVELOPE_KEYS
    assert body["code"] == 200 and body["error"] is None and body["extra"] is None
    assert isinstance(body["timestamp"], int) and body["timestamp"] > 1_600_000_000_000


async def test_e2_caption_and_duration_aliases(idle):
    app, client = idle
    body = {"caption": "upbeat electronic dance music with heavy bass",
            "lyrics": "[Verse]\nDancing through the night...", "duration": 60}
    response = await client.post("/release_task", json=body)
    assert response.status_code == 200
    envelope = response.json()
    assert_envelope(envelope)
    data = envelope["data"]
    assert list(data) == ["task_id", "status", "queue_position"]
    assert uuid.UUID(data["task_id"]).version == 4
    assert data["status"] == "queued" and data["queue_position"] == 1
    job = app.state.store.get(data["task_id"])  # the persisted record, not just the live one
    assert job.request.prompt == body["caption"]
    assert job.request.lyrics == body["lyrics"]
    assert job.request.audio_duration == 60.0
    assert job.request.batch_size == 2


async def test_e3_cli_submit_and_positions(idle):
    app, client = idle
    body = {"caption": "Upbeat indie pop with jangly guitars and energetic vocals",
            "lyrics": "[Verse 1]\nWalking down the street\n", "duration": 90, "batch_size": 1}
    first = (await client.post("/release_task", json=body, headers={"User-Agent": "ACE-Step-CLI/1.0"})).json()
    second = (await client.post("/release_task", json=body)).json()
    assert first["code"] == 200 and isinstance(first["data"]["task_id"], str)
    assert (first["data"]["queue_position"], second["data"]["queue_position"]) == (1, 2)
    job = app.state.queue.get(first["data"]["task_id"])
    assert job.request.batch_size == 1 and job.request.audio_duration == 90.0
    polled = (await client.post("/query_result", json={"task_id_list": [first["data"]["task_id"]]})).json()
    assert len(json.loads(polled["data"][0]["result"])) == 1


async def test_plus_json_content_type(idle):
    app, client = idle
    response = await client.post("/release_task", content=b'{"prompt": "x", "bpm": "100"}',
                                 headers={"Content-Type": "application/vnd.acestep+json; charset=utf-8"})
    assert response.status_code == 200
    assert app.state.queue.get(response.json()["data"]["task_id"]).request.bpm == 100


async def test_e11_content_type_errors(idle):
    _, client = idle
    response = await client.post("/release_task", content=b"[1,2]", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (400, {"detail": "JSON payload must be an object"})

    response = await client.post("/release_task", content=b"hello", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert response.json() == {"detail": "Unsupported Content-Type: text/plain; use application/json, "
                                         "application/x-www-form-urlencoded, or multipart/form-data"}

    response = await client.post("/release_task", content=b"hello")  # no Content-Type at all
    assert response.status_code == 415
    assert response.json()["detail"].startswith("Unsupported Content-Type: (missing); ")

    response = await client.post("/release_task", content=b'{"prompt":"x"}')
    assert response.status_code == 200 and response.json()["data"]["status"] == "queued"

    response = await client.post("/release_task", content=b"{bad")
    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid JSON body (hint: set 'Content-Type: application/json')"}

    response = await client.post("/release_task", content=b"{bad", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (400, {"detail": "Malformed JSON payload"})


async def test_sniffed_query_string_and_urlencoded_form(idle):
    app, client = idle
    response = await client.post("/release_task", content=b"caption=rainy%20day&duration=30")
    assert response.status_code == 200
    job = app.state.queue.get(response.json()["data"]["task_id"])
    assert (job.request.prompt, job.request.audio_duration) == ("rainy day", 30.0)

    response = await client.post("/release_task", data={"prompt": "form song", "bpm": "90", "thinking": "true"})
    assert response.status_code == 200
    job = app.state.queue.get(response.json()["data"]["task_id"])
    assert (job.request.prompt, job.request.bpm, job.request.thinking) == ("form song", 90, True)


async def test_repeated_form_keys_collapse_to_lists(idle):
    app, client = idle
    response = await client.post("/release_task", content=b"prompt=x&track_classes=vocals&track_classes=drums",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    job = app.state.queue.get(response.json()["data"]["task_id"])
    assert job.request.track_classes == ["vocals", "drums"]


@pytest.mark.parametrize("body,field", [
    ({"audio_duration": 5000}, "audio_duration"), ({"batch_size": 0}, "batch_size"), ({"bpm": "fast"}, "bpm"),
    ({"audio_format": "wma"}, "audio_format"), ({"task_type": "remix"}, "task_type"),
    ({"infer_method": "x"}, "infer_method"), ({"lm_backend": "x"}, "lm_backend"),
])
async def test_impossible_values_are_a_400_naming_the_field(idle, body, field):
    app, client = idle
    response = await client.post("/release_task", json=body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field} must be")
    assert app.state.queue.stats()["jobs"]["total"] == 0


GARBAGE = [
    (b"\xff\xfe\x00garbage", "application/json"),
    (b"\xff\xfe{\x00", None),
    (b"[" * 100_000, "application/json"),
    (b'{"a":' * 50_000, None),
    (b'"just a string"', "application/json"),
    (b"null", "application/ld+json"),
    (b"--xyz\r\nnot really multipart", "multipart/form-data; boundary=xyz"),
    (b"prompt=x", "multipart/form-data"),
    (b"%zz=%%&&==", "application/x-www-form-urlencoded"),
    (b"=", None),
    (b"", "application/json"),
    (b'{"prompt": ["a", "b"], "bpm": {"x": 1}}', "application/json"),
    (b'{"seed": [[1]], "timesteps": {"a": 1}}', "application/json"),
    (b'{"param_obj": 5, "metas": [1], "task_id_list": 3}', "application/json"),
    (b'{"duration": 1e400, "bpm": -1e400}', "application/json"),
    (b"\x00\x01\x02", "application/octet-stream"),
]


@pytest.mark.parametrize("content,content_type", GARBAGE)
@pytest.mark.parametrize("path", ["/release_task", "/query_result", "/create_random_sample", "/format_input"])
async def test_malformed_bodies_never_give_a_server_error(idle, path, content, content_type):
    _, client = idle
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post(path, content=content, headers=headers)
    assert response.status_code < 500 or response.status_code == 503, response.text
    assert "detail" in response.json() or response.json()["code"] == 200


async def test_unexpected_errors_are_json_and_the_server_keeps_serving(settings, engine):
    import httpx

    app = create_app(settings, engine, start_worker=False)

    @app.get("/boom")
    async def boom():
        raise RuntimeError("secret internals")

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.get("/boom")
            assert response.status_code == 500
            assert response.json() == {"detail": "Internal server error; the details are in the server log"}
            assert (await client.get("/health")).status_code == 200


async def test_e18_queue_full_answers_429(settings, engine):
    settings = settings.model_copy(update={"queue_maxsize": 3})
    async with serve(settings, engine, start_worker=False) as (app, client):
        for expected_position in (1, 2, 3):
            response = await client.post("/release_task", json={"prompt": "x"})
            assert response.json()["data"]["queue_position"] == expected_position
        response = await client.post("/release_task", json={"prompt": "x"})
        assert (response.status_code, response.json()) == (429, {"detail": "Server busy: queue is full"})
        assert app.state.queue.size == 3


async def test_e12_multipart_upload_is_used_then_deleted_after_the_job(live, settings, tmp_path):
    app, client = live
    t = np.arange(48000) / 48000
    sf.write(tmp_path / "song.mp3", (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 48000)
    audio = (tmp_path / "song.mp3").read_bytes()
    response = await client.post(
        "/release_task",
        data={"prompt": "remix this song", "task_type": "repaint", "src_audio_path": "/not/used.mp3",
              "batch_size": "1", "inference_steps": "2"},
        files={"src_audio": ("song.mp3", audio, "audio/mpeg")},
    )
    assert response.status_code == 200, response.text
    task_id = response.json()["data"]["task_id"]
    path = app.state.store.get(task_id).request.src_audio_path
    assert os.path.dirname(path) == str(settings.upload_dir.resolve())
    assert os.path.basename(path).startswith("ctx_audio_") and path.endswith(".mp3")
    await wait_finished(app, task_id)
    assert not os.path.exists(path)  # whatever the outcome, the upload goes with the job


async def test_curl_d_json_labelled_as_a_form_is_read_as_json(idle):
    app, client = idle
    response = await client.post("/release_task", content=b'{"caption": "from curl", "duration": 30}',
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    job = app.state.queue.get(response.json()["data"]["task_id"])
    assert (job.request.prompt, job.request.audio_duration) == ("from curl", 30.0)


def test_after_a_500_the_keep_alive_connection_still_serves(settings, engine):
    """Under a real uvicorn: the 500 is answered on the connection, which then serves the next
    request (Starlette's outermost handler would re-raise and make uvicorn drop it)."""
    import http.client

    from tests.uvicorn_thread import uvicorn_serving

    app = create_app(settings, engine, start_worker=False)

    @app.get("/boom")
    async def boom():
        raise RuntimeError("secret internals")

    with uvicorn_serving(app, lifespan="on") as url:
        connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
        try:
            connection.connect()
            socket_used = connection.sock
            for _ in range(3):
                connection.request("GET", "/boom")
                answer = connection.getresponse()
                body = answer.read()
                assert answer.status == 500 and b"RuntimeError" not in body and b"secret" not in body
                assert answer.getheader("connection", "").lower() != "close"
            connection.request("GET", "/health")
            answer = connection.getresponse()
            assert answer.status == 200 and answer.read()
            # One socket served all four (http.client opens a new one silently after a close).
            assert connection.sock is socket_used
        finally:
            connection.close()
