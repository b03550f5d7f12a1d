"""POST /v1/chat/completions through HTTP: the OpenRouter-shaped answer (the chat completion example of
docs/wire-contract.md#conformance-examples), how messages
become caption, lyrics or a sample query, input audio, streaming with heartbeats, errors,
the LM gate, timeouts and cancellation."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from acestep_api.engine.request import GenerationError, GenerationRequest
from acestep_api.jobs.models import JobStatus
from acestep_api.server.routes import chat
from tests.server.conftest import serve

pytestmark = pytest.mark.anyio

URL = "/v1/chat/completions"
MODEL = "acestep/acestep-v15-turbo"
NOTHING_USABLE = "No valid prompt, lyrics, sample query, or input audio found in request"
E20 = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "<prompt>Lo-fi hip hop beat</prompt>"}],
    "batch_size": 1,
    "audio_config": {"instrumental": True, "duration": 30},
}


def user(content) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}]}


def wav_base64(seconds: float = 1.5, rate: int = 44100) -> str:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.stack([tone, tone], axis=1), rate, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def audio_part(data: str, fmt: str | None = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": data, **({"format": fmt} if fmt else {})}}


def uploads(settings) -> list[Path]:
    return sorted(settings.upload_dir.glob("*")) if settings.upload_dir.exists() else []


def record_jobs(app) -> list[dict]:
    """Each job submitted from now on, with the length of each audio file it was given, read
    at submission (the queue deletes the files when the job ends)."""
    queue, original, seen = app.state.queue, app.state.queue.submit, []

    def submit(request, *args, **kwargs):
        job, position = original(request, *args, **kwargs)
        files = {name: soundfile.info(getattr(request, name)).duration
                 for name in ("src_audio_path", "reference_audio_path") if getattr(request, name)}
        seen.append({"job": job, "seconds": files})
        return job, position

    queue.submit = submit
    return seen


def sse_payloads(text: str) -> list[str]:
    """The `data:` payloads of a server-sent event stream, in order."""
    events = [event for event in text.split("\n\n") if event]
    assert all(event.startswith("data: ") for event in events), text[:500]
    return [event[len("data: "):] for event in events]


def deltas(payloads: list[str], model: str = MODEL) -> list[tuple[dict, str | None]]:
    """(delta, finish_reason) per chunk; checks the chunk envelope and the closing [DONE]."""
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(payload) for payload in payloads[:-1]]
    assert len({chunk["id"] for chunk in chunks}) == 1 and re.fullmatch(r"chatcmpl-[0-9a-f]{16}", chunks[0]["id"])
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk" and chunk["model"] == model
        assert isinstance(chunk["created"], int) and len(chunk["choices"]) == 1 and chunk["choices"][0]["index"] == 0
    return [(chunk["choices"][0]["delta"], chunk["choices"][0]["finish_reason"]) for chunk in chunks]


def decoded_audio(url: str, tmp_path: Path, mime: str = "audio/mpeg", suffix: str = ".mp3") -> soundfile._SoundFileInfo:
    prefix = f"data:{mime};base64,"
    assert url.startswith(prefix)
    path = tmp_path / f"answer{suffix}"
    path.write_bytes(base64.b64decode(url[len(prefix):], validate=True))
    return soundfile.info(str(path))


class GatedEngine:
    """The tiny engine behind a gate: a job reports progress (where a cancel takes effect)
    until the test opens the gate, then generates; it gives up after a minute."""

    def __init__(self, engine):
        self.engine, self.gate, self.started = engine, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, request, progress=None):
        self.started.set()
        deadline = time.monotonic() + 60
        while not self.gate.wait(0.02):
            progress(0.05, "waiting for the test")
            if time.monotonic() > deadline:
                raise GenerationError("the test never opened the gate")
        return self.engine.generate(request, progress)


class FailingEngine:
    def __init__(self, engine):
        self.engine = engine

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, request, progress=None):
        raise GenerationError("the tiny model is out of tunes")


class AsgiStream:
    """Drives the app as a server does, so a test can read each event as it is sent and
    hang up mid-stream (httpx's in-process transport hands the body over only at the end)."""

    def __init__(self, app, body: dict):
        self.app, self.body = app, json.dumps(body).encode()
        self.events: asyncio.Queue[str] = asyncio.Queue()
        self.hang_up = asyncio.Event()
        self.status: int | None = None
        self._buffer = b""

    async def run(self) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": URL, "raw_path": URL.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
        }
        body_sent = False

        async def receive():
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": self.body, "more_body": False}
            await self.hang_up.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                self._buffer += message.get("body", b"")
                while b"\n\n" in self._buffer:
                    event, self._buffer = self._buffer.split(b"\n\n", 1)
                    self.events.put_nowait(event.decode().removeprefix("data: "))

        await self.app(scope, receive, send)

    async def next_delta(self) -> tuple[dict, str | None] | str:
        payload = await asyncio.wait_for(self.events.get(), 60)
        if payload == "[DONE]":
            return payload
        choice = json.loads(payload)["choices"][0]
        return choice["delta"], choice["finish_reason"]


