"""The runpod SDK's development server (`--rp_serve_api`) in front of the handler, with the demo
models: /runsync in both dialects, /run then /status, failures as FAILED with the error, and the
progress updates the SDK posts where the platform would receive them."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import soundfile as sf

from tests.e2e.server_process import free_port
from tests.serverless.worker_process import HANDLER, worker_env

STARTUP_SECONDS = 120
JOB_SECONDS = 300  # the first job also loads the models


class ProgressInbox(ThreadingHTTPServer):
    """Receives what the SDK posts to RUNPOD_WEBHOOK_POST_OUTPUT: job id -> posted bodies."""

    def __init__(self):
        self.posts: dict[str, list[dict]] = {}
        inbox = self

        class Receive(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                job_id = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["id"][0]
                inbox.posts.setdefault(job_id, []).append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Receive)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/progress?id=$ID"

    def wait_for(self, job_id: str, seconds: float = 30) -> list[dict]:
        deadline = time.monotonic() + seconds
        while not self.posts.get(job_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.posts.get(job_id, [])


class DevServer:
    def __init__(self, url: str, outputs: Path, inbox: ProgressInbox, log: Path):
        self.url, self.outputs, self.inbox, self.log_path = url, outputs, inbox, log
        self.client = httpx.Client(base_url=url, timeout=JOB_SECONDS)

    def post(self, path: str, body: dict) -> dict:
        response = self.client.post(path, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def runsync(self, fields: dict) -> dict:
        return self.post("/runsync", {"input": fields})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("rp-serve-api")
    inbox = ProgressInbox()
    threading.Thread(target=inbox.serve_forever, daemon=True).start()
    port = free_port()
    log = root / "worker.log"
    env = worker_env(root, ACESTEP_INIT_LLM="false", RUNPOD_WEBHOOK_POST_OUTPUT=inbox.url)
    with open(log, "ab") as sink:
        # cwd: the SDK keeps its job list in .runpod_jobs.pkl there.
        process = subprocess.Popen(
            [*HANDLER, "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)],
            cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    dev = DevServer(f"http://127.0.0.1:{port}", root / "outputs", inbox, log)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, f"the worker exited:\n{dev.log()}"
            assert time.monotonic() < deadline, f"no answer within {STARTUP_SECONDS}s:\n{dev.log()}"
            try:
                if httpx.get(dev.url + "/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield dev
    finally:
        dev.client.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        inbox.shutdown()
        inbox.server_close()


def test_runsync_release_task_dialect_with_audio(server):
    answer = server.runsync({"caption": "Upbeat electronic instrumental with bright synths", "lyrics": "",
                             "duration": 10, "batch_size": 1, "return_audio_base64": True})
    assert answer["status"] == "COMPLETED", answer
    output = answer["output"]
    assert (output["status"], output["duration"], output["batch_size"]) == ("completed", 10, 1)
    [element] = output["results"]
    assert element["file"].startswith("/v1/audio?path=%2F") and element["status"] == 1
    path = Path(urllib.parse.unquote(element["file"].removeprefix("/v1/audio?path=")))
    assert path.parent == (server.outputs / "api_audio").resolve() and path.is_file()
    [audio] = output["audio"]
    assert (audio["index"], audio["file"], audio["content_type"]) == (0, element["file"], "audio/mpeg")
    samples, rate = sf.read(io.BytesIO(base64.b64decode(audio["base64"])), always_2d=True)
    assert rate == 48000 and samples.shape[1] == 2
    assert abs(samples.shape[0] / rate - 10.0) < 0.1  # mp3 frames pad the end slightly

    # The SDK posted the job's progress where the platform would receive it.
    posts = server.inbox.wait_for(answer["id"])
    assert posts and all(post["status"] == "IN_PROGRESS" for post in posts)
    assert any(post["output"] in ("loading models", "preparing inputs (2%)") for post in posts), posts


def test_runsync_v1_dialect(server):
    answer = server.runsync({"prompt": "peaceful piano melody with nature sounds", "duration": 3.0,
                             "guidance_scale": 7.5, "num_inference_steps": 25, "seed": 12345})
    assert answer["status"] == "COMPLETED", answer
    output = answer["output"]
    assert (output["prompt"], output["duration"], output["seed"]) == ("peaceful piano melody with nature sounds",
                                                                     3.0, 12345)
    assert (output["sample_rate"], output["success"]) == (48000, True)
    assert output["generation_time"] >= 0
    wav = base64.b64decode(output["audio_base64"])
    samples, rate = sf.read(io.BytesIO(wav), dtype="int16", always_2d=True)
    assert (rate, samples.shape) == (48000, (3 * 48000, 2))
    assert sf.info(io.BytesIO(wav)).subtype == "PCM_16"


def test_run_then_status_until_completed(server):
    submitted = server.post("/run", {"input": {"caption": "Cinematic orchestral trailer music", "duration": 10}})
    assert submitted["status"] in ("IN_QUEUE", "IN_PROGRESS")
    for _ in range(100):
        status = server.post(f"/status/{submitted['id']}", {})
        if status["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
            break
        time.sleep(1)
    assert status["status"] == "COMPLETED", status
    assert status["id"] == submitted["id"]
    assert status["output"]["status"] == "completed"
    assert status["output"]["results"][0]["metas"]["prompt"] == "Cinematic orchestral trailer music"


@pytest.mark.parametrize("fields,error", [
    ({}, "Input 'caption' is required"),
    ({"prompt": ""}, "Prompt is required"),
    ({"prompt": "x", "duration": 500}, "duration must be between 1 and 240 (got 500)"),
    ({"prompt": "x", "num_inference_steps": 5}, "num_inference_steps must be an integer between 10 and 100 (got 5)"),
    ({"caption": "x", "duration": 10, "timeout_seconds": 1e-9}, "Generation timeout after 1e-09 seconds"),
])
def test_errors_are_failed_jobs(server, fields, error):
    answer = server.runsync(fields)
    assert answer["status"] == "FAILED" and answer["error"] == error, answer


def test_generation_failure_is_a_failed_job_and_the_worker_goes_on(server):
    audio_dir = server.outputs / "api_audio"
    parked = server.outputs / "api_audio.parked"
    if audio_dir.exists():
        audio_dir.rename(parked)
    audio_dir.write_bytes(b"a file where the audio folder should be")
    try:
        answer = server.runsync({"caption": "x", "duration": 10})
    finally:
        audio_dir.unlink()
        if parked.exists():
            parked.rename(audio_dir)
    assert answer["status"] == "FAILED", answer
    assert answer["error"] == "Generation failed: an internal error occurred; the server log has the details", answer
    assert server.runsync({"caption": "x", "duration": 10})["status"] == "COMPLETED"



def curl_runsync(server: DevServer, body: str) -> dict:
    """The documents' own `curl -X POST .../runsync` blocks, sent to the local API server."""
    done = subprocess.run(
        ["curl", "-s", "-S", "--max-time", str(JOB_SECONDS), "-X", "POST", f"{server.url}/runsync",
         "-H", "Authorization: Bearer YOUR_API_KEY", "-H", "Content-Type: application/json", "-d", body],
        capture_output=True, check=True,
    )
    return json.loads(done.stdout)


