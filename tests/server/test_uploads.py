"""Audio uploads on POST /release_task over real HTTP: streaming to the upload folder, the
size limit, the submission checks, and the cleanup of every uploaded file."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acestep_api.engine.request import GenerationError
from acestep_api.jobs.models import JobStatus
from tests.server.conftest import serve, wait_finished

pytestmark = pytest.mark.anyio

SOUNDFILE_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"),
                     "mp3": ("MP3", "MPEG_LAYER_III"), "ogg": ("OGG", "VORBIS")}


def tone(tmp_path: Path, ext: str = "wav", seconds: float = 1.5, rate: int = 44100, amplitude: float = 0.3) -> bytes:
    """The bytes of a real audio file: a 440 Hz sine (or silence with amplitude 0)."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / f"tone-{ext}-{seconds}-{rate}-{amplitude}.{ext}"
    file_format, subtype = SOUNDFILE_FORMATS[ext]
    sf.write(path, samples, rate, format=file_format, subtype=subtype)
    return path.read_bytes()


@pytest.fixture(autouse=True)
def system_temp(tmp_path: Path, monkeypatch) -> Path:
    """The system temp folder, moved to an empty folder of this test so leftovers show."""
    folder = tmp_path / "system-temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def leftovers(settings, system_temp: Path) -> list[Path]:
    uploads = list(settings.upload_dir.iterdir()) if settings.upload_dir.exists() else []
    return uploads + list(system_temp.iterdir())


# --- accepted uploads ----------------------------------------------------------------


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "ogg"])
async def test_each_input_format_is_stored_whole_in_the_upload_folder(idle, settings, tmp_path, system_temp, ext):
    app, client = idle
    audio = tone(tmp_path, ext)
    response = await client.post("/release_task", data={"prompt": "cover it", "task_type": "cover"},
                                 files={"src_audio": (f"My Song.{ext}", audio, "application/octet-stream")})
    assert response.status_code == 200, response.text
    job = app.state.store.get(response.json()["data"]["task_id"])
    path = Path(job.request.src_audio_path)
    assert path.parent == settings.upload_dir.resolve() and path.suffix == f".{ext}"
    assert path.read_bytes() == audio
    assert job.temp_files == [str(path)]  # recorded with the job, so a restart can clean it
    assert list(system_temp.iterdir()) == []


@pytest.mark.parametrize("field,path_field", [
    ("src_audio", "src_audio_path"), ("ctx_audio", "src_audio_path"),
    ("reference_audio", "reference_audio_path"), ("ref_audio", "reference_audio_path"),
])
async def test_both_spellings_of_each_field_override_the_path_field(idle, settings, tmp_path, field, path_field):
    app, client = idle
    audio = tone(tmp_path)
    response = await client.post(
        "/release_task",
        data={"prompt": "x", "task_type": "cover", "src_audio_path": "/etc/passwd", "ref_audio_path": "/etc/passwd"},
        files={field: ("take.wav", audio, "audio/wav")},
    )
    # The uploaded field replaces its path field; the other path field is still checked.
    assert response.status_code == 400
    other = "reference_audio_path" if path_field == "src_audio_path" else "src_audio_path"
    assert response.json() == {"detail": f"{other}: absolute audio file paths are not allowed"}
    assert list(settings.upload_dir.iterdir()) == []

    response = await client.post("/release_task", data={"prompt": "x", "task_type": "cover", path_field: "/etc/passwd"},
                                 files={field: ("take.wav", audio, "audio/wav")})
    assert response.status_code == 200, response.text
    request = app.state.store.get(response.json()["data"]["task_id"]).request
    saved = Path(getattr(request, path_field))
    assert saved.parent == settings.upload_dir.resolve() and saved.read_bytes() == audio
    prefix = "ref_audio_" if path_field == "reference_audio_path" else "ctx_audio_"
    assert saved.name.startswith(prefix) and saved.suffix == ".wav"