@pytest.fixture
async def parked(settings, lm_engine):
    """An app whose jobs never start and whose chat requests give up at once (504), so a
    test sees the GenerationRequest a chat request makes without generating it."""
    async with serve(settings.model_copy(update={"generation_timeout": 0.05}), lm_engine,
                     start_worker=False) as (app, client):
        yield app, client, record_jobs(app)


async def parked_request(parked, body: dict) -> tuple[GenerationRequest, dict]:
    app, client, seen = parked
    response = await client.post(URL, json=body)
    assert response.status_code == 504, response.text
    assert response.json() == {"detail": "Generation timeout"}
    return seen[-1]["job"].request, seen[-1]["seconds"]


# --- The chat completion example: the non-streaming answer ------------------------------------


async def test_e20_answers_an_openrouter_completion_with_the_song(live, tmp_path):
    app, client = live
    seen = record_jobs(app)
    before = int(time.time())
    response = await client.post(URL, json=E20)
    assert response.status_code == 200, response.text
    body = response.json()
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{16}", body["id"])
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert before <= body["created"] <= int(time.time())
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    message = choice["message"]
    assert message["role"] == "assistant"
    # No LM: bpm, key and time signature are unknown and left out; an instrumental has no lyrics block.
    assert message["content"] == "## Metadata\n**Caption:** Lo-fi hip hop beat\n**Duration:** 30s"
    [audio] = message["audio"]
    assert audio["type"] == "audio_url" and message["audio_codes"] is None  # no LM, no codes
    info = decoded_audio(audio["audio_url"]["url"], tmp_path)
    assert info.samplerate == 48000 and info.channels == 2
    assert abs(info.duration - 30.0) < 0.1

    job = seen[0]["job"]
    request = job.request
    assert (request.prompt, request.lyrics, request.sample_query) == ("Lo-fi hip hop beat", "[inst]", "")
    assert (request.model, request.batch_size, request.inference_steps) == ("acestep-v15-turbo", 1, 8)
    assert request.audio_duration == 30.0 and not request.sample_mode
    assert request.use_random_seed and request.vocal_language == "en" and request.audio_format == "mp3"
    assert app.state.queue.get(job.id).api.value == "chat"


async def test_lyrics_and_options_reach_the_song(live, tmp_path):
    app, client = live
    seen = record_jobs(app)
    body = user("<prompt>Slow waltz</prompt>\n<lyrics>[verse]\nOne two three</lyrics>")
    body.update(seed="42", audio_config={"duration": 10, "format": "wav", "bpm": 90, "key_scale": "A minor",
                                         "time_signature": "3/4"})
    response = await client.post(URL, json=body)
    assert response.status_code == 200, response.text
    message = response.json()["choices"][0]["message"]
    assert message["content"] == (
        "## Metadata\n**Caption:** Slow waltz\n**BPM:** 90\n**Duration:** 10s\n**Key:** A minor\n"
        "**Time Signature:** 3\n\n## Lyrics\n[verse]\nOne two three"
    )
    info = decoded_audio(message["audio"][0]["audio_url"]["url"], tmp_path, "audio/wav", ".wav")
    assert info.samplerate == 48000 and abs(info.duration - 10.0) < 0.05
    request = seen[0]["job"].request
    assert (request.use_random_seed, request.seeds) == (False, [42])


