"""Server-side audio paths: only the upload folder, ACESTEP_INPUT_DIR and (when allowed) the
system temp folder are readable, and every way out is refused before the file is touched."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acestep_api.engine.request import GenerationError
from acestep_api.admission.audio_paths import NOT_OWN_UPLOAD, AudioPathError, resolve_audio_path
from tests.server.conftest import serve, wait_finished

ABSOLUTE = "absolute audio file paths are not allowed"
TRAVERSAL = "path traversal in audio file paths is not allowed"
OUTSIDE = "Access denied: path outside allowed directory"

# Paths opened while `_watching` is set, seen through the interpreter's audit hook ("open"
# covers open() and os.open(), so libsndfile's reads through Python would show too).
_opened: list[str] = []
_watching: list[bool] = []


def _audit(event: str, args: tuple) -> None:
    if _watching and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def write_tone(path: Path) -> Path:
    t = np.arange(22050) / 22050
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050)
    return path


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    """An input folder with a song, a subfolder and links; a secret song outside it."""
    input_dir, upload_dir, outside = tmp_path / "input", tmp_path / "outputs" / "uploads", tmp_path / "private"
    for folder in (input_dir / "album", upload_dir, outside):
        folder.mkdir(parents=True)
    write_tone(input_dir / "song.wav")
    write_tone(input_dir / "album" / "track 1%.wav")
    write_tone(outside / "secret.wav")
    (input_dir / "leak.wav").symlink_to(outside / "secret.wav")
    (input_dir / "leaky-folder").symlink_to(outside, target_is_directory=True)
    (input_dir / "alias.wav").symlink_to(input_dir / "album" / "track 1%.wav")
    return {"input": input_dir, "uploads": upload_dir, "outside": outside}


def resolve(folders, value: str, input_dir: bool = True) -> str:
    return resolve_audio_path("src_audio_path", value, folders["uploads"], folders["input"] if input_dir else None)


def test_relative_paths_resolve_in_the_input_folder(folders):
    assert resolve(folders, "song.wav") == str((folders["input"] / "song.wav").resolve())
    assert resolve(folders, "album/track 1%.wav") == str((folders["input"] / "album" / "track 1%.wav").resolve())
    assert resolve(folders, "./album//track 1%.wav").endswith("track 1%.wav")


def test_absolute_paths_inside_an_allowed_folder_are_accepted(folders):
    song = folders["input"] / "song.wav"
    assert resolve(folders, str(song)) == str(song.resolve())
    upload = write_tone(folders["uploads"] / "ctx_audio_x.wav")
    # An upload only as this request's own: the server filled the field with its path.
    assert resolve_audio_path("src_audio_path", str(upload), folders["uploads"], None,
                              own_upload=str(upload)) == str(upload.resolve())


def test_the_upload_folder_is_readable_only_by_the_request_that_uploaded(folders):
    """Another client's pending upload, by its random name, is refused whether it exists or
    not, however it is reached: absolute, through the input folder, or through a link."""
    mine = write_tone(folders["uploads"] / "ctx_audio_mine.wav")
    theirs = write_tone(folders["uploads"] / "ctx_audio_theirs.wav")
    (folders["input"] / "into-uploads").symlink_to(folders["uploads"], target_is_directory=True)
    (folders["input"] / "their-upload.wav").symlink_to(theirs)
    for value in (str(theirs), str(folders["uploads"] / "ctx_audio_gone.wav"), "into-uploads/ctx_audio_theirs.wav",
                  "their-upload.wav", str(folders["input"] / "their-upload.wav")):
        _opened.clear()
        _watching.append(True)
        try:
            with pytest.raises(AudioPathError) as refused:
                resolve_audio_path("src_audio_path", value, folders["uploads"], folders["input"],
                                   own_upload=str(mine))
        finally:
            _watching.clear()
        assert refused.value.status_code == 403 and _opened == []
        assert str(refused.value) == f"src_audio_path: {NOT_OWN_UPLOAD}"
    # Its own upload is no key to its other field either.
    with pytest.raises(AudioPathError) as refused:
        resolve_audio_path("reference_audio_path", str(mine), folders["uploads"], folders["input"])
    assert refused.value.status_code == 403


def test_an_input_folder_around_the_upload_folder_does_not_open_it(folders, tmp_path):
    """ACESTEP_INPUT_DIR set to the output folder: its other files are readable, uploads are not."""
    theirs = write_tone(folders["uploads"] / "ref_audio_theirs.wav")
    song = write_tone(tmp_path / "outputs" / "song.wav")
    around = tmp_path / "outputs"
    assert resolve_audio_path("src_audio_path", "song.wav", folders["uploads"], around) == str(song.resolve())
    for value in ("uploads/ref_audio_theirs.wav", str(theirs)):
        with pytest.raises(AudioPathError) as refused:
            resolve_audio_path("src_audio_path", value, folders["uploads"], around)
        assert (refused.value.status_code, str(refused.value)) == (403, f"src_audio_path: {NOT_OWN_UPLOAD}")


def test_a_link_that_stays_inside_resolves_to_its_target(folders):
    assert resolve(folders, "alias.wav") == str((folders["input"] / "album" / "track 1%.wav").resolve())


TRICKS = [
    ("/etc/passwd", 400, ABSOLUTE),
    ("{outside}/secret.wav", 400, ABSOLUTE),
    ("../private/secret.wav", 400, TRAVERSAL),
    ("album/../../private/secret.wav", 400, TRAVERSAL),
    ("{input}/../private/secret.wav", 400, TRAVERSAL),
    ("..", 400, TRAVERSAL),
    ("%2e%2e/private/secret.wav", 400, TRAVERSAL),
    ("%2E%2E%2Fprivate%2Fsecret.wav", 400, TRAVERSAL),
    ("%252e%252e/private/secret.wav", 400, TRAVERSAL),
    ("..%2fprivate/secret.wav", 400, TRAVERSAL),
    ("..\\private\\secret.wav", 400, TRAVERSAL),
    ("%2Fetc%2Fpasswd", 400, ABSOLUTE),
    ("%2F{outside_rel}%2Fsecret.wav", 400, ABSOLUTE),
    ("C:\\Windows\\win.ini", 400, ABSOLUTE),
    ("\\\\server\\share\\a.wav", 400, ABSOLUTE),
    ("song.wav\x00.txt", 400, "NUL bytes are not allowed in audio file paths"),
    ("song%00.wav", 400, "NUL bytes are not allowed in audio file paths"),
    ("~/secret.wav", 400, "home folder (~) audio file paths are not allowed"),
    ("~root/.bashrc", 400, "home folder (~) audio file paths are not allowed"),
    ("%7E/secret.wav", 400, "home folder (~) audio file paths are not allowed"),
    ("leak.wav", 403, OUTSIDE),
    ("leaky-folder/secret.wav", 403, OUTSIDE),
    ("{input}/leak.wav", 403, OUTSIDE),
]


def _fill(value: str, folders) -> str:
    return value.format(input=folders["input"], outside=folders["outside"],
                        outside_rel=str(folders["outside"]).lstrip("/").replace("/", "%2F"))


@pytest.mark.parametrize("value,status,message", TRICKS)
def test_every_way_out_is_refused_without_opening_anything(folders, value, status, message):
    value = _fill(value, folders)
    _opened.clear()
    _watching.append(True)
    try:
        with pytest.raises(AudioPathError) as refused:
            resolve(folders, value)
    finally:
        _watching.clear()
    assert (refused.value.status_code, str(refused.value)) == (status, f"src_audio_path: {message}")
    assert _opened == []
    assert refused.value.field == "src_audio_path"


def test_relative_paths_need_an_input_folder(folders):
    with pytest.raises(AudioPathError) as refused:
        resolve(folders, "song.wav", input_dir=False)
    assert str(refused.value) == ("src_audio_path: relative audio file paths are read from ACESTEP_INPUT_DIR, "
                                  "which this server does not set")
    with pytest.raises(AudioPathError) as refused:  # without an input folder, only uploads are readable
        resolve(folders, str(folders["input"] / "song.wav"), input_dir=False)
    assert str(refused.value) == f"src_audio_path: {ABSOLUTE}"


# --- the system temp folder and several input folders ----------------------------------

@pytest.fixture
def temp_dir(tmp_path, monkeypatch) -> Path:
    """The system temp folder, for these tests a folder beside the fixture's (tempfile.tempdir
    is what gettempdir answers); the fixture's input, upload and private folders lie outside it."""
    folder = tmp_path / "systemp"
    folder.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(folder))
    return folder


