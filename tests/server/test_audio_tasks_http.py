"""Every audio task end to end through HTTP on the tiny checkpoints: upload (or a server path in
ACESTEP_INPUT_DIR), run, download, and check the length of what came back."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.server.conftest import serve, wait_finished

pytestmark = pytest.mark.anyio

SOURCE_SECONDS = 6.0
FRAME_SECONDS = 1920 / 48000  # one latent frame: outputs are whole frames long


def source_wav(folder: Path, seconds: float = SOURCE_SECONDS, rate: int = 44100) -> Path:
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * rate)) / rate
    samples = 0.3 * np.sin(2 * np.pi * 220 * t)[:, None] + rng.uniform(-0.05, 0.05, (t.size, 2))
    path = folder / "source.wav"
    sf.write(path, samples.astype(np.float32), rate)
    return path


async def run(app, client, files: dict | None = None, **fields) -> list[dict]:
    response = await client.post(
        "/release_task",
        data={"prompt": "x", "batch_size": "1", "audio_format": "wav", **{k: str(v) for k, v in fields.items()}},
        files=files,
    )
    assert response.status_code == 200, response.text
    task_id = response.json()["data"]["task_id"]
    job = await wait_finished(app, task_id)
    assert job.status.value == "succeeded", job.error
    response = await client.post("/query_result", json={"task_id_list": [task_id]})
    return json.loads(response.json()["data"][0]["result"])


async def seconds_of(client, element: dict) -> float:
    response = await client.get(element["file"])
    assert response.status_code == 200
    path = Path(urllib.parse.unquote(element["file"].split("path=", 1)[1]))
    info = sf.info(path)
    assert (info.samplerate, info.channels) == (48000, 2)
    return info.frames / info.samplerate


@pytest.mark.parametrize(
    "task, model, extra",
    [
        ("cover", "acestep-v15-turbo", {"audio_cover_strength": 0.5}),
        ("repaint", "acestep-v15-turbo", {"repainting_start": 1.0, "repainting_end": 3.0}),
        ("lego", "acestep-v15-base", {"track_name": "guitar", "inference_steps": 4}),
        ("extract", "acestep-v15-base", {"track_name": "vocals", "inference_steps": 4}),
        ("complete", "acestep-v15-base", {"track_classes": "drums", "inference_steps": 4}),
    ],
)
async def test_each_task_on_an_upload_lasts_as_long_as_its_source(live, tmp_path, task, model, extra):
    app, client = live
    wav = source_wav(tmp_path)
    with open(wav, "rb") as handle:
        elements = await run(app, client, {"src_audio": ("song.wav", handle, "audio/wav")},
                             task_type=task, model=model, **extra)
    [element] = elements
    assert element["dit_model"] == model
    assert abs(await seconds_of(client, element) - SOURCE_SECONDS) <= FRAME_SECONDS


async def test_repaint_past_the_end_outpaints(live, tmp_path):
    app, client = live
    wav = source_wav(tmp_path)
    with open(wav, "rb") as handle:
        [element] = await run(app, client, {"ctx_audio": ("song.wav", handle, "audio/wav")},
                              task_type="repaint", repainting_start=4.0, repainting_end=9.0)
    assert abs(await seconds_of(client, element) - 9.0) <= FRAME_SECONDS


async def test_reference_audio_sets_the_timbre_of_a_text2music_song(live, tmp_path):
    app, client = live
    wav = source_wav(tmp_path)
    with open(wav, "rb") as handle:
        [element] = await run(app, client, {"ref_audio": ("ref.wav", handle, "audio/wav")},
                              audio_duration=10, use_random_seed="false", seed=5)
    [plain] = await run(app, client, audio_duration=10, use_random_seed="false", seed=5)
    with_reference = sf.read(Path(urllib.parse.unquote(element["file"].split("path=", 1)[1])))[0]
    without = sf.read(Path(urllib.parse.unquote(plain["file"].split("path=", 1)[1])))[0]
    assert with_reference.shape == without.shape and not np.array_equal(with_reference, without)


async def test_a_server_path_inside_the_input_dir(settings, engine, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    source_wav(inputs)
    settings = settings.model_copy(update={"input_dir": inputs})
    async with serve(settings, engine) as (app, client):
        [element] = await run(app, client, task_type="cover", src_audio_path="source.wav")
        assert abs(await seconds_of(client, element) - SOURCE_SECONDS) <= FRAME_SECONDS
    assert (inputs / "source.wav").exists()  # a client's own file is never removed
