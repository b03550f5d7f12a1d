"""Every text field has a character limit and every number a range, on every route that reads
them (engine/limits.py; docs/security.md, "Text fields and the 5 Hz LM" and "Numbers").

Findings of issue #10: a 400-digit integer in a float field was an OverflowError 500; a
100,000-character prompt made the LM grow the server to 24 GB; the LM routes answered the
tokenizer's own message.
"""

from __future__ import annotations

import copy
import json

import pytest

from acestep_api.engine.limits import (
    LM_CAPTION_TOKENS,
    LM_CONTEXT_TOKENS,
    LM_LYRICS_TOKENS,
    LYRICS_MAX_CHARS,
    PROMPT_MAX_CHARS,
)
from acestep_api.settings import ServerlessSettings
from acestep_api.serverless.worker import ServerlessWorker
from tests.engine.lm.test_lm_input_budget import COT_TOKENS, TEMPLATE_TOKENS, Recorder, words
from tests.server.conftest import serve, wait_finished

pytestmark = pytest.mark.anyio

HUGE = 10**400  # valid JSON; float() of it raises OverflowError

FLOAT_FIELDS = ["audio_duration", "guidance_scale", "shift", "timesteps", "lm_temperature", "lm_top_p",
                "lm_cfg_scale", "repainting_start", "repainting_end", "audio_cover_strength",
                "cfg_interval_start", "cfg_interval_end", "cover_noise_strength", "lm_repetition_penalty",
                "repaint_strength", "repaint_wav_crossfade_sec"]
INT_FIELDS = ["bpm", "inference_steps", "lm_top_k", "seed", "repaint_latent_crossfade_frames"]


def huge_body(field: str) -> bytes:
    """The JSON body as a careless client writes it: the 401-digit integer as such."""
    return b'{"prompt": "x", "%s": %s}' % (field.encode(), str(HUGE).encode())


@pytest.fixture
async def lm_live(settings, lm_engine):
    async with serve(settings, lm_engine) as (app, client):
        yield app, client


@pytest.mark.parametrize("route", ["/release_task", "/v1/music/generate"])
@pytest.mark.parametrize("field", FLOAT_FIELDS + INT_FIELDS)
async def test_a_400_digit_integer_is_a_400_naming_the_field(idle, route, field):
    app, client = idle
    response = await client.post(route, content=huge_body(field), headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"{field} must be") and "401-digit integer" in detail
    assert app.state.queue.stats()["jobs"]["total"] == 0


async def test_the_message_states_the_range(idle):
    _, client = idle
    response = await client.post("/release_task", content=huge_body("guidance_scale"),
                                 headers={"Content-Type": "application/json"})
    assert response.json()["detail"] == "guidance_scale must be between 0 and 200 (got a 401-digit integer)"
    response = await client.post("/release_task", json={"repainting_start": -1e300})
    assert response.json()["detail"] == "repainting_start must be between -600 and 600 seconds (got -1e+300)"


@pytest.mark.parametrize("body,field", [
    ({"temperature": HUGE}, "temperature"), ({"top_p": HUGE}, "top_p"), ({"top_k": HUGE}, "top_k"),
    ({"guidance_scale": HUGE}, "guidance_scale"), ({"repainting_start": HUGE}, "repainting_start"),
    ({"repainting_end": HUGE}, "repainting_end"), ({"audio_cover_strength": HUGE}, "audio_cover_strength"),
    ({"audio_config": {"duration": HUGE}}, "audio_config.duration"), ({"audio_config": {"bpm": HUGE}}, "audio_config.bpm"),
    ({"seed": HUGE}, "seed"),
])
async def test_chat_numbers_that_overflow_are_400s(idle, body, field):
    app, client = idle
    chat = {"model": "acestep/acestep-v15-turbo", "messages": [{"role": "user", "content": "<prompt>jazz</prompt>"}],
            **body}
    raw = json.dumps(chat).encode()  # json writes the 401 digits as they are
    response = await client.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert field in response.json()["detail"]
    assert app.state.queue.stats()["jobs"]["total"] == 0


