"""POST /fal-ai/ace-step/prompt-to-audio through HTTP (seed 004; docs/wire-contract.md#fal-prompt-to-audio):
fal's examples, its ranges, the LM and no-LM paths, absolute URLs and fal's key scheme."""

from __future__ import annotations

import copy
import io
import json
import sqlite3
import urllib.parse

import httpx
import pytest
import soundfile

from acestep_api.engine.request import GenerationError, GenerationRequest, GenerationResult
from acestep_api.jobs.models import JobApi
from tests.server.conftest import serve

pytestmark = pytest.mark.anyio

PATH = "/fal-ai/ace-step/prompt-to-audio"
SEED_004_PROMPT = "A lofi hiphop song with a chill vibe about a sunny day on the boardwalk."
# Seed 004's "Full Example", every documented field.
FULL_EXAMPLE = {
    "prompt": SEED_004_PROMPT,
    "instrumental": False,
    "duration": 60,
    "number_of_steps": 27,
    "scheduler": "euler",
    "guidance_type": "apg",
    "granularity_scale": 10,
    "guidance_interval": 0.5,
    "guidance_interval_decay": 0,
    "guidance_scale": 15,
    "minimum_guidance_scale": 3,
    "tag_guidance_scale": 5,
    "lyric_guidance_scale": 1.5,
}


@pytest.fixture
async def lm_live(settings, lm_engine):
    async with serve(settings, lm_engine) as running:
        yield running


def fal_jobs(settings) -> list[GenerationRequest]:
    """The requests of the jobs this route queued, read from the job database."""
    with sqlite3.connect(settings.database_path) as db:
        rows = db.execute("SELECT request FROM jobs WHERE api = ? ORDER BY seq", (JobApi.FAL.value,)).fetchall()
    return [GenerationRequest.model_validate_json(request) for (request,) in rows]


def fal_results(settings) -> list[GenerationResult | None]:
    """The results of those jobs: what the DiT was conditioned on (the LM's text, with the LM)."""
    with sqlite3.connect(settings.database_path) as db:
        rows = db.execute("SELECT result FROM jobs WHERE api = ? ORDER BY seq", (JobApi.FAL.value,)).fetchall()
    return [GenerationResult.model_validate_json(result) if result else None for (result,) in rows]


