"""POST /query_result and GET /v1/audio (the polling and download examples of
docs/wire-contract.md#conformance-examples), with real jobs on the tiny engine."""

from __future__ import annotations

import json
import os
import urllib.parse

import pytest

from tests.server.conftest import wait_finished

pytestmark = pytest.mark.anyio


async def submit(client, **body) -> str:
    response = await client.post("/release_task", json=body)
    assert response.status_code == 200, response.text
    return response.json()["data"]["task_id"]


async def query(client, ids) -> list[dict]:
    response = await client.post("/query_result", json={"task_id_list": ids})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["data", "code", "error", "timestamp", "extra"] and body["code"] == 200
    return body["data"]


async def test_e4_queued_job(idle):
    _, client = idle
    task_id = await submit(client, prompt="x")
    [item] = await query(client, [task_id])
    assert item["task_id"] == task_id and item["status"] == 0
    assert isinstance(item["result"], str) and isinstance(item["progress_text"], str)
    [element] = json.loads(item["result"])
    assert element["status"] == 0 and element["stage"] == "queued" and element["progress"] == 0.0


async def test_e6_wrong_key_name_gives_empty_data(idle):
    _, client = idle
    task_id = await submit(client, prompt="x")
    assert await query_raw(client, {"task_ids": [task_id]}) == []


async def query_raw(client, body) -> list:
    response = await client.post("/query_result", json=body)
    assert response.status_code == 200
    return response.json()["data"]


async def test_e7_unknown_id(idle):
    _, client = idle
    assert await query(client, ["unknown-id"]) == [{"task_id": "unknown-id", "result": "[]", "status": 0}]


async def test_task_id_list_as_json_string_and_bad_values(idle):
    _, client = idle
    task_id = await submit(client, prompt="x")
    [item] = await query_raw(client, {"task_id_list": json.dumps([task_id])})
    assert item["task_id"] == task_id
    assert await query_raw(client, {"task_id_list": "not json"}) == []
    assert await query_raw(client, {"task_id_list": '{"a": 1}'}) == []
    assert await query_raw(client, {}) == []


async def test_results_keep_the_requested_order(idle):
    _, client = idle
    first, second = await submit(client, prompt="a"), await submit(client, prompt="b")
    items = await query(client, [second, "nope", first])
    assert [item["task_id"] for item in items] == [second, "nope", first]


async def test_e8_form_encoded_query(idle):
    _, client = idle
    task_id = await submit(client, prompt="x")
    response = await client.post("/query_result", data={"task_id_list": json.dumps([task_id])})
    [item] = response.json()["data"]
    assert item["task_id"] == task_id and item["status"] == 0


async def test_e5_e10_success_then_download(live):
    app, client = live
    task_id = await submit(client, caption="short test", lyrics="[inst]", duration=10, batch_size=2,
                           bpm=100, use_random_seed=False, seed="11,22")
    job = await wait_finished(app, task_id)
    assert job.status.value == "succeeded", job.error
    [item] = await query(client, [task_id])
    assert item["status"] == 1
    elements = json.loads(item["result"])
    assert len(elements) == 2
    for element in elements:
        assert element["file"].startswith("/v1/audio?path=%2F") and element["file"].endswith(".mp3")
        assert element["status"] == 1 and element["wave"] == "" and element["env"] == "development"
        assert isinstance(element["create_time"], int)
        assert set(element["metas"]) == {"bpm", "duration", "genres", "keyscale", "timesignature", "prompt", "lyrics"}
        assert element["metas"]["bpm"] == 100 and element["metas"]["prompt"] == "short test"
        assert element["seed_value"] == "11,22"
        assert "Total Time" in element["generation_info"]
        assert element["lm_model"] and element["dit_model"] == "acestep-v15-turbo"
        assert element["progress"] == 1.0 and element["stage"] == "succeeded"
    assert elements[0]["file"] != elements[1]["file"]

    # Download example: the `file` value is fetched verbatim from the server root.
    response = await client.get(elements[0]["file"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/mpeg"
    path = urllib.parse.unquote(elements[0]["file"].split("path=", 1)[1])
    assert response.content == open(path, "rb").read() and len(response.content) > 100


async def test_e9_failed_job(live):
    app, client = live
    # Accepted by the HTTP layer; this server has no LM, so the engine fails the job.
    task_id = await submit(client, prompt="x", thinking=True, duration=10)
    job = await wait_finished(app, task_id)
    assert job.status.value == "failed"
    [item] = await query(client, [task_id])
    assert item["status"] == 2
    [element] = json.loads(item["result"])
    assert {k: element[k] for k in ("file", "wave", "status", "env", "progress", "stage")} == {
        "file": "", "wave": "", "status": 2, "env": "development", "progress": 0.0, "stage": "failed"}
    assert isinstance(element["create_time"], int)
    assert "LM" in element["error"]


async def test_e10_audio_access_rules(idle, settings):
    _, client = idle
    response = await client.get("/v1/audio", params={"path": "/etc/passwd"})
    assert (response.status_code, response.json()) == (403, {"detail": "Access denied: path outside allowed directory"})
    missing = os.path.join(settings.audio_dir, "nope.mp3")
    response = await client.get("/v1/audio", params={"path": missing})
    assert (response.status_code, response.json()) == (404, {"detail": "Audio file not found"})
    traversal = os.path.join(settings.audio_dir, "..", "jobs.sqlite3")
    assert (await client.get("/v1/audio", params={"path": traversal})).status_code == 403
    assert (await client.get("/v1/audio")).status_code == 422
    assert (await client.get("/v1/audio", params={"path": "a\x00b"})).status_code in (403, 404)


@pytest.mark.parametrize("suffix,media_type", [
    ("mp3", "audio/mpeg"), ("wav", "audio/wav"), ("flac", "audio/flac"), ("ogg", "audio/ogg"), ("opus", "audio/ogg"),
    ("aac", "audio/aac"),
])
async def test_audio_media_types(idle, settings, suffix, media_type):
    _, client = idle
    path = settings.audio_dir / f"song.{suffix}"
    path.write_bytes(b"bytes of " + suffix.encode())
    response = await client.get("/v1/audio", params={"path": str(path)})
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.content == path.read_bytes()


async def test_symlink_escaping_the_audio_folder_is_refused(idle, settings, tmp_path):
    _, client = idle
    secret = tmp_path / "secret.mp3"
    secret.write_bytes(b"not yours")
    link = settings.audio_dir / "innocent.mp3"
    link.symlink_to(secret)
    response = await client.get("/v1/audio", params={"path": str(link)})
    assert response.status_code == 403
    assert response.json() == {"detail": "Access denied: path outside allowed directory"}
