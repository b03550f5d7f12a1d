"""ServerlessWorker.run on the tiny engine, in-process: both answers, audio, errors, timeouts."""

from __future__ import annotations

import base64
import copy
import io
import os
import urllib.parse

import pytest
import soundfile as sf

from acestep_api.engine.startup import build_engine
from acestep_api.settings import ServerlessSettings
from acestep_api.serverless.worker import ServerlessWorker
from acestep_api.settings import Settings

META_KEYS = {"bpm", "duration", "genres", "keyscale", "timesignature", "prompt", "lyrics"}


@pytest.fixture
def make_worker(tiny_engine, tmp_path):
    def make(engine=tiny_engine, **options) -> ServerlessWorker:
        settings = Settings(_env_file=None, output_dir=tmp_path / "outputs")
        return ServerlessWorker(settings, ServerlessSettings(_env_file=None, **options), load=lambda _: engine)
    return make


def run(worker: ServerlessWorker, fields) -> tuple[dict, list[str]]:
    messages: list[str] = []
    return worker.run(fields, messages.append), messages


def path_of(file_url: str) -> str:
    assert file_url.startswith("/v1/audio?path=%2F")
    return urllib.parse.unquote(file_url.removeprefix("/v1/audio?path="))


def test_release_task_answer_has_the_template_shape(make_worker):
    output, _ = run(make_worker(), {"caption": "Upbeat electronic instrumental with bright synths",
                                    "lyrics": "", "duration": 10, "batch_size": 1})
    assert set(output) == {"task_id", "status", "duration", "batch_size", "results"}
    assert output["status"] == "completed"
    assert (output["duration"], output["batch_size"]) == (10, 1)
    [element] = output["results"]
    # The element of a succeeded job in /query_result (docs/wire-contract.md#result-elements).
    assert element["status"] == 1 and element["wave"] == "" and element["env"] == "development"
    assert element["file"].endswith(".mp3") and os.path.isfile(path_of(element["file"]))
    assert isinstance(element["create_time"], int)
    assert set(element["metas"]) == META_KEYS
    assert element["metas"]["prompt"] == "Upbeat electronic instrumental with bright synths"
    assert element["metas"]["duration"] == 10.0
    assert element["seed_value"].isdigit()
    assert "Total Time" in element["generation_info"]
    assert (element["dit_model"], element["progress"], element["stage"]) == ("acestep-v15-turbo", 1.0, "succeeded")


def test_release_task_base64_audio_per_item(make_worker):
    output, _ = run(make_worker(), {"caption": "x", "duration": 10, "batch_size": 2, "return_audio_base64": True})
    assert output["batch_size"] == 2 and len(output["results"]) == 2
    assert [entry["index"] for entry in output["audio"]] == [0, 1]
    for entry, element in zip(output["audio"], output["results"]):
        assert entry["file"] == element["file"]
        assert entry["content_type"] == "audio/mpeg"
        data = base64.b64decode(entry["base64"])
        with open(path_of(entry["file"]), "rb") as handle:
            assert data == handle.read()
        audio, rate = sf.read(io.BytesIO(data), always_2d=True)
        assert rate == 48000 and audio.shape[1] == 2
        assert abs(audio.shape[0] / rate - 10.0) < 0.1  # mp3 frames pad the end slightly


def test_release_task_too_large_files_are_listed_not_sent(make_worker):
    output, _ = run(make_worker(), {"caption": "x", "duration": 10, "audio_format": "wav",
                                    "return_audio_base64": True, "max_base64_bytes": 1000})
    [entry] = output["audio"]
    size = os.path.getsize(path_of(output["results"][0]["file"]))
    assert entry == {"index": 0, "file": output["results"][0]["file"], "skipped": True,
                     "reason": "file_too_large", "bytes": size}


def test_release_task_wav_content_type(make_worker):
    output, _ = run(make_worker(), {"caption": "x", "duration": 10, "audio_format": "wav", "return_audio_base64": True})
    assert output["audio"][0]["content_type"] == "audio/wav"


def test_v1_answer_is_a_16_bit_wav_of_the_asked_length(make_worker):
    worker = make_worker()
    fields = {"prompt": "upbeat electronic dance music", "duration": 2.5, "guidance_scale": 8.0,
              "num_inference_steps": 20, "seed": 42}
    output, _ = run(worker, fields)
    assert set(output) == {"audio_base64", "generation_time", "prompt", "duration", "seed", "sample_rate", "success"}
    assert (output["prompt"], output["duration"], output["seed"]) == ("upbeat electronic dance music", 2.5, 42)
    assert (output["sample_rate"], output["success"]) == (48000, True)
    assert output["generation_time"] >= 0
    wav = base64.b64decode(output["audio_base64"])
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    info = sf.info(io.BytesIO(wav))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (48000, 2, "PCM_16", 120000)
    # The same seed gives the same song.
    again, _ = run(worker, fields)
    assert again["audio_base64"] == output["audio_base64"]


