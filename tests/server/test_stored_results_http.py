"""A database written before results were typed (a `generation_info` text, "N/A" for unknown
metadata, timings as a dict, analyses as a `raw` answer) still answers as it did."""

from __future__ import annotations

import json
import sqlite3

import pytest

from acestep_api.dialects.official import audio_url
from tests.server.conftest import serve

pytestmark = pytest.mark.anyio

# The jobs table as the first release created it, before interrupted, run_marker and kind.
OLD_SCHEMA = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, api TEXT NOT NULL,
    status TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    progress REAL NOT NULL, stage TEXT NOT NULL, request TEXT NOT NULL, result TEXT,
    error TEXT, attempts INTEGER NOT NULL, temp_files TEXT NOT NULL
);
"""
OLD_INFO = (
    "**🎵 Generation Complete**\n\n- **BPM:** N/A\n- **Duration:** 12 seconds\n- **Key Scale:** N/A\n"
    "- **Time Signature:** 4\n\n**⏱️ Time Costs:**\n  - Text Encoding: 0.10s\n  - DiT Diffusion: 1.00s\n"
    "  - VAE Decoding: 0.20s\n  - Audio Encoding: 0.10s\n\n**Seeds:** 42\n**Steps:** 8\n**Audio Count:** 1\n\n"
    "**⏱️ Total Time: 1.50s**"
)
OLD_CODES = {"status_message": "Audio Codes Extraction Success", "audio_codes": "<|audio_code_1|><|audio_code_2|>",
             "audio_paths": [], "raw_audio_paths": [], "first_audio_path": None, "metas": {}}
CREATED = 1_700_000_000.0


def old_song(path: str) -> dict:
    return {
        "audio_paths": [path], "seeds": [42], "prompt": "old caption", "lyrics": "[inst]",
        "metas": {"bpm": "N/A", "duration": 12.0, "genres": "N/A", "keyscale": "N/A", "timesignature": "4"},
        "dit_model": "acestep-v15-turbo", "lm_model": "acestep-5Hz-lm-0.6B", "generation_info": OLD_INFO,
        "timings": {"text_encoding": 0.1, "diffusion": 1.0, "decoding": 0.2, "encoding": 0.1, "total": 1.5},
        "sample_rate": 48000, "raw": None,
    }


def old_analysis() -> dict:
    return {
        "audio_paths": [], "seeds": [7], "prompt": "", "lyrics": "", "metas": {}, "dit_model": "acestep-v15-turbo",
        "lm_model": "acestep-5Hz-lm-0.6B", "generation_info": OLD_CODES["status_message"], "timings": {},
        "sample_rate": 48000, "raw": OLD_CODES,
    }


def write_old_database(settings, rows: dict[str, dict]) -> None:
    settings.database_path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(settings.database_path)
    db.executescript(OLD_SCHEMA)
    for job_id, result in rows.items():
        request = json.dumps({"prompt": "old prompt", "lyrics": "[inst]"})
        db.execute(
            "INSERT INTO jobs (id, api, status, created_at, started_at, finished_at, progress, stage, request, "
            "result, error, attempts, temp_files) VALUES (?, 'release_task', 'succeeded', ?, ?, ?, 1.0, "
            "'succeeded', ?, ?, NULL, 1, '[]')",
            (job_id, CREATED, CREATED + 1, CREATED + 3, request, json.dumps(result, ensure_ascii=False)),
        )
    db.commit()
    db.close()


async def test_an_old_database_renders_through_query_result_and_the_legacy_view(settings, engine):
    path = str(settings.audio_dir / "old-song.mp3")
    settings.audio_dir.mkdir(parents=True, exist_ok=True)
    write_old_database(settings, {"old-song": old_song(path), "old-codes": old_analysis()})

    async with serve(settings, engine, start_worker=False) as (_, client):
        response = await client.post("/query_result", json={"task_id_list": ["old-song", "old-codes"]})
        assert response.status_code == 200, response.text
        song, codes = response.json()["data"]
        assert song["status"] == 1 and codes["status"] == 1
        assert json.loads(song["result"]) == [{
            "file": audio_url(path), "wave": "", "status": 1, "create_time": int(CREATED), "env": "development",
            "prompt": "old caption", "lyrics": "[inst]",
            "metas": {"bpm": "N/A", "duration": 12.0, "genres": "N/A", "keyscale": "N/A", "timesignature": "4",
                      "prompt": "old prompt", "lyrics": "[inst]"},
            "generation_info": OLD_INFO, "seed_value": "42", "lm_model": "acestep-5Hz-lm-0.6B",
            "dit_model": "acestep-v15-turbo", "progress": 1.0, "stage": "succeeded",
        }]
        assert json.loads(codes["result"]) == [OLD_CODES]  # the analysis answer, as it was stored

        legacy = (await client.get("/v1/jobs/old-song")).json()["result"]
        assert legacy["generation_info"] == OLD_INFO and legacy["metas"]["bpm"] == "N/A"
        assert (legacy["bpm"], legacy["duration"], legacy["timesignature"], legacy["keyscale"]) == (None, 12.0, "4", None)
        legacy_codes = (await client.get("/v1/jobs/old-codes")).json()["result"]
        assert legacy_codes["audio_codes"] == OLD_CODES["audio_codes"]
        assert legacy_codes["status_message"] == OLD_CODES["status_message"]