def resolve_with_temp(folders, value: str, **options) -> str:
    return resolve_audio_path("src_audio_path", value, folders["uploads"], folders["input"], allow_temp=True,
                              **options)


@pytest.mark.parametrize("value,status,message", TRICKS)
def test_allowing_the_temp_folder_opens_no_other_way_out(folders, temp_dir, value, status, message):
    value = _fill(value, folders)
    _opened.clear()
    _watching.append(True)
    try:
        with pytest.raises(AudioPathError) as refused:
            resolve_with_temp(folders, value)
    finally:
        _watching.clear()
    assert (refused.value.status_code, str(refused.value)) == (status, f"src_audio_path: {message}")
    assert _opened == []


def test_absolute_paths_inside_the_temp_folder(folders, temp_dir):
    song = write_tone(temp_dir / "client-file.wav")
    assert resolve_with_temp(folders, str(song)) == str(song.resolve())
    assert resolve_audio_path("src_audio_path", str(song), folders["uploads"], None,
                              allow_temp=True) == str(song.resolve())
    with pytest.raises(AudioPathError) as refused:  # off: as strict as before
        resolve(folders, str(song))
    assert str(refused.value) == f"src_audio_path: {ABSOLUTE}"
    with pytest.raises(AudioPathError) as refused:  # relative paths never resolve in the temp folder
        resolve_audio_path("src_audio_path", "client-file.wav", folders["uploads"], None, allow_temp=True)
    assert "relative audio file paths are read from ACESTEP_INPUT_DIR" in str(refused.value)
    for value in (f"{temp_dir}/../private/secret.wav", f"{temp_dir}/%2e%2e/private/secret.wav"):
        with pytest.raises(AudioPathError) as refused:
            resolve_with_temp(folders, value)
        assert str(refused.value) == f"src_audio_path: {TRAVERSAL}"
    (temp_dir / "leak.wav").symlink_to(folders["outside"] / "secret.wav")
    with pytest.raises(AudioPathError) as refused:
        resolve_with_temp(folders, str(temp_dir / "leak.wav"))
    assert (refused.value.status_code, str(refused.value)) == (403, f"src_audio_path: {OUTSIDE}")
    with pytest.raises(AudioPathError) as refused:
        resolve_with_temp(folders, str(temp_dir / "gone.wav"))
    assert refused.value.status_code == 400 and "audio file not found" in str(refused.value)


