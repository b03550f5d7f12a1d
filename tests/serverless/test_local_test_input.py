"""`python -m acestep_api.serverless.handler --test_input ...` with the demo models: the runpod
SDK's local test mode, one real process per job (the two that generate run side by side)."""

from __future__ import annotations

import json
import re

import pytest

from tests.serverless.worker_process import logged_result, start_test_input, wav_header

E21_INPUT = {"caption": "Upbeat electronic instrumental with bright synths", "lyrics": "", "duration": 10,
             "batch_size": 1}
SEED_000_INPUT = {"prompt": "upbeat electronic dance music", "duration": 2.0, "guidance_scale": 8.0,
                  "num_inference_steps": 20, "seed": 42}
TIMEOUT = 600


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """Both generating jobs, started together; name -> (exit code, output)."""
    root = tmp_path_factory.mktemp("test-input")
    jobs = {
        "e21": start_test_input(root / "e21", json.dumps({"input": E21_INPUT})),
        "seed000": start_test_input(root / "seed000", json.dumps({"input": SEED_000_INPUT})),
    }
    results = {}
    try:
        for name, process in jobs.items():
            stdout, _ = process.communicate(timeout=TIMEOUT)
            results[name] = (process.returncode, stdout)
    finally:
        for process in jobs.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def test_e21_release_task_dialect(finished):
    code, stdout = finished["e21"]
    assert code == 0, stdout[-3000:]
    assert "Job local_test completed successfully." in stdout
    result = logged_result(stdout).value
    output = result["output"]
    assert output["status"] == "completed"
    assert (output["duration"], output["batch_size"]) == (10, 1)
    assert "audio" not in output  # not asked for
    [element] = output["results"]
    assert element["file"].startswith("/v1/audio?path=%2F") and element["file"].endswith(".mp3")
    assert (element["status"], element["stage"], element["dit_model"]) == (1, "succeeded", "acestep-v15-turbo")
    assert element["metas"]["prompt"] == E21_INPUT["caption"]
    assert element["metas"]["duration"] == 10.0


def test_seed_000_v1_dialect(finished):
    code, stdout = finished["seed000"]
    assert code == 0, stdout[-3000:]
    result = logged_result(stdout)  # the base64 makes it long: the SDK prints its two ends
    assert result.head.startswith("{'output': {'audio_base64': '")
    header = wav_header(result.head.removeprefix("{'output': {'audio_base64': '"))
    assert header == {"channels": 2, "sample_rate": 48000, "bits": 16, "data_bytes": 2 * 48000 * 2 * 2}
    tail = re.search(r"'generation_time': ([\d.]+), 'prompt': 'upbeat electronic dance music', 'duration': 2.0, "
                     r"'seed': 42, 'sample_rate': 48000, 'success': True\}\}$", result.tail)
    assert tail, result.tail[-300:]
    assert float(tail.group(1)) >= 0


def test_empty_input_fails_with_the_caption_error(tmp_path):
    process = start_test_input(tmp_path, json.dumps({"input": {}}))
    stdout, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 1, stdout
    assert "ERROR  | Job local_test failed with error: Input 'caption' is required" in stdout
    # Refused before the models were needed: nothing was loaded.
    assert "Demo mode" not in stdout