async def download(client: httpx.AsyncClient, audio: dict) -> float:
    """Seconds of the audio an answer's `audio` serves, fetched through `client` (48 kHz
    stereo WAV, `file_size` bytes)."""
    response = await client.get(audio["url"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    assert len(response.content) == audio["file_size"]
    data, rate = soundfile.read(io.BytesIO(response.content))
    assert rate == 48000 and data.shape[1] == 2
    return len(data) / rate


def served_path(url: str) -> str:
    return urllib.parse.unquote(url.split("path=", 1)[1])


# --- The seed's examples -------------------------------------------------------------------


async def test_seed_004_required_example(lm_live, settings):
    _, client = lm_live
    response = await client.post(PATH, json={"prompt": SEED_004_PROMPT})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"audio", "seed", "tags", "lyrics"}
    assert isinstance(body["seed"], int) and 0 <= body["seed"] < 2**32
    assert isinstance(body["tags"], str) and body["tags"].strip()
    assert isinstance(body["lyrics"], str) and body["lyrics"].strip()
    audio = body["audio"]
    assert audio["url"].startswith("http://testserver/v1/audio?path=%2F")
    assert audio["content_type"] == "audio/wav"
    assert audio["file_name"].endswith(".wav") and audio["file_name"] in served_path(audio["url"])
    assert abs(await download(client, audio) - 60.0) < 0.05

    # One job: the LM wrote the text from the prompt (sample mode) and the DiT ran it, with
    # the reported seed.
    [job] = fal_jobs(settings)
    assert job.sample_mode and job.sample_query == SEED_004_PROMPT and job.sample_keeps_duration
    [result] = fal_results(settings)
    assert (result.prompt, result.lyrics) == (body["tags"], body["lyrics"])
    assert result.prompt != SEED_004_PROMPT
    assert (job.use_random_seed, job.seeds, job.batch_size, job.audio_duration) == (False, [body["seed"]], 1, 60.0)
    assert (job.inference_steps, job.guidance_scale, job.audio_format) == (27, 15.0, "wav")


async def test_seed_004_full_example_maps_every_field(lm_live, settings):
    _, client = lm_live
    # A shorter song than the example's 60 s keeps the test quick; the 60 s run is above.
    body = {**FULL_EXAMPLE, "duration": 12.5, "seed": 42, "extra_field_fal_does_not_know": [1]}
    response = await client.post(PATH, json=body)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["seed"] == 42
    assert abs(await download(client, body["audio"]) - 12.5) < 0.05
    [job] = fal_jobs(settings)
    assert job.audio_duration == 12.5
    assert (job.inference_steps, job.guidance_scale, job.infer_method, job.use_adg) == (27, 15.0, "ode", False)
    assert job.seeds == [42] and not job.use_random_seed
    # guidance_interval 0.5 over 27 steps: fal guides steps 6..19; their t values lie inside
    # the window and their neighbours' outside (base schedule, shift 3).
    steps = [3 * u / (1 + 2 * u) for u in (1 - k / 27 for k in range(27))]
    guided = [k for k, t in enumerate(steps) if job.cfg_interval_start <= t <= job.cfg_interval_end]
    assert guided == list(range(6, 20))


@pytest.mark.parametrize("interval,steps", [(0.0, 27), (0.1, 8), (0.3, 3), (0.5, 60), (0.77, 31), (1.0, 27)])
async def test_guidance_interval_guides_the_steps_fal_guides(settings, engine, interval, steps):
    # No worker: the job waits until the short timeout cancels it; its request is on record.
    impatient = settings.model_copy(update={"generation_timeout": 0.1})
    async with serve(impatient, engine, start_worker=False) as (_, client):
        body = {"prompt": "x", "guidance_interval": interval, "number_of_steps": steps, "guidance_scale": 9}
        assert (await client.post(PATH, json=body)).status_code == 504
    [job] = fal_jobs(settings)
    first, end = int(steps * (1 - interval) / 2), int(steps * (interval / 2 + 0.5))  # ACE-Step v1
    schedule = [3 * u / (1 + 2 * u) for u in (1 - k / steps for k in range(steps))]
    guided = [k for k, t in enumerate(schedule) if job.cfg_interval_start <= t <= job.cfg_interval_end]
    if first < end:
        assert (guided, job.guidance_scale) == (list(range(first, end)), 9.0)
    else:
        assert job.guidance_scale == 1.0  # no step to guide: guidance off


async def test_same_seed_same_song(lm_live):
    _, client = lm_live
    request = {"prompt": "an upbeat synthwave track", "duration": 10, "seed": 7}
    first, second = [(await client.post(PATH, json=request)).json() for _ in range(2)]
    assert (first["tags"], first["lyrics"], first["seed"]) == (second["tags"], second["lyrics"], 7)
    assert first["audio"]["url"] != second["audio"]["url"]
    audio = [(await client.get(answer["audio"]["url"])).content for answer in (first, second)]
    assert audio[0] == audio[1]


async def test_instrumental_with_the_lm(lm_live, settings):
    _, client = lm_live
    response = await client.post(PATH, json={"prompt": SEED_004_PROMPT, "instrumental": True, "duration": 10})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lyrics"] == "[inst]"
    assert body["tags"].strip() and body["tags"] != SEED_004_PROMPT
    [job] = fal_jobs(settings)
    assert job.is_instrumental and job.lyrics == "[inst]"


# --- Without the LM ------------------------------------------------------------------------


async def test_without_the_lm_the_prompt_is_the_caption(live, settings):
    _, client = live
    response = await client.post(PATH, json={"prompt": SEED_004_PROMPT, "duration": 10})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["tags"], body["lyrics"]) == (SEED_004_PROMPT, "")
    response = await client.post(PATH, json={"prompt": SEED_004_PROMPT, "duration": 10, "instrumental": True})
    assert response.json()["lyrics"] == "[inst]"
    assert [job.prompt for job in fal_jobs(settings)] == [SEED_004_PROMPT] * 2


