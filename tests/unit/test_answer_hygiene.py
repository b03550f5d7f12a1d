"""The suite-wide error-hygiene check itself catches what it must, and only that."""

from __future__ import annotations

import json

import httpx

from tests.answer_hygiene import SUITE_LOG, AnswerLog, install, problems


def test_exception_names_tracebacks_and_server_paths_are_caught_in_error_answers():
    assert problems(500, json.dumps({"detail": "Internal server error (OverflowError)"}))
    assert problems(500, 'Traceback (most recent call last):\n  File "/app/x.py", line 3, in f')
    assert problems(400, json.dumps({"detail": "src_audio: Error opening '/srv/out/uploads/ctx_audio_1.mp3'"}))
    assert problems(400, json.dumps({"detail": "cannot open /srv/out/jobs.sqlite3"}))


def test_job_errors_inside_success_answers_are_read():
    item = {"task_id": "t", "status": 2, "result": json.dumps([{"error": "RuntimeError: boom"}])}
    assert problems(200, json.dumps({"data": [item], "code": 200, "error": None}))


def test_plain_messages_and_result_paths_pass():
    assert not problems(400, json.dumps({"detail": "prompt must be at most 4096 characters (got 100000)"}))
    assert not problems(401, json.dumps({"detail": "Invalid API key"}))
    # The official API names its audio files by server path in success answers.
    result = json.dumps([{"file": "/v1/audio?path=/srv/out/api_audio/a.mp3", "error": None}])
    assert not problems(200, json.dumps({"data": [{"result": result}], "error": None}))


def test_the_installed_hook_sees_answers_of_a_real_transport(monkeypatch):
    def app(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"detail": "KeyError: 'x'"})

    # Restored after the test, so this second hook does not stay for the rest of the suite.
    monkeypatch.setattr(httpx.Client, "send", httpx.Client.send)
    monkeypatch.setattr(httpx.AsyncClient, "send", httpx.AsyncClient.send)
    log = AnswerLog()
    install(log)  # wraps again on top of the suite's own hook; both see the answer
    with httpx.Client(transport=httpx.MockTransport(app), base_url="http://t") as client:
        client.get("/boom")
    assert any("KeyError" in found for found in log.take())
    # The suite's own hook saw it too: the only answer of the suite meant to break the rule.
    assert any("KeyError" in found for found in SUITE_LOG.take())