async def test_a_failed_job_is_a_500_with_its_error(settings, engine):
    async with serve(settings, FailingEngine(engine)) as (_, client):
        response = await client.post(URL, json=E20)
    assert response.status_code == 500
    assert response.json() == {"detail": "the tiny model is out of tunes"}


# --- refused requests ----------------------------------------------------------------------


@pytest.mark.parametrize(("body", "status", "detail"), [
    ({"messages": [{"role": "user", "content": "<prompt>x</prompt>"}]}, 400,
     "Invalid request format: model: Field required"),
    ({"model": MODEL}, 400, "Invalid request format: messages: Field required"),
    ({"model": MODEL, "messages": [{"role": "system", "content": "You write songs."}]}, 400, NOTHING_USABLE),
    ({"model": MODEL, "messages": [{"role": "assistant", "content": "<prompt>x</prompt>"}]}, 400, NOTHING_USABLE),
    ({"model": MODEL, "messages": []}, 400, NOTHING_USABLE),
    ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, 400,
     "Invalid request format: messages[0].role: Input should be 'system', 'user' or 'assistant'"),
    ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, 400,
     "Invalid request format: messages[0].content: must be a string or a list of content parts"),
    ({**user([{"type": "input_audio", "input_audio": {"format": "wav"}}])}, 400,
     "Invalid request format: messages[0].content[0].input_audio.data: Field required"),
    ({**user("<prompt>x</prompt>"), "temperature": 3}, 400,
     "Invalid request format: temperature: Input should be less than or equal to 2"),
    ({**user("<prompt>x</prompt>"), "audio_config": {"bpm": 1000}}, 400,
     "audio_config.bpm must be an integer between 30 and 300 (got 1000)"),
    ({**user("<prompt>x</prompt>"), "audio_config": {"duration": 5}}, 400,
     "audio_config.duration must be between 10 and 600 seconds (got 5)"),
    ({**user("<prompt>x</prompt>"), "audio_config": {"format": "aiff"}}, 400,
     "audio_config.format must be one of mp3, wav, flac, opus, wav32, aac (got 'aiff')"),
    ({**user("<prompt>x</prompt>"), "task_type": "remix"}, 400,
     "task_type must be one of text2music, repaint, cover, cover-nofsq, extract, lego, complete, music_continuation (got 'remix')"),
    ({**user("<prompt>x</prompt>"), "seed": "4,x"}, 400,
     "seed must be an integer between 0 and 4294967295, -1 for random, or a comma-separated list of them (got '4,x')"),
    ({**user("<prompt>x</prompt>"), "task_type": "repaint"}, 400,
     "task_type 'repaint' needs source audio: add an input_audio part to a user message"),
    ({**user("<prompt>x</prompt>"), "task_type": "lego"}, 400,
     "task_type 'lego' is not supported by model 'acestep-v15-turbo'; models that support it: acestep-v15-base"),
])
async def test_unusable_requests_are_refused_naming_the_field(idle, settings, body, status, detail):
    app, client = idle
    response = await client.post(URL, json=body)
    assert response.status_code == status
    assert response.json() == {"detail": detail}
    assert app.state.queue.stats()["jobs"]["total"] == 0


