"""The 2026 request fields through HTTP on the tiny checkpoints: /release_task with cover-nofsq,
the repaint modes and crossfades, chunk_mask_mode and global_caption; chat completions with the
newer adapter's fields, its message rules, its codes and its stream."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.server.conftest import wait_finished
from tests.server.test_audio_tasks_http import SOURCE_SECONDS, run, source_wav
from tests.server.test_chat_http import (
    MODEL,
    URL,
    audio_part,
    deltas,
    parked,  # noqa: F401 - a fixture, used by name
    parked_request,
    record_jobs,
    sse_payloads,
    user,
    wav_base64,
)

pytestmark = pytest.mark.anyio

CODES = "".join(f"<|audio_code_{(i * 37) % 500}|>" for i in range(50))  # 10 s of 5 Hz codes


def file_of(element: dict) -> Path:
    return Path(urllib.parse.unquote(element["file"].split("path=", 1)[1]))


# --- /release_task ---------------------------------------------------------------------------


async def test_cover_nofsq_runs_on_an_upload_and_lasts_as_long_as_it(live, tmp_path):
    app, client = live
    with open(source_wav(tmp_path), "rb") as handle:
        [element] = await run(app, client, {"src_audio": ("song.wav", handle, "audio/wav")}, task_type="cover-nofsq")
    info = sf.info(file_of(element))
    assert abs(info.frames / info.samplerate - SOURCE_SECONDS) <= 1920 / 48000


async def test_repaint_fields_reach_the_engine_and_change_the_song(live, tmp_path):
    app, client = live
    seen = []
    original = app.state.queue.submit

    def submit(request, *args, **kwargs):
        seen.append(request)
        return original(request, *args, **kwargs)

    app.state.queue.submit = submit
    wav = source_wav(tmp_path)
    songs = []
    for fields in ({"repaint_mode": "conservative"}, {"repaint_mode": "aggressive"},
                   {"repaint_strength": "0.2", "repaint_wav_crossfade_sec": "0.3", "chunk_mask_mode": "auto",
                    "repaint_latent_crossfade_frames": "4"}):
        with open(wav, "rb") as handle:
            [element] = await run(app, client, {"src_audio": ("song.wav", handle, "audio/wav")}, task_type="repaint",
                                  repainting_start=2.0, repainting_end=4.0, seed=7, use_random_seed="false", **fields)
        songs.append(sf.read(file_of(element), dtype="float32")[0])
    assert [r.repaint_mode for r in seen] == ["conservative", "aggressive", "balanced"]
    assert (seen[2].repaint_strength, seen[2].repaint_wav_crossfade_sec) == (0.2, 0.3)
    assert (seen[2].chunk_mask_mode, seen[2].repaint_latent_crossfade_frames) == ("auto", 4)
    # Conservative puts the recording back outside the window; aggressive keeps its own decoding there.
    first_second = slice(0, 48000)
    assert not np.allclose(songs[0][first_second], songs[1][first_second], atol=1e-3)


async def test_global_caption_and_use_cot_metas_are_stored_with_the_request(idle):
    app, client = idle
    response = await client.post("/release_task", json={"prompt": "bass line", "global_caption": "a funk song",
                                                        "use_cot_metas": "false"})
    assert response.status_code == 200, response.text
    job = app.state.queue.get(response.json()["data"]["task_id"])
    assert job.request.global_caption == "a funk song" and job.request.use_cot_metas is False


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"task_type": "cover-nofsq"}, "src_audio", "task_type 'cover-nofsq' needs source audio"),
    ({"repaint_strength": 1.5}, "repaint_strength", "repaint_strength must be between 0 and 1"),
    ({"repaint_mode": "wild"}, "repaint_mode", "repaint_mode must be one of conservative, balanced, aggressive"),
    ({"repaint_wav_crossfade_sec": 60}, "repaint_wav_crossfade_sec", "between 0 and 10"),
    ({"chunk_mask_mode": "maybe"}, "chunk_mask_mode", "chunk_mask_mode must be one of explicit, auto"),
    ({"global_caption": "x" * 5000}, "global_caption", "global_caption must be at most 4096 characters"),
])
async def test_bad_values_are_400s_naming_the_field(idle, body, field, words):
    app, client = idle
    response = await client.post("/release_task", json={"prompt": "x", **body})
    assert response.status_code == 400, response.text
    assert words in response.json()["detail"]
    assert app.state.queue.stats()["jobs"]["total"] == 0


# --- chat completions ------------------------------------------------------------------------


async def test_plain_text_is_the_caption_and_needs_no_lm(live, tmp_path):
    app, client = live
    seen = record_jobs(app)
    response = await client.post(URL, json={**user("A mellow bossa nova with nylon guitar"),
                                            "audio_config": {"duration": 10}})
    assert response.status_code == 200, response.text
    request = seen[0]["job"].request
    assert (request.prompt, request.sample_query, request.sample_mode) == (
        "A mellow bossa nova with nylon guitar", "", False)
    assert "**Caption:** A mellow bossa nova with nylon guitar" in response.json()["choices"][0]["message"]["content"]


async def test_only_the_last_user_message_counts(parked):
    request, seconds = await parked_request(parked, {"model": MODEL, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "<prompt>old</prompt><lyrics>old words</lyrics>"},
                                     audio_part(wav_base64(1.5))]},
        {"role": "assistant", "content": "Here it is."},
        {"role": "user", "content": "<prompt>new</prompt>"},
    ]})
    assert (request.prompt, request.lyrics) == ("new", "")
    assert seconds == {} and request.reference_audio_path is None  # the earlier audio is not read


async def test_the_newer_chat_fields_reach_the_job(parked):
    request, seconds = await parked_request(parked, {
        **user([{"type": "text", "text": "<prompt>Raw cover</prompt>"}, audio_part(wav_base64(1.5))]),
        "task_type": "cover-nofsq", "inference_steps": 12, "infer_method": "sde", "lm_cfg_scale": 3.0,
        "cover_noise_strength": 0.3, "use_cot_metas": False,
    })
    assert request.task_type == "cover-nofsq" and abs(seconds["src_audio_path"] - 1.5) < 0.01
    assert (request.inference_steps, request.infer_method, request.lm_cfg_scale) == (12, "sde", 3.0)
    assert (request.cover_noise_strength, request.use_cot_metas) == (0.3, False)


@pytest.mark.parametrize(("extra", "words"), [
    ({"inference_steps": 0}, "inference_steps must be"),
    ({"infer_method": "euler"}, "infer_method must be one of ode, sde"),
    ({"lm_cfg_scale": 1000}, "lm_cfg_scale must be"),
    ({"cover_noise_strength": 3}, "cover_noise_strength must be"),
    ({"task_type": "cover-nofsq"}, "task_type 'cover-nofsq' needs source audio"),
])
async def test_bad_chat_fields_are_400s_naming_the_field(idle, extra, words):
    app, client = idle
    response = await client.post(URL, json={**user("<prompt>x</prompt>"), **extra})
    assert response.status_code == 400, response.text
    assert words in response.json()["detail"]
    assert app.state.queue.stats()["jobs"]["total"] == 0


async def test_audio_codes_are_followed_and_answered(live):
    _, client = live
    response = await client.post(URL, json={**user("<prompt>From codes</prompt>"), "audio_codes": CODES})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["audio_codes"] == CODES


async def test_a_stream_opens_empty_and_sends_the_codes_as_their_own_chunk(live):
    _, client = live
    response = await client.post(URL, json={**user("<prompt>From codes</prompt>"), "audio_codes": CODES,
                                            "stream": True})
    assert response.status_code == 200
    chunks = deltas(sse_payloads(response.text))
    assert chunks[0] == ({"role": "assistant", "content": ""}, None)
    assert "audio" in chunks[-3][0]
    assert chunks[-2] == ({"content": f"\n\n[audio_codes]{CODES}[/audio_codes]"}, None)
    assert chunks[-1] == ({}, "stop")
    payloads = [json.loads(p) for p in sse_payloads(response.text)[:-1]]
    assert all(len(p["id"]) == len("chatcmpl-") + 16 for p in payloads)
