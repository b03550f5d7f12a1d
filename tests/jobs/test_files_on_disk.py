"""Audio files appear whole or not at all, and a start removes what no job owns (issue #10, 7)."""

from __future__ import annotations

import copy
import os
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acestep_api.atomic_files import atomic_path, is_partial, partial_path
from acestep_api.engine import audio
from acestep_api.jobs.models import JobStatus
from acestep_api.jobs.retention import AUDIO_SUFFIXES, remove_orphan_audio
from acestep_api.jobs.store import JobStore
from acestep_api.settings import Settings
from tests.jobs import make_result
from tests.jobs.test_store import new_job
from tests.server.conftest import serve, wait_finished

WAVE = np.zeros((2, 4800), dtype=np.float32) + 0.1


def leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if is_partial(name))


def test_partial_names_are_hidden_next_to_the_file_and_unique():
    first, second = partial_path("/out/song.mp3"), partial_path("/out/song.mp3")
    assert first.parent == Path("/out") and first != second
    assert is_partial(first.name) and first.name.startswith(".song.mp3.")
    assert not is_partial("song.mp3") and not is_partial(".hidden.mp3")


def test_write_audio_leaves_only_the_final_file(tmp_path):
    path = audio.write_audio(WAVE, tmp_path / "song.flac", "flac")
    assert sf.info(str(path)).frames == 4800
    assert os.listdir(tmp_path) == ["song.flac"]


def test_a_failed_encode_keeps_the_previous_file_and_leaves_no_partial(tmp_path):
    target = tmp_path / "song.opus"
    target.write_bytes(b"the previous file")
    # libsndfile's Opus encoder refuses 44.1 kHz: a real failure inside the encoder.
    with pytest.raises(Exception):
        audio.write_audio(WAVE, target, "opus", sample_rate=44100)
    assert target.read_bytes() == b"the previous file"
    assert leftovers(tmp_path) == []


def test_the_final_name_appears_only_once_the_data_is_complete(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as temp:
            temp.write_bytes(b"half")
            assert not target.exists()  # a reader never sees a file under construction
            raise KeyboardInterrupt  # like a kill arriving mid-write
    assert not target.exists() and leftovers(tmp_path) == []
    with atomic_path(target) as temp:
        temp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and leftovers(tmp_path) == []


def test_the_sweep_suffixes_cover_every_format_the_engine_writes():
    assert set(audio.FILE_EXTENSIONS.values()) == set(AUDIO_SUFFIXES)


def test_remove_orphan_audio_keeps_owned_files_and_strangers(tmp_path):
    owned = tmp_path / "owned.wav"
    orphan, orphan_upper = tmp_path / "orphan.mp3", tmp_path / "LOUD.FLAC"
    partial = partial_path(tmp_path / "owned.wav")
    notes = tmp_path / "notes.txt"
    for path in (owned, orphan, orphan_upper, partial, notes):
        path.write_bytes(b"x")
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "link.wav").symlink_to(owned)

    removed = remove_orphan_audio(tmp_path, [str(owned)])
    assert sorted(map(os.path.basename, removed)) == sorted([orphan.name, orphan_upper.name, partial.name])
    assert sorted(os.listdir(tmp_path)) == sorted(["owned.wav", "notes.txt", "folder.wav", "link.wav"])
    assert remove_orphan_audio(tmp_path / "missing", []) == []


def test_store_lists_the_audio_paths_of_every_result(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    try:
        done = new_job("done", status=JobStatus.SUCCEEDED, result=make_result(["/a/1.wav", "/a/2.wav"]))
        store.add(done)
        store.add(new_job("waiting"))
        store.add(new_job("analysis", status=JobStatus.SUCCEEDED, result=make_result([])))
        assert sorted(store.audio_paths()) == ["/a/1.wav", "/a/2.wav"]
        store.add(new_job("damaged"))
        store._db.execute("UPDATE jobs SET result = '{not json' WHERE id = 'damaged'")
        assert sorted(store.audio_paths()) == ["/a/1.wav", "/a/2.wav"]
    finally:
        store.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_restart_removes_partial_and_orphan_audio_but_keeps_finished_jobs_files(tmp_path, tiny_engine):
    settings = Settings(_env_file=None, output_dir=tmp_path / "outputs", checkpoint_dir=tmp_path / "none")
    engine = copy.copy(tiny_engine)
    engine.output_dir = settings.audio_dir
    async with serve(settings, engine) as (app, client):
        response = await client.post("/release_task", json={"prompt": "kept", "audio_duration": 10,
                                                             "batch_size": 2, "audio_format": "wav"})
        assert response.status_code == 200, response.text
        job = await wait_finished(app, response.json()["data"]["task_id"])
        assert job.status is JobStatus.SUCCEEDED
        kept = job.result.audio_paths
    assert len(kept) == 2 and leftovers(settings.audio_dir) == []

    # What a kill mid-encoding and a job cut short leave behind, and a file that is not ours.
    partial = partial_path(settings.audio_dir / "cut.wav")
    partial.write_bytes(b"RIFF half a file")
    orphan = settings.audio_dir / "unowned.mp3"
    orphan.write_bytes(b"an output no job records")
    stranger = settings.audio_dir / "README.txt"
    stranger.write_text("left alone")

    async with serve(settings, engine, start_worker=False) as (app, client):
        assert not partial.exists() and not orphan.exists()
        assert stranger.exists() and all(os.path.exists(path) for path in kept)
        response = await client.get("/v1/audio?path=" + urllib.parse.quote(kept[0], safe=""))
        assert response.status_code == 200 and response.content == Path(kept[0]).read_bytes()