def test_v1_random_seed_is_reported(make_worker):
    output, _ = run(make_worker(), {"prompt": "x", "duration": 1})
    assert isinstance(output["seed"], int) and output["success"] is True
    assert sf.info(io.BytesIO(base64.b64decode(output["audio_base64"]))).frames == 48000


def test_progress_reaches_the_platform_callback(make_worker):
    _, messages = run(make_worker(progress_interval=0), {"caption": "x", "duration": 10})
    assert messages[0] == "loading models"
    assert "diffusion step 8/8 (85%)" in messages
    assert messages[-1] == "done (100%)"


def test_progress_is_throttled(make_worker):
    _, messages = run(make_worker(progress_interval=3600), {"caption": "x", "duration": 10})
    assert messages == ["loading models", "preparing inputs (2%)"]


def test_models_are_loaded_once(tiny_engine, tmp_path):
    loads = []

    def load(settings):
        loads.append(settings)
        return tiny_engine

    worker = ServerlessWorker(Settings(_env_file=None, output_dir=tmp_path), ServerlessSettings(_env_file=None), load=load)
    assert "error" in worker.run({}, print)  # refused before the models are needed
    assert loads == []
    for _ in range(2):
        assert worker.run({"prompt": "x", "duration": 1}, lambda message: None)["success"] is True
    assert len(loads) == 1


def test_generation_failure_release_task(make_worker, tiny_engine, tmp_path):
    broken = copy.copy(tiny_engine)
    broken.output_dir = tmp_path / "occupied"
    broken.output_dir.write_bytes(b"a file where the audio folder should be")
    output, _ = run(make_worker(broken), {"caption": "x", "duration": 10})
    assert set(output) == {"error"}
    assert output["error"] == "Generation failed: an internal error occurred; the server log has the details"


def test_generation_failure_v1(make_worker, tiny_engine, tmp_path):
    broken = copy.copy(tiny_engine)
    broken.output_dir = tmp_path / "occupied"
    broken.output_dir.write_bytes(b"a file where the audio folder should be")
    output, _ = run(make_worker(broken), {"prompt": "x", "duration": 5})
    assert output["error"] == "Generation failed: an internal error occurred; the server log has the details"
    assert output["success"] is False and output["generation_time"] >= 0


def test_timeout_stops_the_job_before_any_audio(make_worker, tiny_engine):
    before = set(os.listdir(tiny_engine.output_dir))
    output, _ = run(make_worker(), {"caption": "x", "duration": 10, "timeout_seconds": 1e-9})
    assert output == {"error": "Generation timeout after 1e-09 seconds"}
    assert set(os.listdir(tiny_engine.output_dir)) == before


def test_timeout_v1_uses_the_job_timeout_setting(make_worker):
    output, _ = run(make_worker(job_timeout=1e-9), {"prompt": "x", "duration": 5})
    assert output["error"] == "Generation timeout after 1e-09 seconds"
    assert output["success"] is False and "generation_time" in output


@pytest.mark.parametrize("fields,error", [
    ("a string", "Input must be a JSON object"),
    (None, "Input must be a JSON object"),
    ({}, "Input 'caption' is required"),
    ({"prompt": ""}, "Prompt is required"),
    ({"caption": "x", "task_type": "extract"},
     "task_type 'extract' is not supported by model 'acestep-v15-turbo'; models that support it: acestep-v15-base"),
    ({"caption": "x", "task_type": "cover", "src_audio_path": "/etc/passwd"},
     "src_audio_path: absolute audio file paths are not allowed"),
])
def test_refused_inputs(make_worker, fields, error):
    output, _ = run(make_worker(), fields)
    assert output == {"error": error}


def test_input_audio_from_the_input_dir(tiny_engine, tmp_path):
    import numpy as np

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    tone = 0.3 * np.sin(np.linspace(0, 2000, 48000 * 3))
    sf.write(inputs / "source.wav", np.stack([tone, tone], axis=1), 48000)
    (inputs / "empty.wav").write_bytes(b"")
    settings = Settings(_env_file=None, output_dir=tmp_path / "outputs", input_dir=inputs)
    worker = ServerlessWorker(settings, ServerlessSettings(_env_file=None), load=lambda _: tiny_engine)
    output = worker.run({"caption": "x", "task_type": "cover", "src_audio_path": "source.wav"}, lambda m: None)
    assert output["status"] == "completed"
    refused = worker.run({"caption": "x", "task_type": "cover", "src_audio_path": "empty.wav"}, lambda m: None)
    assert refused["error"].startswith("src_audio_path: ")


def test_model_loading_failure_is_the_jobs_error_and_retried(tmp_path):
    settings = Settings(_env_file=None, output_dir=tmp_path / "outputs", checkpoint_dir=tmp_path / "nothing-here")
    worker = ServerlessWorker(settings, ServerlessSettings(_env_file=None), load=build_engine)
    for _ in range(2):  # the second job tries again
        output = worker.run({"caption": "x"}, lambda message: None)
        assert set(output) == {"error"}
        assert output["error"].startswith("Loading the models failed: ")
