"""The OpenAPI document says what the routes do: their bodies, their answers (status, media
type, schema), their auth; and /openapi.json, /docs and /redoc follow ACESTEP_PROTECT_DOCS.

Real answers of the in-process app are checked against the document's own schemas, so an
answer that changes without the document fails here (and in tests/e2e/test_schemathesis.py)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import jsonschema_rs  # schemathesis's JSON Schema validator (the test extra)
import numpy as np
import pytest
import soundfile

from acestep_api.engine.limits import TEXT_MAX_CHARS
from acestep_api.dialects.official import ALIASES
from acestep_api.server.uploads import UPLOAD_FIELDS
from acestep_api.settings import Settings
from tests.server.conftest import serve

pytestmark = pytest.mark.anyio

KEY = "sesame"
OPEN_OPERATIONS = {("get", "/health"), ("get", "/v1/models")}
FORM_TYPES = ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")


async def document(client, **headers) -> dict:
    answer = await client.get("/openapi.json", headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def template_of(spec: dict, path: str) -> str:
    """The document's path template that `path` is an instance of."""
    for template in spec["paths"]:
        if re.fullmatch(re.sub(r"\\\{[^/]+\\\}", "[^/]+", re.escape(template)), path):
            return template
    raise AssertionError(f"{path} is not in the document")


def assert_documented(spec: dict, method: str, path: str, answer) -> None:
    """The answer's status is documented for the operation, its media type too, and a JSON
    answer matches the documented schema."""
    operation = spec["paths"][template_of(spec, path)][method]
    status = str(answer.status_code)
    assert status in operation["responses"], f"{method.upper()} {path}: {status} is not documented"
    content = operation["responses"][status].get("content", {})
    media_type = answer.headers.get("content-type", "").split(";")[0]
    assert media_type in content, f"{method.upper()} {path} {status}: {media_type} is not documented"
    if media_type == "application/json":
        schema = {**content[media_type]["schema"], "components": spec["components"]}
        errors = [error.message for error in jsonschema_rs.Draft202012Validator(schema).iter_errors(answer.json())]
        assert not errors, f"{method.upper()} {path} {status}: {errors} in {answer.text[:500]}"


def wav_bytes(seconds: float = 1.0, rate: int = 48000) -> bytes:
    buffer = io.BytesIO()
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)
    soundfile.write(buffer, np.stack([tone, tone], axis=1), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def keyed_settings(tmp_path: Path, **changes) -> Settings:
    return Settings(_env_file=None, output_dir=tmp_path / "outputs", checkpoint_dir=tmp_path / "none",
                    api_key=KEY, **changes)


# --- the document itself -------------------------------------------------------------------


async def test_the_document_is_openapi_3_1_with_every_reference_resolved(idle):
    _, client = idle
    spec = await document(client)
    assert spec["openapi"].startswith("3.1.")
    schemas = spec["components"]["schemas"]
    text = json.dumps(spec)
    for name in set(re.findall(r'"#/components/schemas/([^"]+)"', text)):
        assert name in schemas, f"dangling reference to {name}"
    for name, schema in schemas.items():
        assert jsonschema_rs.meta.is_valid(schema), f"{name} is not a valid JSON Schema"
    ids = [operation["operationId"] for operations in spec["paths"].values() for operation in operations.values()]
    assert len(ids) == len(set(ids))


async def test_every_post_declares_its_body_and_release_task_every_encoding_and_alias(idle):
    _, client = idle
    spec = await document(client)
    for path, operations in spec["paths"].items():
        if "post" in operations:
            assert operations["post"].get("requestBody", {}).get("content"), f"POST {path} has no body schema"
    for path in ("/release_task", "/v1/music/generate"):
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        assert set(content) == set(FORM_TYPES)
        schemas = {media: spec["components"]["schemas"][content[media]["schema"]["$ref"].rsplit("/", 1)[1]]
                   for media in FORM_TYPES}
        for media, schema in schemas.items():
            for name, spellings in ALIASES.items():
                for spelling in spellings:
                    assert spelling in schema["properties"], f"{path} {media}: alias {spelling} of {name} missing"
        multipart = schemas["multipart/form-data"]["properties"]
        for upload in UPLOAD_FIELDS:
            assert (multipart[upload]["type"], multipart[upload]["format"]) == ("string", "binary"), upload
        assert "src_audio" not in schemas["application/json"]["properties"]
        for spelling in ALIASES["prompt"]:  # the documented limits are the enforced ones
            assert schemas["application/json"]["properties"][spelling]["maxLength"] == TEXT_MAX_CHARS["prompt"]
    chat = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert chat == {"$ref": "#/components/schemas/ChatCompletionRequest"}


async def test_error_statuses_media_types_and_retry_after_are_documented(idle):
    _, client = idle
    spec = await document(client)
    release = spec["paths"]["/release_task"]["post"]["responses"]
    assert {"200", "400", "401", "403", "413", "415", "429"} <= set(release)
    assert release["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorDetail"}
    assert "Retry-After" in release["429"]["headers"]
    audio = spec["paths"]["/v1/audio"]["get"]["responses"]["200"]["content"]
    assert {"audio/mpeg", "audio/wav", "audio/flac", "audio/ogg", "audio/aac"} <= set(audio)
    assert "application/json" not in audio
    chat = spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "text/event-stream"} <= set(chat)
    assert {"400", "401", "429", "503", "504"} <= set(spec["paths"]["/v1/chat/completions"]["post"]["responses"])
    links = spec["paths"]["/release_task"]["post"]["responses"]["200"]["links"]
    ids = {operation["operationId"] for operations in spec["paths"].values() for operation in operations.values()}
    assert {link["operationId"] for link in links.values()} <= ids and "query_result" in ids


