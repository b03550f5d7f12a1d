"""The README's flow against a real `acestep-api serve --demo` process."""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest
import soundfile as sf

from tests.e2e.server_process import ServerProcess


def wait_for(client: httpx.Client, task_ids: list[str], timeout: float = 180.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = client.post("/query_result", json={"task_id_list": task_ids}).json()["data"]
        if all(item["status"] in (1, 2) for item in data):
            return data
        time.sleep(0.2)
    raise AssertionError(f"jobs not finished after {timeout}s: {data}")


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("demo-out")).start()
    yield server
    server.stop()


def test_curl_flow_yields_playable_mp3_files(demo_server):
    with httpx.Client(base_url=demo_server.url, timeout=30) as client:
        health = client.get("/health").json()
        assert health["data"]["status"] == "ok" and health["data"]["demo"] is True

        # Submit with aliases (docs/wire-contract.md#conformance-examples): caption and duration
        # aliases, default batch of two.
        submitted = client.post("/release_task", json={
            "caption": "upbeat electronic dance music with heavy bass",
            "lyrics": "[Verse]\nDancing through the night...",
            "duration": 12,
        }).json()
        assert submitted["code"] == 200 and submitted["data"]["status"] == "queued"

        # Poll after success: two mp3 files behind /v1/audio?path=<encoded absolute path>.
        (item,) = wait_for(client, [submitted["data"]["task_id"]])
        assert item["status"] == 1, item
        files = json.loads(item["result"])
        assert len(files) == 2
        for entry in files:
            assert entry["file"].startswith("/v1/audio?path=%2F") and entry["file"].endswith(".mp3")
            # Download: the download is a playable 48 kHz stereo mp3 of the requested length.
            audio = client.get(entry["file"])
            assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
            samples, rate = sf.read(io.BytesIO(audio.content))
            assert rate == 48000 and samples.shape[1] == 2
            assert abs(len(samples) / rate - 12.0) < 0.1
            assert samples.std() > 0


def test_bad_input_gets_a_4xx_and_the_server_keeps_serving(demo_server):
    with httpx.Client(base_url=demo_server.url, timeout=30) as client:
        bad = client.post("/release_task", json={"prompt": "x", "duration": 5000})
        assert bad.status_code == 400 and "audio_duration" in bad.json()["detail"]
        garbage = client.post("/release_task", content=b"\xff\xfe{{", headers={"Content-Type": "application/json"})
        assert garbage.status_code == 400
        assert client.get("/health").json()["data"]["status"] == "ok"


def test_cli_shaped_request_yields_exactly_one_file(demo_server):
    # CLI submit: what generate_music.py sends, with its User-Agent; batch_size 1 gives one element.
    with httpx.Client(base_url=demo_server.url, timeout=30, headers={"User-Agent": "ACE-Step-CLI/1.0"}) as client:
        submitted = client.post("/release_task", json={
            "caption": "Upbeat indie pop with jangly guitars and energetic vocals",
            "lyrics": "[Verse 1]\nWalking down the street\n", "duration": 10, "batch_size": 1,
        }).json()
        assert submitted["code"] == 200
        (item,) = wait_for(client, [submitted["data"]["task_id"]])
        (entry,) = json.loads(item["result"])
        assert entry["status"] == 1 and entry["file"].endswith(".mp3")
        info_lines = [line for line in entry["generation_info"].splitlines()
                      if any(key in line for key in ("BPM:", "Key Scale:", "Total Time:"))]
        assert len(info_lines) == 3  # the lines the CLI prints