def test_an_upload_folder_inside_the_temp_folder_stays_closed(folders, temp_dir):
    uploads = temp_dir / "outputs" / "uploads"
    uploads.mkdir(parents=True)
    mine, theirs = write_tone(uploads / "mine.wav"), write_tone(uploads / "theirs.wav")
    (temp_dir / "their-upload.wav").symlink_to(theirs)
    for value in (str(theirs), str(temp_dir / "their-upload.wav"), str(uploads / "gone.wav")):
        with pytest.raises(AudioPathError) as refused:
            resolve_audio_path("src_audio_path", value, uploads, None, own_upload=str(mine), allow_temp=True)
        assert (refused.value.status_code, str(refused.value)) == (403, f"src_audio_path: {NOT_OWN_UPLOAD}")
    assert resolve_audio_path("src_audio_path", str(mine), uploads, None, own_upload=str(mine),
                              allow_temp=True) == str(mine.resolve())


def test_private_files_are_refused_in_a_readable_folder(folders, temp_dir):
    database = temp_dir / "jobs.sqlite3"
    database.write_bytes(b"SQLite format 3\x00")
    (folders["input"] / "db-link.wav").symlink_to(database)
    for value in (str(database), "db-link.wav"):
        with pytest.raises(AudioPathError) as refused:
            resolve_with_temp(folders, value, private=[database])
        assert (refused.value.status_code, str(refused.value)) == (403, f"src_audio_path: {OUTSIDE}")


def test_several_input_folders_are_searched_in_order(folders, tmp_path):
    second = tmp_path / "second"
    second.mkdir()
    only_second = write_tone(second / "only-here.wav")
    shadowed = write_tone(second / "song.wav")
    both = [folders["input"], second]
    assert resolve_audio_path("src_audio_path", "song.wav", folders["uploads"], both) == str(
        (folders["input"] / "song.wav").resolve())
    assert resolve_audio_path("src_audio_path", "only-here.wav", folders["uploads"], both) == str(only_second.resolve())
    assert resolve_audio_path("src_audio_path", str(shadowed), folders["uploads"], both) == str(shadowed.resolve())
    with pytest.raises(AudioPathError) as refused:  # a link out in the first folder is not skipped
        resolve_audio_path("src_audio_path", "leak.wav", folders["uploads"], both)
    assert refused.value.status_code == 403


