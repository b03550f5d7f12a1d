"""What today's official clients send, through HTTP on the tiny checkpoints: a short silent
source upload with every text2music request (the ACE-Step DAW), silent references, absolute
paths inside the system temp folder, and a failed /query_result item with its error on top."""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.server.conftest import serve, wait_finished
from tests.server.test_audio_tasks_http import FRAME_SECONDS, SOURCE_SECONDS, source_wav

pytestmark = pytest.mark.anyio


def silent_wav(path: Path, seconds: float = 0.1, rate: int = 44100) -> Path:
    sf.write(path, np.zeros((int(seconds * rate), 2), dtype=np.float32), rate, subtype="PCM_16")
    return path


@pytest.fixture
def system_temp():
    """A folder of this test's inside the real system temp folder (not pytest's tmp_path,
    which may lie elsewhere), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="acestep-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def lm_live(settings, lm_engine):
    async with serve(settings, lm_engine) as (app, client):
        yield app, client


async def finished(app, client, response) -> tuple[object, list[dict], dict]:
    assert response.status_code == 200, response.text
    task_id = response.json()["data"]["task_id"]
    job = await wait_finished(app, task_id)
    item = (await client.post("/query_result", json={"task_id_list": [task_id]})).json()["data"][0]
    return job, json.loads(item["result"]), item


def seconds_of(element: dict) -> float:
    info = sf.info(Path(urllib.parse.unquote(element["file"].split("path=", 1)[1])))
    return info.frames / info.samplerate


async def test_text2music_with_the_daws_silent_source_upload_succeeds(live, tmp_path):
    app, client = live
    with open(silent_wav(tmp_path / "silence.wav"), "rb") as handle:
        response = await client.post("/release_task", data={
            "prompt": "x", "task_type": "text2music", "audio_duration": "10", "batch_size": "1",
            "audio_format": "wav"}, files={"src_audio": ("silence.wav", handle, "audio/wav")})
    job, [element], _ = await finished(app, client, response)
    assert job.status.value == "succeeded", job.error
    # No source: the song is as long as asked, not as the 0.1 s upload.
    assert abs(seconds_of(element) - 10.0) <= FRAME_SECONDS
    assert job.temp_files and not any(Path(path).exists() for path in job.temp_files)


@pytest.mark.parametrize("task, model, extra, length", [
    ("repaint", "acestep-v15-turbo", {"repainting_start": "1", "repainting_end": "3"}, 6.0),
    ("cover", "acestep-v15-turbo", {}, 6.0),
    ("extract", "acestep-v15-base", {"track_name": "vocals"}, 6.0),
])
async def test_a_silent_source_runs_the_task_on_silence(live, tmp_path, task, model, extra, length):
    """As the official handler: a silent source is silence frames of its length, not a refusal."""
    app, client = live
    with open(silent_wav(tmp_path / "silence.wav", seconds=6.0), "rb") as handle:
        response = await client.post("/release_task", data={
            "prompt": "x", "task_type": task, "model": model, "batch_size": "1", "audio_format": "wav",
            "inference_steps": "4", **extra}, files={"src_audio": ("silence.wav", handle, "audio/wav")})
    job, [element], _ = await finished(app, client, response)
    assert job.status.value == "succeeded", job.error
    assert abs(seconds_of(element) - length) <= FRAME_SECONDS


async def test_a_silent_reference_is_dropped(live, tmp_path):
    app, client = live
    fields = {"prompt": "x", "audio_duration": "10", "batch_size": "1", "audio_format": "wav",
              "use_random_seed": "false", "seed": "5"}
    with open(silent_wav(tmp_path / "silence.wav", seconds=2.0), "rb") as handle:
        response = await client.post("/release_task", data=fields,
                                     files={"reference_audio": ("silence.wav", handle, "audio/wav")})
    job, [element], _ = await finished(app, client, response)
    assert job.status.value == "succeeded", job.error
    _, [plain], _ = await finished(app, client, await client.post("/release_task", data=fields))
    read = lambda e: sf.read(Path(urllib.parse.unquote(e["file"].split("path=", 1)[1])))[0]  # noqa: E731
    assert np.array_equal(read(element), read(plain))  # the same song as without a reference


@pytest.mark.parametrize("task, extra", [
    ("cover", {}),
    ("repaint", {"repainting_start": 1.0, "repainting_end": 3.0}),
])
async def test_an_absolute_path_in_the_system_temp_folder_is_a_source(live, system_temp, task, extra):
    app, client = live
    wav = source_wav(system_temp)
    response = await client.post("/release_task", json={
        "prompt": "x", "task_type": task, "src_audio_path": str(wav), "batch_size": 1, "audio_format": "wav",
        **extra})
    job, [element], _ = await finished(app, client, response)
    assert job.status.value == "succeeded", job.error
    assert job.request.src_audio_path == str(wav.resolve())
    assert abs(seconds_of(element) - SOURCE_SECONDS) <= FRAME_SECONDS
    assert wav.exists() and job.temp_files == []  # a client's own file is never removed


async def test_an_absolute_path_in_the_system_temp_folder_is_a_reference(live, system_temp):
    app, client = live
    wav = source_wav(system_temp)
    response = await client.post("/release_task", json={
        "prompt": "x", "reference_audio_path": str(wav), "audio_duration": 10, "batch_size": 1,
        "audio_format": "wav"})
    job, [element], _ = await finished(app, client, response)
    assert job.status.value == "succeeded", job.error
    assert job.request.reference_audio_path == str(wav.resolve())
    assert abs(seconds_of(element) - 10.0) <= FRAME_SECONDS


async def test_full_analysis_only_of_a_temp_folder_file(lm_live, system_temp):
    app, client = lm_live
    wav = source_wav(system_temp)
    response = await client.post("/release_task", json={"src_audio_path": str(wav), "full_analysis_only": True})
    job, [element], _ = await finished(app, client, response)
    assert job.status.value == "succeeded", job.error
    assert element["status_message"] == "Full Hardware Analysis Success"


async def test_temp_paths_can_be_switched_off(settings, engine, system_temp):
    wav = source_wav(system_temp)
    async with serve(settings.model_copy(update={"allow_temp_paths": False}), engine, start_worker=False) as (
            _, client):
        response = await client.post("/release_task", json={"prompt": "x", "task_type": "cover",
                                                            "src_audio_path": str(wav)})
    assert (response.status_code, response.json()) == (
        400, {"detail": "src_audio_path: absolute audio file paths are not allowed"})


async def test_another_requests_upload_stays_refused_inside_the_temp_folder(settings, engine, system_temp):
    """The server's upload folder inside the system temp folder: its files are still no one
    else's to name, and neither is the job database."""
    settings = settings.model_copy(update={"output_dir": system_temp / "outputs"})
    async with serve(settings, engine, start_worker=False) as (_, client):
        settings.upload_dir.mkdir(parents=True, exist_ok=True)
        theirs = source_wav(settings.upload_dir)
        response = await client.post("/release_task", json={"prompt": "x", "task_type": "cover",
                                                            "src_audio_path": str(theirs)})
        assert response.status_code == 403
        assert "can only be used by the request that uploaded it" in response.json()["detail"]
        assert settings.database_path.is_file()
        response = await client.post("/release_task", json={"prompt": "x", "task_type": "cover",
                                                            "src_audio_path": str(settings.database_path)})
        assert (response.status_code, response.json()) == (
            403, {"detail": "src_audio_path: Access denied: path outside allowed directory"})