@pytest.mark.parametrize(("raw", "detail"), [
    (b"{bad", "Invalid request format: the body is not valid JSON"),
    (b"[1, 2]", "Invalid request format: the body must be a JSON object"),
    (b"", "Invalid request format: the body is not valid JSON"),
])
async def test_a_malformed_body_is_a_400_not_a_422(idle, raw, detail):
    _, client = idle
    response = await client.post(URL, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith(detail)


@pytest.mark.parametrize(("data", "fmt", "detail"), [
    ("!!not base64!!", "wav", "messages[0].content[1].input_audio.data is not valid base64"),
    ("data:audio/wav,RIFF", "wav", "messages[0].content[1].input_audio.data must be base64 audio or a data URL"),
    (base64.b64encode(b"this is not audio at all").decode(), "wav",
     "messages[0].content[1].input_audio.data: audio file"),
    (wav_base64(), "../../x", "messages[0].content[1].input_audio.format must be a file type"),
])
async def test_bad_input_audio_is_a_400_naming_the_part(idle, settings, data, fmt, detail):
    app, client = idle
    response = await client.post(URL, json={**user([{"type": "text", "text": "<prompt>x</prompt>"},
                                                     audio_part(data, fmt)]), "task_type": "cover"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith(detail), response.json()
    assert uploads(settings) == []
    assert app.state.queue.stats()["jobs"]["total"] == 0


async def test_input_audio_over_the_upload_limit_is_a_413(settings, engine):
    async with serve(settings.model_copy(update={"max_upload_mb": 0.01}), engine, start_worker=False) as (app, client):
        response = await client.post(URL, json={**user([audio_part(wav_base64())]), "task_type": "cover"})
    assert response.status_code == 413
    assert response.json()["detail"].startswith("messages[0].content[0].input_audio.data: the audio is larger than")
    assert uploads(settings) == []


async def test_a_body_too_large_for_its_audio_is_a_413(settings, engine):
    async with serve(settings.model_copy(update={"max_upload_mb": 0.01}), engine, start_worker=False) as (_, client):
        response = await client.post(URL, json=user("<prompt>" + "x" * (2 << 20) + "</prompt>"))
    assert response.status_code == 413
    assert response.json()["detail"].startswith("request body is larger than 1 MB")


async def test_a_full_queue_is_a_429_and_keeps_no_audio(settings, engine):
    async with serve(settings.model_copy(update={"queue_maxsize": 1}), engine, start_worker=False) as (app, client):
        app.state.queue.submit(GenerationRequest(prompt="waiting"))
        for stream in (False, True):
            response = await client.post(URL, json={**user([audio_part(wav_base64())]), "stream": stream})
            assert response.status_code == 429
            assert response.json() == {"detail": "Server busy: queue is full"}
    assert uploads(settings) == []


async def test_with_an_api_key_the_header_is_required(settings, engine):
    async with serve(settings.model_copy(update={"api_key": "secret"}), engine, start_worker=False) as (_, client):
        body = {"model": MODEL, "messages": [{"role": "system", "content": "x"}]}
        missing = await client.post(URL, json=body)
        wrong = await client.post(URL, json=body, headers={"Authorization": "Bearer nope"})
        right = await client.post(URL, json=body, headers={"Authorization": "Bearer secret"})
    assert (missing.status_code, missing.json()) == (401, {"detail": "Missing Authorization header"})
    assert (wrong.status_code, wrong.json()) == (401, {"detail": "Invalid API key"})
    assert (right.status_code, right.json()) == (400, {"detail": NOTHING_USABLE})


# --- input audio -------------------------------------------------------------------------------
# (How the messages and options become a GenerationRequest: tests/dialects/test_chat.py.)


async def test_input_audio_is_the_source_of_a_cover(parked, settings):
    data_url = "data:audio/wav;base64," + wav_base64(2.0)
    request, seconds = await parked_request(parked, {
        **user([{"type": "text", "text": "<prompt>Jazz cover</prompt>"}, audio_part(wav_base64(1.5)),
                audio_part(data_url, None)]),
        "task_type": "cover", "audio_cover_strength": 0.6,
    })
    assert (request.task_type, request.audio_cover_strength) == ("cover", 0.6)
    assert abs(seconds["src_audio_path"] - 1.5) < 0.01 and abs(seconds["reference_audio_path"] - 2.0) < 0.01
    assert Path(request.src_audio_path).parent == settings.upload_dir.absolute()
    assert request.reference_audio_path.endswith(".wav")  # named by the data URL's type
    assert uploads(settings) == []  # the cancelled job took its files with it


@pytest.mark.parametrize("task_type", [None, "music_continuation"])
async def test_input_audio_is_the_reference_of_text2music(parked, settings, task_type):
    body = user([audio_part(wav_base64(1.5)), {"type": "text", "text": "<prompt>In this style</prompt>"}])
    if task_type:
        body["task_type"] = task_type
    request, seconds = await parked_request(parked, body)
    assert request.task_type == "text2music" and request.src_audio_path is None
    assert list(seconds) == ["reference_audio_path"] and abs(seconds["reference_audio_path"] - 1.5) < 0.01
    assert uploads(settings) == []


async def test_audio_alone_is_enough_to_make_a_request(parked):
    request, seconds = await parked_request(parked, user([audio_part(wav_base64())]))
    assert (request.prompt, request.lyrics, request.sample_query) == ("", "", "")
    assert list(seconds) == ["reference_audio_path"]


# --- the 5 Hz LM ---------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    {**user("An upbeat pop song about summer"), "sample_mode": True},
    {**user("<prompt>x</prompt>"), "thinking": True},
    {**user("<prompt>x</prompt>"), "use_format": True},
])
async def test_without_the_lm_requests_that_need_it_are_a_503(idle, body):
    app, client = idle
    response = await client.post(URL, json=body)
    assert response.status_code == 503
    assert response.json()["detail"].startswith("Model not initialized. init_error=the 5Hz LM is not loaded; ")
    assert app.state.queue.stats()["jobs"]["total"] == 0


async def test_a_plain_description_is_written_into_a_song_by_the_lm(settings, lm_engine, tmp_path):
    async with serve(settings, lm_engine) as (app, client):
        seen = record_jobs(app)
        response = await client.post(URL, json={**user("a calm piano piece for a rainy evening"),
                                                "sample_mode": True, "audio_config": {"format": "wav"}})
    assert response.status_code == 200, response.text
    request = seen[0]["job"].request
    assert (request.sample_query, request.prompt) == ("a calm piano piece for a rainy evening", "")
    assert request.sample_mode
    message = response.json()["choices"][0]["message"]
    # The LM wrote the caption and the metadata the answer shows.
    caption = re.search(r"^\*\*Caption:\*\* (.+)$", message["content"], re.MULTILINE)
    assert message["content"].startswith("## Metadata\n") and caption and caption.group(1) != request.sample_query
    for label in ("BPM", "Duration", "Key", "Time Signature"):
        assert f"\n**{label}:** " in message["content"]
    # In sample mode the LM's duration wins; the answer reports the one the audio has.
    duration = float(re.search(r"^\*\*Duration:\*\* ([0-9.]+)s$", message["content"], re.MULTILINE).group(1))
    info = decoded_audio(message["audio"][0]["audio_url"]["url"], tmp_path, "audio/wav", ".wav")
    assert abs(info.duration - duration) < 0.05


# --- streaming -----------------------------------------------------------------------------


async def test_a_stream_sends_the_song_as_chunks(live, tmp_path):
    _, client = live
    response = await client.post(URL, json={**user("<prompt>Surf rock</prompt>\n<lyrics>[verse]\nwaves</lyrics>"),
                                            "stream": True, "audio_config": {"duration": 10}})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = deltas(sse_payloads(response.text))
    assert chunks[0] == ({"role": "assistant", "content": ""}, None)
    middle, tail = chunks[1:-3], chunks[-3:]
    assert all(chunk == ({"content": "."}, None) for chunk in middle)  # heartbeats, however many
    details = "## Metadata\n**Caption:** Surf rock\n**Duration:** 10s\n\n## Lyrics\n[verse]\nwaves"
    assert tail[0] == ({"content": "\n\n" + details}, None)
    [audio] = tail[1][0]["audio"]
    assert tail[1][1] is None and audio["type"] == "audio_url"
    assert abs(decoded_audio(audio["audio_url"]["url"], tmp_path).duration - 10.0) < 0.1
    assert tail[2] == ({}, "stop")


async def test_a_stream_sends_heartbeats_while_the_job_runs(settings, engine, monkeypatch):
    monkeypatch.setattr(chat, "HEARTBEAT_SECONDS", 0.01)
    gated = GatedEngine(engine)
    async with serve(settings, gated) as (app, _):
        stream = AsgiStream(app, {**user("<prompt>Drum and bass</prompt>"), "stream": True,
                                  "audio_config": {"duration": 10}})
        task = asyncio.create_task(stream.run())
        assert await stream.next_delta() == ({"role": "assistant", "content": ""}, None)
        # The job is held until two heartbeats have arrived: they come while it runs.
        assert await stream.next_delta() == ({"content": "."}, None)
        assert await stream.next_delta() == ({"content": "."}, None)
        gated.gate.set()
        rest = []
        while (event := await stream.next_delta()) != "[DONE]":
            rest.append(event)
        await asyncio.wait_for(task, 60)
    assert stream.status == 200
    rest = [event for event in rest if event != ({"content": "."}, None)]
    assert len(rest) == 3
    assert rest[0] == ({"content": "\n\n## Metadata\n**Caption:** Drum and bass\n**Duration:** 10s"}, None)
    assert "audio" in rest[1][0] and rest[2] == ({}, "stop")


async def test_a_failed_job_ends_the_stream_with_its_error(settings, engine):
    async with serve(settings, FailingEngine(engine)) as (_, client):
        response = await client.post(URL, json={**E20, "stream": True})
    assert response.status_code == 200
    chunks = deltas(sse_payloads(response.text))
    assert chunks[0] == ({"role": "assistant", "content": ""}, None)
    assert chunks[-2:] == [({"content": "\n\nError: the tiny model is out of tunes"}, None), ({}, "error")]
    assert all(chunk == ({"content": "."}, None) for chunk in chunks[1:-2])


async def test_hanging_up_mid_stream_cancels_the_job(settings, engine):
    gated = GatedEngine(engine)
    async with serve(settings, gated) as (app, _):
        seen = record_jobs(app)
        stream = AsgiStream(app, {**E20, "stream": True})
        task = asyncio.create_task(stream.run())
        assert await stream.next_delta() == ({"role": "assistant", "content": ""}, None)
        assert await asyncio.to_thread(gated.started.wait, 60)
        stream.hang_up.set()
        await asyncio.wait_for(task, 60)
        job = await app.state.queue.wait_finished(seen[0]["job"].id, 60)
    assert (job.status, job.stage, job.error) == (JobStatus.FAILED, "cancelled", "Cancelled by request")


async def test_hanging_up_on_a_non_streaming_request_cancels_the_job(settings, engine):
    """Without a stream nothing is sent until the song exists: the route watches the
    connection itself, and a client that goes away frees the worker at once."""
    gated = GatedEngine(engine)
    async with serve(settings, gated) as (app, _):
        seen = record_jobs(app)
        waiting = AsgiStream(app, E20)
        task = asyncio.create_task(waiting.run())
        assert await asyncio.to_thread(gated.started.wait, 60)
        waiting.hang_up.set()
        await asyncio.wait_for(task, 60)
        job = await app.state.queue.wait_finished(seen[0]["job"].id, 60)
    assert (job.status, job.stage, job.error) == (JobStatus.FAILED, "cancelled", "Cancelled by request")


# --- timeout -------------------------------------------------------------------------------


async def test_past_the_generation_timeout_the_answer_is_504_and_the_job_is_cancelled(settings, engine):
    gated = GatedEngine(engine)
    async with serve(settings.model_copy(update={"generation_timeout": 0.5}), gated) as (app, client):
        seen = record_jobs(app)
        response = await client.post(URL, json=E20)
        job = await app.state.queue.wait_finished(seen[0]["job"].id, 60)
    assert (response.status_code, response.json()) == (504, {"detail": "Generation timeout"})
    assert (job.status, job.stage, job.error) == (JobStatus.FAILED, "cancelled", "Cancelled by request")


async def test_a_stream_past_the_generation_timeout_ends_with_an_error(settings, engine):
    gated = GatedEngine(engine)
    async with serve(settings.model_copy(update={"generation_timeout": 0.5}), gated) as (app, client):
        seen = record_jobs(app)
        response = await client.post(URL, json={**E20, "stream": True})
        job = await app.state.queue.wait_finished(seen[0]["job"].id, 60)
    chunks = deltas(sse_payloads(response.text))
    assert chunks[-2:] == [({"content": "\n\nError: Generation timeout"}, None), ({}, "error")]
    assert (job.status, job.stage) == (JobStatus.FAILED, "cancelled")