@pytest.mark.parametrize("field", ["duration", "guidance_scale", "number_of_steps", "seed", "guidance_interval"])
async def test_fal_numbers_that_overflow_are_422s_in_fals_shape(idle, field):
    _, client = idle
    raw = b'{"prompt": "x", "%s": %s}' % (field.encode(), str(HUGE).encode())
    response = await client.post("/fal-ai/ace-step/prompt-to-audio", content=raw,
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", field] and error["msg"].startswith(f"{field} must be")


async def test_lm_routes_refuse_overflowing_numbers(lm_live):
    _, client = lm_live
    response = await client.post("/format_input", content=b'{"prompt": "x", "temperature": %s}' % str(HUGE).encode(),
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["detail"].startswith("temperature must be")
    response = await client.post("/format_input", json={"prompt": "x", "param_obj": json.dumps({"duration": HUGE})})
    assert response.status_code == 400 and response.json()["detail"].startswith("duration must be")
    response = await client.post("/v1/create_sample",
                                 content=b'{"query": "x", "temperature": %s}' % str(HUGE).encode(),
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["detail"].startswith("temperature must be")


def test_serverless_dialects_refuse_overflowing_numbers(tmp_path):
    from acestep_api.settings import Settings

    def load(settings):
        raise AssertionError("a refused job must not load the models")

    worker = ServerlessWorker(Settings(_env_file=None, output_dir=tmp_path), ServerlessSettings(_env_file=None),
                              load=load)
    for fields, field in [({"prompt": "x", "duration": HUGE}, "duration"),
                          ({"prompt": "x", "guidance_scale": HUGE}, "guidance_scale"),
                          ({"caption": "x", "timeout_seconds": HUGE}, "timeout_seconds"),
                          ({"caption": "x", "shift": HUGE}, "shift"),
                          ({"caption": "x", "prompt": "a" * (PROMPT_MAX_CHARS + 1)}, "prompt"),
                          ({"prompt": "a" * (PROMPT_MAX_CHARS + 1)}, "prompt")]:
        answer = worker.run(fields, lambda message: None)
        assert answer["error"].startswith(f"{field} must be"), (fields.keys(), answer)


# --- text ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field,limit", [
    ("prompt", PROMPT_MAX_CHARS), ("caption", PROMPT_MAX_CHARS), ("lyrics", LYRICS_MAX_CHARS),
    ("sample_query", 4096), ("description", 4096), ("lm_negative_prompt", PROMPT_MAX_CHARS),
    ("instruction", 1024), ("key_scale", 64), ("vocal_language", 64), ("track_name", 256),
    ("audio_code_string", 100_000),
])
async def test_text_over_its_limit_is_a_400_naming_the_field_and_the_limit(idle, field, limit):
    app, client = idle
    aliases = {"caption": "prompt", "description": "sample_query"}
    response = await client.post("/release_task", json={field: "a" * (limit + 1)})
    assert response.status_code == 400, response.text
    name = aliases.get(field, field)
    assert response.json()["detail"] == f"{name} must be at most {limit} characters (got {limit + 1})"
    assert app.state.queue.stats()["jobs"]["total"] == 0


async def test_a_100000_character_prompt_is_refused_before_any_work(idle):
    app, client = idle
    response = await client.post("/release_task", json={"prompt": "a" * 100_000, "thinking": True})
    assert (response.status_code, response.json()) == (
        400, {"detail": "prompt must be at most 4096 characters (got 100000)"})
    response = await client.post("/v1/music/generate", data={"prompt": "a" * 100_000})
    assert response.status_code == 400 and "at most 4096 characters" in response.json()["detail"]
    assert app.state.queue.stats()["jobs"]["total"] == 0


@pytest.mark.parametrize("chat,where", [
    ({"messages": [{"role": "user", "content": "a" * 30_000}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a" * 30_000}]}]},
     "messages[0].content[0].text"),
    ({"messages": [{"role": "user", "content": "jazz"}], "lyrics": "a" * (LYRICS_MAX_CHARS + 1)}, "lyrics"),
    ({"messages": [{"role": "user", "content": f"<prompt>{'a' * 5000}</prompt>"}]}, "the caption"),
    ({"messages": [{"role": "user", "content": "jazz"}] * 300}, "messages"),
])
async def test_chat_text_has_limits(idle, chat, where):
    _, client = idle
    response = await client.post("/v1/chat/completions", json={"model": "acestep/acestep-v15-turbo", **chat})
    assert response.status_code == 400, response.text
    assert where in response.json()["detail"]


async def test_fal_prompt_has_a_limit(idle):
    _, client = idle
    response = await client.post("/fal-ai/ace-step/prompt-to-audio", json={"prompt": "a" * 5000})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["loc"], error["msg"]) == (["body", "prompt"], "prompt must be at most 4096 characters (got 5000)")


async def test_lm_routes_have_text_limits(lm_live):
    _, client = lm_live
    for route, body, message in [
        ("/format_input", {"prompt": "a" * 5000}, "prompt must be at most 4096 characters (got 5000)"),
        ("/format_input", {"lyrics": "a" * 20000}, "lyrics must be at most 16384 characters (got 20000)"),
        ("/v1/create_sample", {"query": "a" * 5000}, "query must be at most 4096 characters (got 5000)"),
    ]:
        response = await client.post(route, json=body)
        assert (response.status_code, response.json()) == (400, {"detail": message}), route


async def test_an_lm_failure_answers_a_sentence_not_the_tokenizers_words(settings, lm_engine):
    broken = copy.copy(lm_engine)
    broken.planner = copy.copy(lm_engine.planner)

    def fail(*args, **kwargs):  # what the fast tokenizer raises on text it cannot encode
        raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")

    broken.planner.format_sample = broken.planner.create_sample = fail
    async with serve(settings, broken) as (_, client):
        for route, body, what in [("/format_input", {"prompt": "x"}, "format_sample"),
                                  ("/v1/create_sample", {"query": "x"}, "create_sample")]:
            answer = (await client.post(route, json=body)).json()
            assert answer["code"] == 500 and answer["error"] == (
                f"{what} failed: the 5 Hz LM could not process this input; the server log has the details")


async def test_a_prompt_at_the_limit_with_thinking_runs_within_the_lm_budget(lm_live, monkeypatch):
    app, client = lm_live
    recorder = Recorder(app.state.engine.planner.backend, monkeypatch,
                        limit=LM_CAPTION_TOKENS + LM_LYRICS_TOKENS + COT_TOKENS + TEMPLATE_TOKENS)
    response = await client.post("/release_task", json={
        "prompt": words(PROMPT_MAX_CHARS, 8), "lyrics": words(LYRICS_MAX_CHARS, 9), "thinking": True,
        "audio_duration": 10, "batch_size": 1, "audio_format": "wav"})
    assert response.status_code == 200, response.text
    job = await wait_finished(app, response.json()["data"]["task_id"])
    assert job.status.value == "succeeded", job.error
    assert len(recorder.calls) >= 2  # phase 1 (metadata) and phase 2 (codes) both ran
    for lengths, new_tokens in recorder.calls:
        assert max(lengths) + new_tokens <= LM_CONTEXT_TOKENS
