"""The 32-bit float WAV and AAC outputs end to end: POST /release_task with `audio_format`
wav32 or aac, the file named by /query_result, and GET /v1/audio serving it with its type."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

from acestep_api.engine.request import AUDIO_FORMATS
from tests.audio_files import AAC_FRAME, read_audio
from tests.server.conftest import serve, wait_finished

pytestmark = pytest.mark.anyio

DURATION = 10.0
LATENT_FRAME_SECONDS = 1 / 25


@pytest.mark.parametrize("fmt,suffix,media_type", [("wav32", ".wav", "audio/wav"), ("aac", ".aac", "audio/aac")])
async def test_release_task_writes_and_serves_the_format(settings, engine, tmp_path, fmt, suffix, media_type):
    async with serve(settings, engine) as (app, client):
        response = await client.post("/release_task", json={"prompt": "rain", "audio_duration": DURATION, "batch_size": 1,
                                                             "audio_format": fmt})
        assert response.status_code == 200, response.text
        task_id = response.json()["data"]["task_id"]
        job = await wait_finished(app, task_id)
        assert job.status.value == "succeeded", job.error
        response = await client.post("/query_result", json={"task_id_list": [task_id]})
        [item] = response.json()["data"]
        assert item["status"] == 1
        [element] = json.loads(item["result"])
        assert element["file"].startswith("/v1/audio?path=%2F") and element["file"].endswith(suffix)

        response = await client.get(element["file"])
        assert response.status_code == 200
        assert response.headers["content-type"] == media_type

    downloaded = tmp_path / f"download{suffix}"
    downloaded.write_bytes(response.content)
    data, rate = read_audio(downloaded)
    assert rate == 48000 and data.shape[1] == 2
    # AAC decodes with the encoder's priming and the last frame's padding on top (tests/audio_files.py).
    slack = 2 * AAC_FRAME / rate if fmt == "aac" else 0.0
    assert -LATENT_FRAME_SECONDS <= len(data) / rate - DURATION <= LATENT_FRAME_SECONDS + slack
    assert np.abs(data).max() > 0  # sound, not silence
    if fmt == "wav32":
        assert sf.info(io.BytesIO(response.content)).subtype == "FLOAT"


async def test_an_unknown_format_is_a_400_listing_every_format(idle):
    app, client = idle
    response = await client.post("/release_task", json={"prompt": "x", "audio_format": "wma"})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail == f"audio_format must be one of {', '.join(AUDIO_FORMATS)} (got 'wma')"
    assert "wav32" in detail and "aac" in detail
    assert app.state.queue.stats()["jobs"]["total"] == 0