def test_input_dir_names_several_folders(monkeypatch, tmp_path):
    from acestep_api.settings import Settings

    monkeypatch.setenv("ACESTEP_INPUT_DIR", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}, {tmp_path / 'c'}")
    settings = Settings(_env_file=None, output_dir=tmp_path / "out")
    assert settings.input_dirs == (tmp_path / "a", tmp_path / "b", tmp_path / "c")
    assert settings.allow_temp_paths is True
    assert settings.private_files[0] == settings.database_path
    monkeypatch.setenv("ACESTEP_ALLOW_TEMP_PATHS", "false")
    monkeypatch.delenv("ACESTEP_INPUT_DIR")
    settings = Settings(_env_file=None)
    assert settings.allow_temp_paths is False and settings.input_dirs == ()


def test_missing_files_and_folders_are_refused(folders):
    for value in ("nothing.wav", "album", str(folders["input"] / "gone.wav")):
        with pytest.raises(AudioPathError) as refused:
            resolve(folders, value)
        assert refused.value.status_code == 400 and "audio file not found" in str(refused.value)


# --- over HTTP -----------------------------------------------------------------------

@pytest.fixture
def http_settings(settings, folders):
    # The server's own upload folder is its output folder's; the input folder is the fixture's.
    # pytest's folders lie in the system temp folder: without temp paths, as strict as before.
    return settings.model_copy(update={"input_dir": folders["input"], "allow_temp_paths": False})


@pytest.mark.anyio
async def test_release_task_refuses_each_trick(http_settings, engine, folders):
    async with serve(http_settings, engine, start_worker=False) as (app, client):
        for value, status, message in TRICKS:
            value = _fill(value, folders)
            response = await client.post("/release_task", json={"prompt": "x", "task_type": "repaint",
                                                                "ctxAudioPath": value})
            assert (response.status_code, response.json()) == (status, {"detail": f"src_audio_path: {message}"})
            response = await client.post("/release_task", json={"prompt": "x", "ref_audio_path": value})
            assert (response.status_code, response.json()) == (status, {"detail": f"reference_audio_path: {message}"})
        assert app.state.queue.stats()["jobs"]["total"] == 0


class RefusingEngine:
    """The tiny engine's models and checks, with a generate that ends the job at once."""

    def __init__(self, engine):
        self.engine = engine

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, request, progress=None):
        raise GenerationError("not this time")


@pytest.mark.anyio
async def test_release_task_accepts_input_folder_files_and_never_deletes_them(http_settings, engine, folders):
    async with serve(http_settings, RefusingEngine(engine)) as (app, client):
        response = await client.post("/release_task", json={
            "prompt": "x", "task_type": "cover", "src_audio_path": "album/track 1%.wav",
            "reference_audio_path": str(folders["input"] / "song.wav"), "audio_duration": 10, "batch_size": 1,
        })
        assert response.status_code == 200, response.text
        job = app.state.store.get(response.json()["data"]["task_id"])
        assert job.request.src_audio_path == str((folders["input"] / "album" / "track 1%.wav").resolve())
        assert job.request.reference_audio_path == str((folders["input"] / "song.wav").resolve())
        assert job.temp_files == []
        assert (await wait_finished(app, job.id)).status.value == "failed"
    assert (folders["input"] / "song.wav").exists() and (folders["input"] / "album" / "track 1%.wav").exists()


@pytest.mark.anyio
async def test_an_unusable_input_folder_file_names_the_path_field(http_settings, engine, folders):
    (folders["input"] / "empty.wav").write_bytes(b"")
    async with serve(http_settings, engine, start_worker=False) as (_, client):
        response = await client.post("/release_task", json={"prompt": "x", "src_audio_path": "empty.wav",
                                                            "task_type": "repaint"})
        assert response.status_code == 400
        assert response.json()["detail"].startswith("src_audio_path: audio file 'empty.wav' is empty")
    assert (folders["input"] / "empty.wav").exists()


def test_audio_input_settings(monkeypatch, tmp_path):
    from acestep_api.settings import Settings

    settings = Settings(_env_file=None, output_dir=tmp_path)
    assert (settings.max_upload_mb, settings.max_upload_bytes) == (100.0, 100 * 1024 * 1024)
    assert settings.input_dir is None and settings.upload_dir == tmp_path / "uploads"
    monkeypatch.setenv("ACESTEP_INPUT_DIR", "")  # blank must not mean the working folder
    monkeypatch.setenv("ACESTEP_MAX_UPLOAD_MB", "2.5")
    settings = Settings(_env_file=None)
    assert settings.input_dir is None and settings.max_upload_bytes == int(2.5 * 1024 * 1024)
    monkeypatch.setenv("ACESTEP_INPUT_DIR", str(tmp_path))
    assert Settings(_env_file=None).input_dir == tmp_path