async def test_clips_shorter_than_ten_seconds_are_cut(live, settings):
    _, client = live
    response = await client.post(PATH, json={"prompt": "glitch", "duration": 5.5})
    assert response.status_code == 200, response.text
    assert abs(await download(client, response.json()["audio"]) - 5.5) < 0.01
    [job] = fal_jobs(settings)
    assert job.audio_duration == 10.0  # 1.5's shortest song, cut afterwards


# --- Validation ----------------------------------------------------------------------------

RANGES = [
    ("duration", 4.9, "a number between 5 and 240"),
    ("duration", 240.5, "a number between 5 and 240"),
    ("number_of_steps", 2, "an integer between 3 and 60"),
    ("number_of_steps", 61, "an integer between 3 and 60"),
    ("number_of_steps", 27.5, "an integer between 3 and 60"),
    ("granularity_scale", -101, "an integer between -100 and 100"),
    ("granularity_scale", 101, "an integer between -100 and 100"),
    ("guidance_interval", -0.1, "a number between 0 and 1"),
    ("guidance_interval", 1.1, "a number between 0 and 1"),
    ("guidance_interval_decay", 1.5, "a number between 0 and 1"),
    ("guidance_scale", -1, "a number between 0 and 200"),
    ("guidance_scale", 201, "a number between 0 and 200"),
    ("minimum_guidance_scale", 200.1, "a number between 0 and 200"),
    ("tag_guidance_scale", 10.5, "a number between 0 and 10"),
    ("lyric_guidance_scale", -0.5, "a number between 0 and 10"),
    ("duration", "long", "a number between 5 and 240"),
    ("seed", -2, "an integer between 0 and 4294967295, or -1 for a random seed"),
    ("seed", 2**32, "an integer between 0 and 4294967295, or -1 for a random seed"),
]


@pytest.mark.parametrize("field,value,allowed", RANGES)
async def test_out_of_range_values_name_the_field_and_range(idle, field, value, allowed):
    _, client = idle
    response = await client.post(PATH, json={"prompt": "x", field: value})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", field]
    assert error["msg"] == f"{field} must be {allowed}"
    assert error["input"] == value
    assert set(error["ctx"]) == {"ge", "le"}


@pytest.mark.parametrize("body,field,message", [
    ({}, "prompt", "Field required"),
    ({"prompt": "  "}, "prompt", "prompt must be a non-empty string"),
    ({"prompt": "x", "scheduler": "ddim"}, "scheduler", "Input should be 'euler' or 'heun'"),
    ({"prompt": "x", "guidance_type": "pag"}, "guidance_type", "Input should be 'cfg', 'apg' or 'cfg_star'"),
])
async def test_required_prompt_and_options(idle, body, field, message):
    _, client = idle
    response = await client.post(PATH, json=body)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["loc"], error["msg"]) == (["body", field], message)


async def test_nulls_take_the_defaults(idle, settings):
    # Nothing generates here (the worker is idle): the queue must be full to get an answer
    # without waiting, which also shows validation passed.
    app, client = idle
    app.state.queue.maxsize = 0
    response = await client.post(PATH, json={"prompt": "x", "seed": None, "duration": None})
    assert (response.status_code, response.json()) == (429, {"detail": "Server busy: queue is full"})


# --- Failures ------------------------------------------------------------------------------


async def test_a_failed_job_is_a_500_with_its_error(settings, engine):
    broken = copy.copy(engine)

    def generate(request, progress=None):
        raise GenerationError("the DiT ran out of memory")

    broken.generate = generate
    async with serve(settings, broken) as (_, client):
        response = await client.post(PATH, json={"prompt": "x"})
    assert (response.status_code, response.json()) == (500, {"detail": "the DiT ran out of memory"})


