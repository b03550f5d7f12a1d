"""Input audio over HTTP: decompression bombs, absurd headers and non-finite samples are 400s
at submission, answers never show where the server keeps files, and a request cannot use
another client's pending upload."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acestep_api.admission.audio_paths import NOT_OWN_UPLOAD
from tests.input_audio_files import MIB, float_wav, wav_with_rate, write_bomb
from tests.peak_memory import PeakRss


async def submit(client, path: Path, field: str = "src_audio", route: str = "/release_task", **fields):
    form = {"prompt": "x", "task_type": "repaint", **fields}
    return await client.post(route, data=form, files={field: (path.name, path.read_bytes(), "audio/wav")})


def uploads_left(settings) -> list[Path]:
    return sorted(settings.upload_dir.iterdir()) if settings.upload_dir.exists() else []


@pytest.mark.anyio
async def test_a_flac_decompression_bomb_is_refused_from_its_header(idle, settings, tmp_path):
    app, client = idle
    bomb = write_bomb(tmp_path / "bomb.flac")
    assert bomb.stat().st_size < 1 * MIB
    with PeakRss() as memory:
        response = await submit(client, bomb)
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "src_audio: audio file is too large to decode: 8 channels x 48000 Hz x 600.0 s would take 879 MB as "
        "float32, the limit is 512 MB (ACESTEP_MAX_DECODED_AUDIO_MB)"
    )
    # Decoding it would have cost 879 MB; the request itself costs a few MB.
    assert memory.growth_mb < 64, f"memory grew by {memory.growth_mb:.0f} MB"
    assert app.state.queue.stats()["jobs"]["total"] == 0 and uploads_left(settings) == []


@pytest.mark.anyio
async def test_the_decoding_budget_is_a_setting(settings, engine, tmp_path):
    from tests.server.conftest import serve

    bomb = write_bomb(tmp_path / "bomb.flac", seconds=20)  # 29 MB as float32
    tight = settings.model_copy(update={"max_decoded_audio_mb": 16.0})
    async with serve(tight, engine, start_worker=False) as (app, client):
        response = await submit(client, bomb, field="ref_audio", task_type="text2music")
        assert response.status_code == 400
        assert response.json()["detail"].startswith("ref_audio: audio file is too large to decode: 8 channels")
        assert "the limit is 16 MB (ACESTEP_MAX_DECODED_AUDIO_MB)" in response.json()["detail"]
    async with serve(settings, engine, start_worker=False) as (app, client):
        response = await submit(client, bomb, field="ref_audio", task_type="text2music")
        assert response.status_code == 200, response.text


@pytest.mark.anyio
@pytest.mark.parametrize("rate", [2**31 - 1, 768000, 4000])
async def test_a_sample_rate_out_of_bounds_is_refused_at_submission(idle, settings, tmp_path, rate):
    app, client = idle
    response = await submit(client, wav_with_rate(tmp_path / "rate.wav", rate), field="ctx_audio")
    assert (response.status_code, response.json()) == (400, {
        "detail": f"ctx_audio: audio file has a sample rate of {rate} Hz; accepted: 8000 to 384000 Hz"})
    assert app.state.queue.stats()["jobs"]["total"] == 0 and uploads_left(settings) == []


@pytest.mark.anyio
async def test_a_header_with_an_accepted_rate_still_passes(idle, tmp_path):
    _, client = idle
    response = await submit(client, wav_with_rate(tmp_path / "rate.wav", 8000))
    assert response.status_code == 200, response.text


@pytest.mark.anyio
@pytest.mark.parametrize("poison", [float("nan"), float("inf"), float("-inf")])
async def test_non_finite_samples_are_refused_at_submission(idle, settings, tmp_path, poison):
    app, client = idle
    response = await submit(client, float_wav(tmp_path / "poison.wav", poison), field="reference_audio",
                            task_type="text2music")
    assert (response.status_code, response.json()) == (
        400, {"detail": "reference_audio: audio file contains NaN or infinite samples"})
    assert app.state.queue.stats()["jobs"]["total"] == 0 and uploads_left(settings) == []


@pytest.mark.anyio
async def test_an_all_nan_input_folder_file_is_refused_naming_its_path_field(settings, engine, tmp_path):
    from tests.server.conftest import serve

    folder = tmp_path / "input"
    folder.mkdir()
    samples = np.full((48000, 2), np.nan, dtype=np.float32)
    sf.write(folder / "nan.wav", samples, 48000, subtype="FLOAT")
    async with serve(settings.model_copy(update={"input_dir": folder}), engine, start_worker=False) as (_, client):
        response = await client.post("/release_task", json={"prompt": "x", "task_type": "repaint",
                                                            "src_audio_path": "nan.wav"})
    assert (response.status_code, response.json()) == (
        400, {"detail": "src_audio_path: audio file 'nan.wav' contains NaN or infinite samples"})


@pytest.mark.anyio
@pytest.mark.parametrize("route", ["/release_task", "/v1/music/generate"])
async def test_an_undecodable_upload_is_named_by_its_field_only(idle, settings, tmp_path, route):
    app, client = idle
    garbage = tmp_path / "song.mp3"
    garbage.write_bytes(b"ID3 this is not audio at all" * 50)
    response = await submit(client, garbage, route=route)
    assert (response.status_code, response.json()) == (
        400, {"detail": "src_audio: audio file could not be decoded; accepted formats: wav, flac, mp3, ogg/opus"})
    for internal in (str(settings.output_dir), "uploads", "ctx_audio_", "Error opening"):
        assert internal not in response.text


@pytest.mark.anyio
async def test_a_request_cannot_name_another_requests_pending_upload(idle, settings, tmp_path):
    app, client = idle
    song = float_wav(tmp_path / "song.wav", 0.1)
    first = await submit(client, song)
    assert first.status_code == 200, first.text
    waiting = app.state.queue.get(first.json()["data"]["task_id"])
    (theirs,) = waiting.temp_files
    assert Path(theirs).is_file()

    for route, body in [
        ("/release_task", {"prompt": "x", "task_type": "repaint", "src_audio_path": theirs}),
        ("/release_task", {"prompt": "x", "reference_audio_path": theirs}),
        ("/v1/music/generate", {"prompt": "x", "task_type": "repaint", "ctx_audio_path": theirs}),
    ]:
        response = await client.post(route, json=body)
        field = "reference_audio_path" if "reference_audio_path" in body else "src_audio_path"
        assert (response.status_code, response.json()) == (403, {"detail": f"{field}: {NOT_OWN_UPLOAD}"})
    # Nor with an upload of its own in the other field.
    response = await submit(client, song, field="ref_audio", task_type="repaint", src_audio_path=theirs)
    assert (response.status_code, response.json()) == (403, {"detail": f"src_audio_path: {NOT_OWN_UPLOAD}"})

    assert app.state.queue.stats()["jobs"]["total"] == 1
    assert uploads_left(settings) == [Path(theirs)]  # the refused requests left nothing, took nothing


@pytest.mark.anyio
@pytest.mark.parametrize("make, words", [
    (lambda folder: write_bomb(folder / "bomb.flac"), "audio file is too large to decode: 8 channels"),
    (lambda folder: float_wav(folder / "nan.wav", float("nan")), "audio file contains NaN or infinite samples"),
    (lambda folder: wav_with_rate(folder / "rate.wav", 2**31 - 1), "audio file has a sample rate of 2147483647 Hz"),
])
async def test_chat_input_audio_has_the_same_bounds(idle, settings, tmp_path, make, words):
    app, client = idle
    data = base64.b64encode(make(tmp_path).read_bytes()).decode("ascii")
    response = await client.post("/v1/chat/completions", json={
        "model": "acestep/acestep-v15-turbo", "task_type": "cover",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "<prompt>x</prompt>"},
                                                  {"type": "input_audio", "input_audio": {"data": data}}]}],
    })
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"messages[0].content[1].input_audio.data: {words}")
    assert app.state.queue.stats()["jobs"]["total"] == 0 and uploads_left(settings) == []