def test_the_documented_runsync_curl_examples(server):
    # The ACE-Step 1.5 RunPod template's README, as written.
    answer = curl_runsync(server, """{
    "input": {
      "caption": "Upbeat electronic instrumental with bright synths",
      "lyrics": "",
      "duration": 30,
      "batch_size": 1
    }
  }""")
    assert answer["status"] == "COMPLETED", answer
    output = answer["output"]
    assert (output["status"], output["duration"], output["batch_size"]) == ("completed", 30, 1)
    assert len(output["results"]) == 1 and output["results"][0]["status"] == 1

    # The ACE-Step v1 endpoint's docs, as written.
    answer = curl_runsync(server, """{
    "input": {
      "prompt": "upbeat electronic dance music",
      "duration": 30.0,
      "guidance_scale": 8.0,
      "num_inference_steps": 20,
      "seed": 42
    }
  }""")
    assert answer["status"] == "COMPLETED", answer
    output = answer["output"]
    assert {"audio_base64", "generation_time", "prompt", "duration", "seed", "sample_rate", "success"} <= set(output)
    assert (output["prompt"], output["duration"], output["seed"]) == ("upbeat electronic dance music", 30.0, 42)
    assert output["sample_rate"] == 48000 and output["success"] is True
    samples, rate = sf.read(io.BytesIO(base64.b64decode(output["audio_base64"])), always_2d=True)
    assert rate == 48000 and samples.shape[1] == 2 and abs(samples.shape[0] / rate - 30.0) < 0.01