async def test_a_failing_lm_is_a_500(settings, lm_engine):
    broken = copy.copy(lm_engine)
    broken.planner = copy.copy(lm_engine.planner)

    def create_sample(*args, **kwargs):
        raise RuntimeError("LM weights are corrupt")

    # The job's sample mode calls the planner's inner step; the route never calls the LM itself.
    broken.planner.create_sample = broken.planner._create_sample = create_sample
    async with serve(settings, broken) as (_, client):
        response = await client.post(PATH, json={"prompt": "x"})
    # The LM's own words stay in the log (issue #10): the client reads a sentence.
    assert (response.status_code, response.json()) == (500, {
        "detail": "create_sample failed: the 5 Hz LM could not process this input; the server log has the details"})
    # The LM step is part of the one job, which failed with it.
    assert len(fal_jobs(settings)) == 1 and fal_results(settings) == [None]


async def test_a_job_past_the_timeout_is_cancelled(settings, engine):
    impatient = settings.model_copy(update={"generation_timeout": 0.2})
    async with serve(impatient, engine, start_worker=False) as (app, client):
        response = await client.post(PATH, json={"prompt": "x"})
        assert (response.status_code, response.json()) == (504, {"detail": "Generation timeout"})
        with sqlite3.connect(settings.database_path) as db:
            [(status, stage)] = db.execute("SELECT status, stage FROM jobs").fetchall()
        assert (status, stage) == ("failed", "cancelled")
        assert app.state.queue.size == 0


# --- Absolute URLs -------------------------------------------------------------------------


async def test_url_follows_a_trusted_proxy_only(settings, engine):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pod-8000.proxy.runpod.net, internal:8000"}
    trusted = settings.model_copy(update={"forwarded_allow_ips": "10.0.0.0/8"})
    async with serve(trusted, engine) as (app, _):
        urls = {}
        for peer in ("10.1.2.3", "192.0.2.9"):
            transport = httpx.ASGITransport(app=app, client=(peer, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                response = await client.post(PATH, json={"prompt": "x", "duration": 10}, headers=forwarded)
                assert response.status_code == 200, response.text
                urls[peer] = response.json()["audio"]["url"]
                assert (await client.get(urls[peer])).status_code == 200
    assert urls["10.1.2.3"].startswith("https://pod-8000.proxy.runpod.net/v1/audio?path=%2F")
    assert urls["192.0.2.9"].startswith("http://testserver/v1/audio?path=%2F")


async def test_url_uses_public_url_when_set(settings, engine):
    public = settings.model_copy(update={"public_url": "https://music.example.org/api"})
    async with serve(public, engine) as (_, client):
        response = await client.post(PATH, json={"prompt": "x", "duration": 10},
                                     headers={"X-Forwarded-Host": "elsewhere.example"})
    url = response.json()["audio"]["url"]
    assert url.startswith("https://music.example.org/api/v1/audio?path=%2F")


# --- Auth ----------------------------------------------------------------------------------


@pytest.fixture
async def secured(settings, engine):
    async with serve(settings.model_copy(update={"api_key": "secret"}), engine, start_worker=False) as running:
        yield running


@pytest.mark.parametrize("header,status", [
    ({"Authorization": "Key secret"}, 422),
    ({"Authorization": "Bearer secret"}, 422),
    ({"Authorization": "secret"}, 422),
    ({"Authorization": "Key wrong"}, 401),
    ({"Authorization": "key secret"}, 401),
    ({}, 401),
])
async def test_key_schemes(secured, header, status):
    # An invalid body: an authorised caller gets its 422, anyone else a 401 before validation.
    _, client = secured
    response = await client.post(PATH, json={"duration": 1}, headers=header)
    assert response.status_code == status
    if status == 401:
        expected = "Invalid API key" if header else "Missing Authorization header"
        assert response.json() == {"detail": expected}


async def test_open_without_a_key(idle):
    _, client = idle
    response = await client.post(PATH, json={"duration": 1}, headers={"Authorization": "Key anything"})
    assert response.status_code == 422


async def test_schema_is_published(idle):
    _, client = idle
    schema = (await client.get("/openapi.json")).json()
    body = schema["components"]["schemas"]["FalPromptInput"]["properties"]
    assert (body["duration"]["minimum"], body["duration"]["maximum"], body["duration"]["default"]) == (5, 240, 60.0)
    assert json.dumps(schema["paths"][PATH]["post"]["responses"]["200"]).count("FalPromptOutput") == 1