async def test_source_and_reference_together_and_an_empty_file_input_is_ignored(idle, settings, tmp_path):
    app, client = idle
    files = [("ctx_audio", ("a.flac", tone(tmp_path, "flac"), "audio/flac")),
             ("ref_audio", ("b.mp3", tone(tmp_path, "mp3"), "audio/mpeg")),
             ("src_audio", ("", b"", "application/octet-stream"))]  # a browser's empty input
    response = await client.post("/release_task", data={"prompt": "x", "task_type": "cover"}, files=files)
    assert response.status_code == 200, response.text
    job = app.state.store.get(response.json()["data"]["task_id"])
    assert job.request.src_audio_path.endswith(".flac") and job.request.reference_audio_path.endswith(".mp3")
    assert sorted(job.temp_files) == sorted(str(p) for p in settings.upload_dir.iterdir())


async def test_an_rfc5987_file_name_still_makes_a_file(idle, settings, tmp_path):
    app, client = idle
    audio, boundary = tone(tmp_path, "flac"), "x5987"
    content = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"task_type\"\r\n\r\ncover\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"src_audio\"; "
               "filename*=UTF-8''caf%C3%A9.flac\r\n\r\n").encode() + audio + f"\r\n--{boundary}--\r\n".encode()
    response = await client.post("/release_task", content=content,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 200, response.text
    path = Path(app.state.store.get(response.json()["data"]["task_id"]).request.src_audio_path)
    assert path.suffix == ".flac" and path.read_bytes() == audio


# --- the size limit ------------------------------------------------------------------


async def test_an_upload_over_the_limit_is_a_413_and_leaves_nothing(settings, engine, tmp_path, system_temp):
    settings = settings.model_copy(update={"max_upload_mb": 0.05})  # 52 428 bytes
    async with serve(settings, engine, start_worker=False) as (app, client):
        response = await client.post("/release_task", data={"prompt": "x", "task_type": "cover"},
                                     files={"ctx_audio": ("long.wav", tone(tmp_path, seconds=2.0), "audio/wav")})
        assert response.status_code == 413
        assert response.json() == {
            "detail": "ctx_audio: the uploaded file is larger than the 0.05 MB limit (ACESTEP_MAX_UPLOAD_MB)"
        }
        assert app.state.queue.stats()["jobs"]["total"] == 0
        # Just under the limit is fine.
        small = tone(tmp_path, seconds=0.5)
        assert len(small) < settings.max_upload_bytes
        response = await client.post("/release_task", data={"prompt": "x", "task_type": "cover"},
                                     files={"ctx_audio": ("short.wav", small, "audio/wav")})
        assert response.status_code == 200, response.text
    assert [p.read_bytes() for p in settings.upload_dir.iterdir()] == [small]
    assert list(system_temp.iterdir()) == []


async def test_the_limit_stops_reading_the_body_early(settings, engine, system_temp):
    settings = settings.model_copy(update={"max_upload_mb": 0.25})
    limit, chunk, boundary = settings.max_upload_bytes, b"\x01" * 16384, "b0undary"
    sent = 0

    async def body():
        nonlocal sent
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n'
               f'--{boundary}\r\nContent-Disposition: form-data; name="src_audio"; filename="huge.wav"\r\n'
               "Content-Type: audio/wav\r\n\r\n").encode()
        for _ in range(64 * 50):  # 50 MiB, far past the limit
            sent += len(chunk)
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    async with serve(settings, engine, start_worker=False) as (_, client):
        response = await client.post("/release_task", content=body(),
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413 and response.json()["detail"].startswith("src_audio: ")
    assert sent <= limit + 2 * len(chunk)
    assert leftovers(settings, system_temp) == []


async def test_an_unknown_file_field_is_not_kept_but_still_limited(settings, engine, tmp_path, system_temp):
    settings = settings.model_copy(update={"max_upload_mb": 0.05})
    async with serve(settings, engine, start_worker=False) as (_, client):
        response = await client.post("/release_task", data={"prompt": "x"},
                                     files={"lyrics_file": ("a.txt", b"la la", "text/plain")})
        assert response.status_code == 200
        response = await client.post("/release_task", data={"prompt": "x"},
                                     files={"lyrics_file": ("a.bin", b"\0" * 60_000, "text/plain")})
        assert response.status_code == 413 and response.json()["detail"].startswith("lyrics_file: ")
    assert leftovers(settings, system_temp) == []


async def test_a_body_cut_short_is_a_400_and_leaves_nothing(idle, settings, tmp_path, system_temp):
    _, client = idle
    boundary = "cut"
    content = (f'--{boundary}\r\nContent-Disposition: form-data; name="src_audio"; filename="a.wav"\r\n\r\n'
               ).encode() + tone(tmp_path)[:5000]
    response = await client.post("/release_task", content=content,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 400 and response.json()["detail"].startswith("Malformed form payload")
    assert leftovers(settings, system_temp) == []


# --- submission checks ---------------------------------------------------------------


async def test_a_task_the_model_cannot_serve_names_the_models_that_can(idle, settings, tmp_path, system_temp):
    app, client = idle
    audio = tone(tmp_path)
    for task in ("lego", "extract", "complete"):
        response = await client.post("/release_task", data={"prompt": "x", "task_type": task},
                                     files={"src_audio": ("a.wav", audio, "audio/wav")})
        assert response.status_code == 400
        assert response.json() == {"detail": f"task_type '{task}' is not supported by model 'acestep-v15-turbo'; "
                                             "models that support it: acestep-v15-base"}
    assert leftovers(settings, system_temp) == []
    response = await client.post("/release_task",
                                 data={"prompt": "x", "task_type": "lego", "model": "acestep-v15-base"},
                                 files={"src_audio": ("a.wav", audio, "audio/wav")})
    assert response.status_code == 200, response.text
    assert app.state.queue.stats()["jobs"]["total"] == 1


@pytest.mark.parametrize("task,model", [("repaint", None), ("lego", "acestep-v15-base"),
                                        ("extract", "acestep-v15-base"), ("complete", "acestep-v15-base")])
async def test_source_tasks_without_source_audio_are_refused(idle, tmp_path, task, model):
    app, client = idle
    body = {"prompt": "x", "task_type": task, **({"model": model} if model else {})}
    response = await client.post("/release_task", json=body)
    assert response.status_code == 400
    needs = f"task_type '{task}' needs source audio: upload src_audio or set src_audio_path"
    assert response.json() == {"detail": needs}
    # Reference audio is not source audio.
    response = await client.post("/release_task", data=body,
                                 files={"ref_audio": ("r.wav", tone(tmp_path), "audio/wav")})
    assert response.status_code == 400 and "needs source audio" in response.json()["detail"]
    assert app.state.queue.stats()["jobs"]["total"] == 0


async def test_a_cover_without_audio_is_still_accepted(idle):
    app, client = idle
    response = await client.post("/release_task", json={"prompt": "x", "task_type": "cover"})
    assert response.status_code == 200
    assert app.state.queue.get(response.json()["data"]["task_id"]).request.task_type == "cover"


@pytest.mark.parametrize("field,content,words", [
    ("src_audio", b"", "is empty"),
    ("ctx_audio", b"ID3 this is not audio at all" * 50, "could not be decoded"),
    ("ref_audio", "too long", "is too long"),
])
async def test_unusable_audio_is_a_400_naming_the_field(idle, settings, tmp_path, system_temp, field, content, words):
    app, client = idle
    if content == "too long":
        content = tone(tmp_path, seconds=601, rate=1000)
    response = await client.post("/release_task", data={"prompt": "x", "task_type": "cover"},
                                 files={field: ("in.wav", content, "audio/wav")})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith(f"{field}: audio file ") and words in detail
    assert app.state.queue.stats()["jobs"]["total"] == 0
    assert leftovers(settings, system_temp) == []


# --- cleanup of refused requests -----------------------------------------------------


async def test_queue_full_deletes_the_upload(settings, engine, tmp_path, system_temp):
    settings = settings.model_copy(update={"queue_maxsize": 1})
    async with serve(settings, engine, start_worker=False) as (app, client):
        assert (await client.post("/release_task", json={"prompt": "x"})).status_code == 200
        response = await client.post("/release_task", data={"prompt": "x", "task_type": "cover"},
                                     files={"ref_audio": ("ref.wav", tone(tmp_path), "audio/wav")})
        assert (response.status_code, response.json()) == (429, {"detail": "Server busy: queue is full"})
        assert app.state.queue.size == 1
    assert leftovers(settings, system_temp) == []


async def test_bad_field_and_bad_key_delete_the_upload(settings, engine, tmp_path, system_temp):
    async with serve(settings.model_copy(update={"api_key": "k"}), engine, start_worker=False) as (app, client):
        audio = tone(tmp_path, "flac")
        response = await client.post("/release_task", data={"bpm": "fast", "ai_token": "k"},
                                     files={"reference_audio": ("r.flac", audio, "audio/flac")})
        assert response.status_code == 400 and response.json()["detail"].startswith("bpm must be")
        response = await client.post("/release_task", data={"prompt": "x", "ai_token": "wrong"},
                                     files={"reference_audio": ("r.flac", audio, "audio/flac")})
        assert (response.status_code, response.json()) == (401, {"detail": "Invalid ai_token"})
        response = await client.post("/release_task", data={"prompt": "x"},
                                     files={"src_audio": ("r.flac", audio, "audio/flac")})
        assert response.status_code == 401
        assert app.state.queue.stats()["jobs"]["total"] == 0
    assert leftovers(settings, system_temp) == []


async def test_uploads_to_other_routes_are_not_kept(idle, settings, tmp_path, system_temp):
    _, client = idle
    response = await client.post("/query_result", data={"task_id_list": "[]"},
                                 files={"src_audio": ("a.wav", tone(tmp_path), "audio/wav")})
    assert response.status_code == 200
    assert leftovers(settings, system_temp) == []


# --- cleanup when the job ends -------------------------------------------------------


class AudioReadingEngine:
    """The tiny engine, behind a front that first reads the job's uploaded source audio (so
    the test knows the file was there while the job ran) and then either generates a plain
    text2music result or fails."""

    def __init__(self, engine, fail: bool):
        self.engine, self.fail, self.read = engine, fail, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, request, progress=None):
        self.read.append(sf.info(request.src_audio_path).duration)
        if self.fail:
            raise GenerationError("the source audio did not suit")
        return self.engine.generate(request.model_copy(update={"task_type": "text2music", "src_audio_path": None,
                                                               "audio_duration": 10.0, "batch_size": 1}), progress)


@pytest.mark.parametrize("fail", [False, True])
async def test_uploads_are_deleted_when_the_job_ends(settings, engine, tmp_path, system_temp, fail):
    front = AudioReadingEngine(engine, fail)
    async with serve(settings, front) as (app, client):
        response = await client.post("/release_task", data={"prompt": "x", "task_type": "cover"},
                                     files={"src_audio": ("a.ogg", tone(tmp_path, "ogg"), "audio/ogg"),
                                            "ref_audio": ("b.wav", tone(tmp_path), "audio/wav")})
        assert response.status_code == 200, response.text
        job = await wait_finished(app, response.json()["data"]["task_id"])
    assert job.status is (JobStatus.FAILED if fail else JobStatus.SUCCEEDED)
    assert front.read and abs(front.read[0] - 1.5) < 0.1
    assert len(job.temp_files) == 2
    assert leftovers(settings, system_temp) == []


async def test_a_job_on_the_real_engine_ends_without_leftovers(live, settings, tmp_path, system_temp):
    app, client = live
    response = await client.post("/release_task", data={"prompt": "x", "task_type": "cover", "audio_duration": "10",
                                                        "batch_size": "1", "inference_steps": "2"},
                                 files={"src_audio": ("a.wav", tone(tmp_path), "audio/wav")})
    assert response.status_code == 200, response.text
    await wait_finished(app, response.json()["data"]["task_id"])  # success or failure, the upload goes
    assert leftovers(settings, system_temp) == []


async def test_a_restart_cleans_uploads_of_interrupted_and_orphaned_work(settings, engine, tmp_path, system_temp):
    async with serve(settings, engine, start_worker=False) as (app, client):
        ids = []
        for name in ("waits.wav", "dies.wav"):
            response = await client.post("/release_task", data={"prompt": "x", "task_type": "cover"},
                                         files={"src_audio": (name, tone(tmp_path), "audio/wav")})
            ids.append(response.json()["data"]["task_id"])
        waiting, dying = (app.state.store.get(task_id) for task_id in ids)
        # The second job was running for the second time when the server stopped.
        dying.status, dying.attempts, dying.started_at = JobStatus.RUNNING, 2, 1.0
        app.state.store.save(dying)
    orphan = settings.upload_dir / "ctx_audio_left_by_a_crash.wav"
    orphan.write_bytes(b"half an upload")

    async with serve(settings, engine, start_worker=False) as (app, _):
        assert app.state.store.get(dying.id).status is JobStatus.FAILED
        assert app.state.queue.position(waiting.id) == 1
        assert [str(p) for p in settings.upload_dir.iterdir()] == waiting.temp_files
    assert list(system_temp.iterdir()) == []