async def test_with_a_key_every_operation_but_two_names_the_header_schemes(tmp_path, engine):
    async with serve(keyed_settings(tmp_path), engine, start_worker=False) as (_, client):
        spec = await document(client, authorization=f"Bearer {KEY}")
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": schemes["bearer"]["description"]}
    assert schemes["authorizationHeader"]["in"] == "header" and schemes["authorizationHeader"]["name"] == "Authorization"
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if (method, path) in OPEN_OPERATIONS:
                assert "security" not in operation, path
            else:
                assert operation["security"] == [{"bearer": []}, {"authorizationHeader": []}], (method, path)
    assert spec["paths"]["/release_task"]["post"]["x-acestep-body-token"] == "ai_token"


async def test_without_a_key_no_operation_asks_for_one(idle):
    _, client = idle
    spec = await document(client)
    assert not any("security" in op for ops in spec["paths"].values() for op in ops.values())
    assert "Auth is off" in spec["info"]["description"]


# --- the guarded document -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
async def test_with_a_key_the_document_and_its_viewers_need_it(tmp_path, engine, path):
    async with serve(keyed_settings(tmp_path), engine, start_worker=False) as (_, client):
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers={"authorization": "Bearer wrong"})).status_code == 401
        assert (await client.get(path, headers={"authorization": f"Bearer {KEY}"})).status_code == 200


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
async def test_protect_docs_false_leaves_them_open(tmp_path, engine, path):
    async with serve(keyed_settings(tmp_path, protect_docs=False), engine, start_worker=False) as (_, client):
        answer = await client.get(path)
    assert answer.status_code == 200
    assert "/openapi.json" in answer.text if path != "/openapi.json" else answer.json()["openapi"]


# --- real answers against the document ------------------------------------------------------


async def test_answers_of_every_route_match_the_document(tmp_path, engine):
    settings = Settings(_env_file=None, output_dir=tmp_path / "outputs", checkpoint_dir=tmp_path / "none",
                        queue_maxsize=3)
    async with serve(settings, engine, start_worker=False) as (app, client):
        spec = await document(client)
        seen = []

        async def check(method: str, path: str, **kwargs):
            answer = await client.request(method.upper(), path, **kwargs)
            assert_documented(spec, method, path, answer)
            seen.append((method, template_of(spec, path), answer.status_code))
            return answer

        await check("get", "/health")
        await check("get", "/v1/models")
        await check("get", "/v1/model_inventory")
        await check("get", "/v1/stats")
        await check("get", "/metrics")
        task = (await check("post", "/release_task", json={"prompt": "calm piano", "audio_duration": 10})).json()
        task_id = task["data"]["task_id"]
        await check("post", "/release_task", data={"caption": "a form body", "duration": "12"})
        await check("post", "/release_task", files={"src_audio": ("a.wav", wav_bytes(), "audio/wav")},
                    data={"task_type": "cover"})
        await check("post", "/release_task", json={"bpm": "fast"})
        await check("post", "/release_task", content=b"hello", headers={"content-type": "text/plain"})
        await check("post", "/release_task", json={"src_audio_path": "/etc/passwd"})
        await check("post", "/release_task", json={"prompt": "the queue is full now"})  # 429
        await check("post", "/query_result", json={"task_id_list": [task_id, "unknown"]})
        await check("post", "/query_result", content=b"{not json", headers={"content-type": "application/json"})
        await check("post", "/cancel_task", json={"task_id": task_id})
        await check("post", "/cancel_task", json={"task_id": task_id})  # 409
        await check("post", "/cancel_task", json={"task_id": "unknown"})  # 404
        await check("post", "/cancel_task", json={"task_id_list": [task_id, "unknown"]})
        await check("post", "/create_random_sample", json={"sample_type": "custom"})
        await check("post", "/format_input", json={"prompt": "jazz"})  # 503: the tiny engine has no LM
        await check("post", "/v1/create_sample", json={"query": "jazz"})
        await check("post", "/v1/music/random", json={})
        job = (await check("post", "/v1/music/generate", json={"prompt": "legacy"})).json()
        await check("get", f"/v1/jobs/{job['job_id']}")
        await check("post", f"/v1/jobs/{job['job_id']}/cancel", json={})
        await check("get", "/v1/jobs/unknown")
        await check("get", "/v1/audio", params={"path": "/etc/passwd"})
        await check("get", "/v1/audio", params={"path": str(settings.audio_dir / "missing.mp3")})
        await check("get", "/v1/audio")  # 422: path is required
        settings.audio_dir.mkdir(parents=True, exist_ok=True)
        (settings.audio_dir / "song.wav").write_bytes(wav_bytes())
        audio = await check("get", "/v1/audio", params={"path": str(settings.audio_dir / "song.wav")})
        assert audio.headers["content-type"] == "audio/wav"
        await check("post", "/v1/chat/completions", json={"model": "x"})  # 400: no messages
        await check("post", "/fal-ai/ace-step/prompt-to-audio", json={"prompt": "x", "duration": 1})  # 422
        await check("get", "/v1/lora/status")
        await check("post", "/v1/lora/load", json={"lora_path": "/etc"})  # 400: outside the adapters folder
        await check("post", "/v1/lora/scale", json={"scale": 3})  # 400
    statuses = {status for _, _, status in seen}
    assert {200, 400, 403, 404, 409, 415, 422, 429, 503} <= statuses, seen
