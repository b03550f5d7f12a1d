"""The request guard over real HTTP (in-process): body size limits by kind, the key checked
before a body is read, files that wait for a valid ai_token, invalid Unicode as a 400 naming
the field, and Retry-After on every 429."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import soundfile as sf

from acestep_api.engine.request import GenerationRequest
from tests.server.conftest import serve

pytestmark = pytest.mark.anyio

KEY = "secret"
CHUNK = 16 * 1024
MULTIPART = "multipart/form-data; boundary=b0undary"


def wav_bytes(seconds: float = 0.5, rate: int = 44100) -> bytes:
    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def uploads(settings) -> list:
    return sorted(settings.upload_dir.iterdir()) if settings.upload_dir.exists() else []


class CountingBody:
    """A streamed request body (no Content-Length) that records how much the server pulled."""

    def __init__(self, head: bytes, filler: bytes = b"x", total: int = 8 << 20, tail: bytes = b""):
        self.head, self.filler, self.total, self.tail = head, filler, total, tail
        self.sent = 0

    async def __aiter__(self):
        for piece in self._pieces():
            self.sent += len(piece)
            yield piece

    def _pieces(self):
        yield self.head
        for _ in range(self.total // CHUNK):
            yield self.filler * CHUNK
        yield self.tail


def file_part(name: str, filename: str) -> bytes:
    return (f'--b0undary\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: audio/wav\r\n\r\n").encode()


def text_part(name: str, value: str) -> bytes:
    return f'--b0undary\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


@pytest.fixture
def small(settings):
    """Settings with small limits, so the tests send little; synchronous routes (fal) give up
    at once on a job no worker takes, instead of waiting the default 600 s."""
    return settings.model_copy(update={"max_body_kb": 4, "max_upload_mb": 0.1, "generation_timeout": 0.2})


@pytest.fixture
def keyed(settings):
    return settings.model_copy(update={"api_key": KEY})


# --- sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/release_task", "/query_result", "/v1/music/generate", "/format_input",
                                  "/fal-ai/ace-step/prompt-to-audio"])
async def test_a_json_body_over_the_limit_is_a_413_naming_the_setting(small, engine, path):
    async with serve(small, engine, start_worker=False) as (_, client):
        response = await client.post(path, json={"prompt": "x" * 5000})
        assert (response.status_code, response.json()) == (
            413, {"detail": "request body is larger than the 4 KB limit (ACESTEP_MAX_BODY_KB)"})
        # Just under the limit is read as usual.
        response = await client.post(path, json={"prompt": "x" * 3000})
        assert response.status_code != 413


async def test_a_streamed_body_stops_being_read_at_the_limit(small, engine):
    body = CountingBody(b'{"prompt": "', total=64 << 20, tail=b'"}')
    async with serve(small, engine, start_worker=False) as (app, client):
        response = await client.post("/release_task", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert "ACESTEP_MAX_BODY_KB" in response.json()["detail"]
        assert body.sent <= small.max_body_bytes + 2 * CHUNK
        assert app.state.queue.stats()["jobs"]["total"] == 0


async def test_a_form_body_has_the_same_limit(small, engine):
    async with serve(small, engine, start_worker=False) as (_, client):
        response = await client.post("/release_task", data={"prompt": "x" * 5000})
    assert response.status_code == 413 and "ACESTEP_MAX_BODY_KB" in response.json()["detail"]


async def test_a_multipart_body_over_its_total_is_a_413_and_leaves_nothing(small, engine):
    settings = small.model_copy(update={"max_request_mb": 0.15})
    body = CountingBody(text_part("prompt", "x") + text_part("task_type", "cover") + file_part("ctx_audio", "a.wav"),
                        total=50 << 10, tail=b"\r\n" + file_part("ref_audio", "b.wav") + b"y" * (120 << 10)
                        + b"\r\n--b0undary--\r\n")
    async with serve(settings, engine, start_worker=False) as (app, client):
        response = await client.post("/release_task", content=body, headers={"Content-Type": MULTIPART})
        assert response.status_code == 413
        assert response.json()["detail"] == ("request body is larger than the 0.15 MB limit of a multipart request "
                                             "(ACESTEP_MAX_REQUEST_MB; each file at most 0.1 MB, ACESTEP_MAX_UPLOAD_MB)")
        assert app.state.queue.stats()["jobs"]["total"] == 0
    assert uploads(settings) == []


async def test_the_multipart_total_defaults_to_two_uploads_and_the_text(small, engine):
    assert small.max_request_bytes == 2 * small.max_upload_bytes + small.max_body_bytes + 64 * 1024
    content = (text_part("prompt", "x") + file_part("lyrics_file", "a.txt") + b"z" * 1000 + b"\r\n--b0undary--\r\n")
    async with serve(small, engine, start_worker=False) as (_, client):
        response = await client.post("/release_task", content=content,
                                     headers={"Content-Type": MULTIPART, "Content-Length": str(small.max_request_bytes + 1)})
    # Refused from the declared length alone; the body was not even read (it is far shorter).
    assert response.status_code == 413 and "ACESTEP_MAX_REQUEST_MB" in response.json()["detail"]


async def test_the_text_fields_of_a_multipart_body_share_the_json_limit(small, engine):
    content = b"".join(text_part(f"f{i}", "t" * 1000) for i in range(5)) + b"--b0undary--\r\n"
    async with serve(small, engine, start_worker=False) as (_, client):
        response = await client.post("/release_task", content=content, headers={"Content-Type": MULTIPART})
    assert (response.status_code, response.json()) == (
        413, {"detail": "the form's text fields are larger than 4 KB together (ACESTEP_MAX_BODY_KB)"})


async def test_chat_bodies_may_carry_their_audio(small, engine):
    audio = base64.b64encode(wav_bytes(0.5)).decode()  # about 59 KB of base64, past 4 KB
    body = {"model": "acestep/acestep-v15-turbo", "task_type": "cover", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "<prompt>x</prompt>"},
        {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}}]}]}
    async with serve(small, engine, start_worker=False) as (app, client):
        # Read whole and parsed: the answer is about its seed, not its size.
        response = await client.post("/v1/chat/completions", json={**body, "seed": "x"})
        assert response.status_code == 400 and "seed" in response.json()["detail"], response.text[:300]
        response = await client.post("/v1/chat/completions", json={**body, "pad": "p" * (300 << 10)})
        assert response.status_code == 413
        assert response.json()["detail"] == (
            "request body is larger than 277 KB; input audio is limited to 0.1 MB per part (ACESTEP_MAX_UPLOAD_MB) "
            "and the rest of the body to 4 KB (ACESTEP_MAX_BODY_KB)")


# --- the key before the body -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/release_task", "/query_result", "/v1/chat/completions",
                                  "/fal-ai/ace-step/prompt-to-audio", "/v1/music/generate"])
async def test_a_wrong_header_is_refused_before_the_body_is_read(keyed, engine, path):
    body = CountingBody(b'{"prompt": "', total=64 << 20, tail=b'"}')
    async with serve(keyed, engine, start_worker=False) as (_, client):
        response = await client.post(path, content=body, headers={"Authorization": "Bearer wrong",
                                                                  "Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid API key"})
    assert body.sent == 0


async def test_a_wrong_header_is_refused_even_beside_a_right_ai_token(keyed, engine):
    async with serve(keyed, engine, start_worker=False) as (_, client):
        response = await client.post("/release_task", json={"prompt": "x", "ai_token": KEY},
                                     headers={"Authorization": "Bearer wrong"})
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid API key"})


async def test_open_get_routes_do_not_judge_a_header(keyed, engine):
    async with serve(keyed, engine, start_worker=False) as (_, client):
        response = await client.get("/health", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 200


async def test_an_unauthenticated_file_part_is_refused_before_it_is_written(keyed, engine):
    body = CountingBody(text_part("prompt", "x") + file_part("src_audio", "a.wav"), total=32 << 20,
                        tail=b"\r\n--b0undary--\r\n")
    async with serve(keyed, engine, start_worker=False) as (app, client):
        response = await client.post("/release_task", content=body, headers={"Content-Type": MULTIPART})
        assert response.status_code == 401
        assert response.json()["detail"] == (
            "Missing ai_token or Authorization header: a file part came before a valid ai_token field; "
            "send the Authorization header, or put the ai_token field before the files")
        assert app.state.queue.stats()["jobs"]["total"] == 0
    assert body.sent <= len(body.head) + 2 * CHUNK
    assert uploads(keyed) == []


async def test_a_wrong_ai_token_is_refused_before_the_files_come(keyed, engine):
    body = CountingBody(text_part("ai_token", "wrong") + file_part("src_audio", "a.wav"), total=32 << 20,
                        tail=b"\r\n--b0undary--\r\n")
    async with serve(keyed, engine, start_worker=False) as (_, client):
        response = await client.post("/release_task", content=body, headers={"Content-Type": MULTIPART})
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid ai_token"})
    assert body.sent <= len(body.head) + 2 * CHUNK
    assert uploads(keyed) == []


async def test_files_after_a_valid_ai_token_or_with_the_header_are_kept(keyed, engine):
    audio = wav_bytes()
    async with serve(keyed, engine, start_worker=False) as (app, client):
        for data, headers in (({"ai_token": KEY, "task_type": "cover"}, {}),
                              ({"task_type": "cover"}, {"Authorization": f"Bearer {KEY}"})):
            response = await client.post("/release_task", data=data, headers=headers,
                                         files={"src_audio": ("a.wav", audio, "audio/wav")})
            assert response.status_code == 200, response.text
    assert [path.read_bytes() for path in uploads(keyed)] == [audio, audio]


# --- invalid Unicode ---------------------------------------------------------------------


@pytest.mark.parametrize(("path", "field"), [
    ("/release_task", "prompt"),
    ("/release_task", "lyrics"),
    ("/v1/music/generate", "caption"),
    ("/format_input", "prompt"),
    ("/create_random_sample", "sample_type"),
    ("/query_result", "task_id_list"),
    ("/fal-ai/ace-step/prompt-to-audio", "prompt"),
])
async def test_a_lone_surrogate_is_a_400_naming_the_field(idle, path, field):
    _, client = idle
    raw = '{"%s": "abc\\ud800def"}' % field
    response = await client.post(path, content=raw.encode(), headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (
        400, {"detail": f"{field}: text must be valid Unicode (a lone surrogate \\ud800 at position 3)"})


async def test_surrogates_are_found_wherever_they_are(idle):
    _, client = idle
    cases = {
        '{"model": "m", "messages": [{"role": "user", "content": "x\\udc00"}]}':
            "messages[0].content: text must be valid Unicode (a lone surrogate \\udc00 at position 1)",
        '{"prompt": "x", "\\ud801name": 1}':
            "\\ud801name (the field name): text must be valid Unicode (a lone surrogate \\ud801 at position 0)",
    }
    for raw, detail in cases.items():
        response = await client.post("/v1/chat/completions", content=raw.encode(),
                                     headers={"Content-Type": "application/json"})
        assert (response.status_code, response.json()) == (400, {"detail": detail})
    # curl -d sends JSON labelled as a form; it is read as JSON, so it is checked as JSON.
    response = await client.post("/release_task", content=b'{"prompt": "\\udfff"}',
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400 and response.json()["detail"].startswith("prompt: text must be valid Unicode")


async def test_a_surrogate_pair_is_a_character_like_any_other(idle):
    app, client = idle
    response = await client.post("/release_task", content=b'{"prompt": "song \\ud83c\\udfb5"}',
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert app.state.queue.get(response.json()["data"]["task_id"]).request.prompt == "song \U0001f3b5"


async def test_a_large_chat_body_is_checked_by_the_route(small, engine):
    audio = base64.b64encode(wav_bytes(0.5)).decode()  # past the 4 KB the guard keeps a copy of
    body = {"model": "m", "task_type": "cover", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "<prompt>PLACE</prompt>"},
        {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}}]}]}
    raw = json.dumps(body).replace("PLACE", "\\ud800").encode()
    async with serve(small, engine, start_worker=False) as (_, client):
        response = await client.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["detail"] == ("messages[0].content[0].text: text must be valid Unicode "
                                         "(a lone surrogate \\ud800 at position 8)")


# --- Retry-After -------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body"), [
    ("/release_task", {"prompt": "x"}),
    ("/v1/music/generate", {"caption": "x"}),
    ("/v1/chat/completions", {"model": "acestep/acestep-v15-turbo",
                              "messages": [{"role": "user", "content": "<prompt>x</prompt>"}]}),
    ("/fal-ai/ace-step/prompt-to-audio", {"prompt": "x"}),
])
async def test_every_429_says_when_to_retry(settings, engine, path, body):
    settings = settings.model_copy(update={"queue_maxsize": 1, "avg_job_seconds": 7.2})
    async with serve(settings, engine, start_worker=False) as (app, client):
        app.state.queue.submit(GenerationRequest(prompt="waiting"))
        response = await client.post(path, json=body)
    assert (response.status_code, response.json()) == (429, {"detail": "Server busy: queue is full"})
    assert response.headers["retry-after"] == "8"  # the average job's seconds, rounded up
