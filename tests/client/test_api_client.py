"""AceStepClient against a real demo server process that requires an API key."""

from __future__ import annotations

import http.server
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from acestep_api.client.api_client import AceStepClient, ApiError, TaskState, TimeoutExpired
from tests.client.conftest import API_KEY

POLL = 0.05


@pytest.fixture(scope="module")
def client(keyed_server):
    with AceStepClient(keyed_server.url + "/", API_KEY) as client:
        yield client


@pytest.fixture(scope="module")
def two_tasks(client):
    """A batch of two, and a task submitted right behind it: what the client saw of each."""
    # 60 s keeps the demo model's diffusion steps on screen for about a second, so polls every
    # 50 ms see them even on a fast machine (at 10 s they lasted 50 ms).
    first = client.submit("driving synthwave", "[inst]", duration=60, batch_size=2, inference_steps=16)
    second = client.submit("sparse piano ballad", "", duration=10, batch_size=1)
    second_queued = client.query(second)
    with pytest.raises(TimeoutExpired) as timed_out:  # it cannot start before the first ends
        client.wait(second, poll_interval=0.3, timeout=0.1)
    seen: list[tuple[TaskState, float]] = []
    first_done = client.wait(first, poll_interval=POLL, timeout=300, on_update=lambda s, e: seen.append((s, e)))
    second_done = client.wait(second, poll_interval=POLL, timeout=300)
    return SimpleNamespace(first_id=first, second_queued=second_queued, timed_out=timed_out.value,
                           seen=seen, first=first_done, second=second_done)


def test_health_and_models(client, keyed_server):
    assert client.is_healthy()
    assert client.health()["status"] == "ok"
    names = [model["name"] for model in client.models()]
    assert names[0] == "acestep-v15-turbo"
    with AceStepClient(keyed_server.url) as keyless:
        assert keyless.is_healthy()  # /health never asks for the key
        with pytest.raises(ApiError) as refused:
            keyless.models()
    assert refused.value.status_code == 401


def test_a_task_behind_another_reports_its_place_in_line(two_tasks):
    queued = two_tasks.second_queued
    assert queued.known and queued.status == 0 and not queued.finished
    assert queued.stage == "queued" and queued.progress == 0.0
    assert queued.queue_position is not None and queued.queue_position >= 1
    assert queued.eta_seconds > 0
    assert str(two_tasks.timed_out) == "Timeout after 0 seconds"


def test_wait_reports_every_poll_until_the_end(two_tasks):
    states = [state for state, _ in two_tasks.seen]
    elapsed = [seconds for _, seconds in two_tasks.seen]
    assert elapsed == sorted(elapsed)
    assert [state.finished for state in states] == [False] * (len(states) - 1) + [True]
    running = [state for state in states if not state.finished and state.queue_position is None]
    assert running, "never saw the task running"
    assert all(state.stage and state.stage != "queued" for state in running)
    assert any(state.stage.startswith("diffusion step ") for state in running)
    progress = [state.progress for state in states]
    assert progress == sorted(progress) and progress[-1] == 1.0


def test_a_finished_task_lists_its_files_and_they_download(two_tasks, client, tmp_path):
    first = two_tasks.first
    assert first.succeeded and first.error is None and first.queue_position is None
    assert len(first.files) == 2 and all(url.startswith("/v1/audio?path=%2F") for url in first.files)
    assert two_tasks.second.succeeded and len(two_tasks.second.files) == 1
    saved = client.download(first.files[1], tmp_path / "new" / "folder" / "song.mp3")
    assert saved == tmp_path / "new" / "folder" / "song.mp3"
    samples, rate = sf.read(saved)
    assert rate == 48000 and samples.shape[1] == 2 and abs(len(samples) / rate - 60.0) < 0.1
    # The same task queried again reads the same.
    assert client.query(two_tasks.first_id).files == first.files


def test_download_refusals_raise_and_write_nothing(client, tmp_path):
    with pytest.raises(ApiError) as outside:
        client.download("/v1/audio?path=%2Fetc%2Fpasswd", tmp_path / "passwd")
    assert outside.value.status_code == 403 and "Access denied" in outside.value.body
    assert not (tmp_path / "passwd").exists()


def test_the_key_is_not_sent_to_another_host(client, tmp_path):
    seen_headers = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server hook name
            seen_headers.append(dict(self.headers))
            self.send_response(200)
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"ID3!")

        def log_message(self, *args):
            pass

    elsewhere = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=elsewhere.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{elsewhere.server_port}/files/song.mp3"
        saved = client.download(url, tmp_path / "song.mp3")
    finally:
        elsewhere.shutdown()
        elsewhere.server_close()
    assert saved.read_bytes() == b"ID3!"
    (headers,) = seen_headers
    assert "Authorization" not in headers and headers["User-Agent"] == "ACE-Step-CLI/1.0"


def test_unknown_task_is_not_known(client):
    state = client.query("no-such-task")
    assert (state.known, state.status, state.finished, state.elements, state.files) == (False, 0, False, [], [])


def test_bad_input_raises_api_error_with_the_servers_answer(client):
    with pytest.raises(ApiError) as bad:
        client.submit("x", task_type="symphony")
    assert bad.value.status_code == 400 and "task_type" in bad.value.body
    assert str(bad.value).startswith("API error 400: ")


def test_upload_a_source_for_a_cover(client, tmp_path):
    source = tmp_path / "source.wav"
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, size=(48000 * 10, 2))
    sf.write(source, noise, 48000)
    data = client.release_task({"caption": "cover it", "task_type": "cover", "audio_cover_strength": 0.5,
                                "batch_size": 1, "use_random_seed": False, "seed": 7},
                               files={"src_audio": source})
    assert data["status"] == "queued"
    done = client.wait(data["task_id"], poll_interval=POLL, timeout=300)
    assert done.succeeded and len(done.files) == 1
    assert done.elements[0]["seed_value"] == "7"  # multipart fields arrived typed as sent


def test_samples_and_format_input(client):
    sample = client.create_random_sample()
    assert isinstance(sample["description"], str) and sample["description"]
    formatted = client.format_input("pop rock", "Walking down the street", duration=30)
    assert formatted["duration"] == 30 and "caption" in formatted


def test_cancel_a_waiting_task(client):
    running = client.submit("long one", duration=10, batch_size=1, inference_steps=16)
    waiting = client.submit("never mind", duration=10, batch_size=1)
    try:
        answer = client.cancel(waiting)
    except ApiError as error:
        if error.status_code in (404, 405) and "Task not found" not in error.body:
            pytest.skip("this server has no /cancel_task route")
        raise
    assert answer["task_id"] == waiting
    state = client.query(waiting)
    assert state.finished and state.status == 2 and state.error == "Cancelled by request"
    try:
        client.cancel(running)  # not needed either; it may have ended by now (409)
    except ApiError as error:
        assert error.status_code == 409, error
    assert client.wait(running, poll_interval=POLL, timeout=60).finished