class VanishingUploadEngine:
    """The tiny engine, but the job's uploads are gone when it runs."""

    def __init__(self, engine):
        self.engine = engine

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def render(self, request, progress=None):
        Path(request.src_audio_path).unlink()
        return self.engine.render(request, progress)

    def generate(self, request, progress=None):
        Path(request.src_audio_path).unlink()
        return self.engine.generate(request, progress)


async def test_a_failed_item_carries_its_error_on_top_naming_the_upload_field(settings, engine, tmp_path):
    wav = source_wav(tmp_path)
    async with serve(settings, VanishingUploadEngine(engine)) as (app, client):
        with open(wav, "rb") as handle:
            response = await client.post("/release_task", data={"prompt": "x", "task_type": "cover",
                                                                "batch_size": "1"},
                                         files={"src_audio": ("song.wav", handle, "audio/wav")})
        job, [element], item = await finished(app, client, response)
    assert job.status.value == "failed"
    assert item["status"] == 2 and item["error"] == element["error"] == job.error
    # Named by the field it came in as, never by the file name the server chose for it.
    assert job.error == "src_audio: audio file does not exist"
    assert Path(job.request.src_audio_path).name not in item["error"]


async def test_only_failed_items_carry_an_error_on_top(idle):
    app, client = idle
    response = await client.post("/release_task", json={"prompt": "x"})
    task_id = response.json()["data"]["task_id"]
    item = (await client.post("/query_result", json={"task_id_list": [task_id]})).json()["data"][0]
    assert item["status"] == 0 and "error" not in item

