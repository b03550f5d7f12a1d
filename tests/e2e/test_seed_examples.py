"""The public documents' own example requests, sent with curl as they are written, against a
real `acestep-api serve --demo` process, checked against the answers those documents give.

Seed 001 (RunPod pod README), 002 (the older /v1/music/generate API), 003 (the API usage
guide), 004 (fal prompt-to-audio), and the chat completion example of docs/wire-contract.md#conformance-examples. Only
the host differs (and durations stay as written: the demo checkpoints are small). The RunPod
`/runsync` examples of seeds 000 and 001 run against the serverless worker in
tests/serverless.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.e2e.server_process import ServerProcess

ENVELOPE_KEYS = {"data", "code", "error", "timestamp", "extra"}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to send the documents' curl examples (Debian package curl)")
    # The LM of the demo picks durations up to 20 s where a request gives none.
    server = ServerProcess(tmp_path_factory.mktemp("seed-out"), env={"ACESTEP_LM_MAX_DURATION": "20"}).start()
    yield server.url
    server.stop()


def curl(*args: str, output: Path | None = None) -> tuple[int, object]:
    """Run curl; returns (HTTP status, parsed JSON body or raw bytes)."""
    command = ["curl", "-s", "-S", "--max-time", "300", "-w", "%{http_code}"]
    if output is not None:
        command += ["-o", str(output)]
    done = subprocess.run([*command, *args], capture_output=True, check=True)
    body, status = (b"", done.stdout) if output is not None else (done.stdout[:-3], done.stdout[-3:])
    try:
        return int(status), json.loads(body)
    except ValueError:
        return int(status), body


def poll_query_result(api: str, task_id: str, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = curl("-X", "POST", f"{api}/query_result", "-H", "Content-Type: application/json",
                            "-d", json.dumps({"task_id_list": [task_id]}))
        assert status == 200 and set(body) == ENVELOPE_KEYS
        if body["data"] and body["data"][0]["status"] in (1, 2):
            return body["data"][0]
        time.sleep(0.5)
    raise AssertionError(f"task {task_id} did not finish within {timeout}s")


def poll_job(api: str, job_id: str, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job = curl(f"{api}/v1/jobs/{job_id}")
        assert status == 200
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish within {timeout}s")


def read_audio(path: Path, seconds: float | None = None) -> np.ndarray:
    samples, rate = sf.read(str(path))
    assert rate == 48000 and samples.ndim == 2 and samples.shape[1] == 2
    if seconds is not None:
        assert abs(len(samples) / rate - seconds) < 0.1
    assert samples.std() > 0
    return samples


def test_seed_001_pod_readme_curl_flow(api, tmp_path):
    # "Generate Music via curl": caption + lyrics + duration; batch_size defaults to 2.
    status, submitted = curl("-X", "POST", f"{api}/release_task", "-H", "Content-Type: application/json", "-d", """{
    "caption": "upbeat electronic dance music with heavy bass",
    "lyrics": "[Verse]\\nDancing through the night...",
    "duration": 60
  }""")
    assert status == 200 and submitted["code"] == 200
    assert submitted["data"]["status"] == "queued" and submitted["data"]["queue_position"] >= 1
    item = poll_query_result(api, submitted["data"]["task_id"])
    assert item["status"] == 1
    files = json.loads(item["result"])
    assert len(files) == 2
    for n, entry in enumerate(files):
        assert curl(f"{api}{entry['file']}", output=tmp_path / f"{n}.mp3")[0] == 200
        read_audio(tmp_path / f"{n}.mp3", 60.0)


def test_seed_002_legacy_generate_poll_and_download(api, tmp_path):
    status, queued = curl("-X", "POST", f"{api}/v1/music/generate", "-H", "Content-Type: application/json", "-d", """{
"caption": "upbeat pop song",
"lyrics": "Hello world",
"inference_steps": 16
}""")
    assert status == 200
    assert set(queued) == {"job_id", "status", "queue_position"} and queued["status"] == "queued"
    status, view = curl(f"{api}/v1/jobs/{queued['job_id']}")
    assert status == 200
    assert set(view) == {"job_id", "status", "created_at", "started_at", "finished_at", "queue_position",
                         "eta_seconds", "avg_job_seconds", "result", "error"}
    job = poll_job(api, queued["job_id"])
    assert job["status"] == "succeeded" and job["queue_position"] == 0 and job["error"] is None
    result = job["result"]
    assert {"first_audio_path", "second_audio_path", "audio_paths", "generation_info", "status_message",
            "seed_value"} <= set(result)
    assert result["audio_paths"][0] == result["first_audio_path"]
    assert curl(f"{api}{result['first_audio_path']}", output=tmp_path / "first.mp3")[0] == 200
    read_audio(tmp_path / "first.mp3")

    status, missing = curl(f"{api}/v1/jobs/nope")
    assert (status, missing) == (404, {"detail": "Job not found"})


def test_seed_002_legacy_thinking_form_and_upload_variants(api, tmp_path):
    status, thinking = curl("-X", "POST", f"{api}/v1/music/generate", "-H", "Content-Type: application/json", "-d", """{
"caption": "upbeat pop song",
"lyrics": "Hello world",
"thinking": true,
"lm_temperature": 0.85,
"lm_cfg_scale": 2.0,
"lm_top_k": null,
"lm_top_p": 0.9,
"lm_repetition_penalty": 1.0
}""")
    assert status == 200 and thinking["status"] == "queued"
    status, ballad = curl("-X", "POST", f"{api}/v1/music/generate", "-H", "Content-Type: application/json", "-d", """{
"caption": "slow emotional ballad",
"lyrics": "...",
"thinking": false,
"bpm": 72
}""")
    assert status == 200
    status, form = curl("-X", "POST", f"{api}/v1/music/generate", "-H", "Content-Type: application/x-www-form-urlencoded",
                        "--data-urlencode", "caption=upbeat pop song", "--data-urlencode", "lyrics=Hello world",
                        "--data-urlencode", "inference_steps=16")
    assert status == 200 and form["status"] == "queued"
    song = tmp_path / "song.mp3"
    t = np.arange(48000 * 6) / 48000
    sf.write(str(song), np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], axis=1) * 0.3, 48000)
    status, upload = curl("-X", "POST", f"{api}/v1/music/generate", "-F", "caption=remix this song",
                          "-F", f"src_audio=@{song}", "-F", "task_type=repaint")
    assert status == 200 and upload["status"] == "queued"

    jobs = {name: poll_job(api, body["job_id"]) for name, body in
            {"thinking": thinking, "ballad": ballad, "form": form, "upload": upload}.items()}
    assert all(job["status"] == "succeeded" for job in jobs.values()), jobs
    # "the job result may include ... bpm": the user's 72 is kept.
    assert jobs["ballad"]["result"]["bpm"] == 72
    assert jobs["thinking"]["result"]["lm_model"]
    # The repaint keeps the uploaded song's length.
    assert curl(f"{api}{jobs['upload']['result']['first_audio_path']}", output=tmp_path / "remix.mp3")[0] == 200
    read_audio(tmp_path / "remix.mp3", 6.0)


def test_seed_003_usage_guide_curl_examples(api, tmp_path):
    status, health = curl(f"{api}/health")
    assert status == 200 and health["code"] == 200 and health["error"] is None
    assert {"status": "ok", "service": "ACE-Step API", "version": "1.0"}.items() <= health["data"].items()

    status, submitted = curl("-X", "POST", f"{api}/release_task", "-H", "Content-Type: application/json", "-d", """{
"caption": "Warm acoustic folk song with gentle fingerpicked guitar, soft piano, and a cozy nostalgic atmosphere",
"lyrics": "[Verse 1]\\nLines of code like poetry\\nPatterns dancing endlessly\\n\\n[Chorus]\\nIn the logic we find grace\\nEvery problem has its place",
"duration": 90
}""")
    assert status == 200 and submitted["data"]["status"] == "queued"
    task_id = submitted["data"]["task_id"]
    item = poll_query_result(api, task_id)
    assert item["task_id"] == task_id and item["status"] == 1
    entry = json.loads(item["result"])[0]
    assert entry["file"].startswith("/v1/audio?path=%2F") and entry["file"].endswith(".mp3")

    # Download with the encoded path, and with the decoded absolute path.
    encoded = entry["file"].split("path=", 1)[1]
    assert curl(f"{api}/v1/audio?path={encoded}", output=tmp_path / "song.mp3")[0] == 200
    read_audio(tmp_path / "song.mp3", 90.0)
    decoded = urllib.parse.unquote(encoded)
    assert curl(f"{api}/v1/audio?path={decoded}", output=tmp_path / "song2.mp3")[0] == 200
    assert (tmp_path / "song2.mp3").read_bytes() == (tmp_path / "song.mp3").read_bytes()

    # Troubleshooting: the task id is not the file name; wrong parameter name gives no data.
    wrong = str(Path(decoded).with_name(f"{task_id}.mp3"))
    assert curl(f"{api}/v1/audio?path={wrong}") == (404, {"detail": "Audio file not found"})
    assert curl(f"{api}/v1/audio?path=e0a7dddd.mp3")[0] in (403, 404)
    assert curl("-X", "POST", f"{api}/query_result", "-d", json.dumps({"task_ids": [task_id]}))[1]["data"] == []
    # ... and the right name works even as curl -d sends it (labelled as a form).
    status, right = curl("-X", "POST", f"{api}/query_result", "-d", json.dumps({"task_id_list": [task_id]}))
    assert status == 200 and right["data"][0]["status"] == 1

    # Format input: a rough caption and lyrics come back as the LM's caption and metadata.
    status, formatted = curl("-X", "POST", f"{api}/format_input", "-H", "Content-Type: application/json", "-d", """{
"caption": "rock song",
"lyrics": "some rough lyrics here"
}""")
    assert status == 200 and formatted["code"] == 200
    assert {"caption", "lyrics", "bpm", "key_scale", "time_signature", "duration", "vocal_language"} <= set(formatted["data"])


def test_seed_004_fal_prompt_to_audio(api, tmp_path):
    status, body = curl("--request", "POST", "--url", f"{api}/fal-ai/ace-step/prompt-to-audio",
                        "--header", "Authorization: Key any-key", "--header", "Content-Type: application/json",
                        "--data", """{
     "prompt": "A lofi hiphop song with a chill vibe about a sunny day on the boardwalk."
   }""")
    assert status == 200, body
    assert {"audio", "seed", "tags", "lyrics"} <= set(body)
    assert isinstance(body["seed"], int) and isinstance(body["tags"], str) and isinstance(body["lyrics"], str)
    assert body["audio"]["url"].startswith(api + "/v1/audio?path=")
    saved = tmp_path / ("fal" + Path(urllib.parse.unquote(body["audio"]["url"])).suffix)
    assert curl(body["audio"]["url"], output=saved)[0] == 200
    read_audio(saved, 60.0)  # fal's default duration


def test_contract_e20_chat_completion(api):
    status, body = curl("-X", "POST", f"{api}/v1/chat/completions", "-H", "Content-Type: application/json", "-d",
                        json.dumps({"model": "acestep/acestep-v15-turbo",
                                    "messages": [{"role": "user", "content": "<prompt>Lo-fi hip hop beat</prompt>"}],
                                    "batch_size": 1, "audio_config": {"instrumental": True, "duration": 30}}))
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["model"] == "acestep/acestep-v15-turbo"
    assert body["id"].startswith("chatcmpl-")
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].startswith("## Metadata")
    (audio,) = choice["message"]["audio"]
    prefix, data = audio["audio_url"]["url"].split(",", 1)
    assert audio["type"] == "audio_url" and prefix == "data:audio/mpeg;base64"
    samples, rate = sf.read(io.BytesIO(base64.b64decode(data)))
    assert rate == 48000 and abs(len(samples) / rate - 30.0) < 0.1

    status, error = curl("-X", "POST", f"{api}/v1/chat/completions", "-H", "Content-Type: application/json", "-d",
                         json.dumps({"messages": [{"role": "user", "content": "x"}]}))
    assert status == 400 and error["detail"].startswith("Invalid request format")
    status, error = curl("-X", "POST", f"{api}/v1/chat/completions", "-H", "Content-Type: application/json", "-d",
                         json.dumps({"model": "acestep/acestep-v15-turbo",
                                     "messages": [{"role": "system", "content": "you make music"}]}))
    assert (status, error) == (400, {"detail": "No valid prompt, lyrics, sample query, or input audio found in request"})
