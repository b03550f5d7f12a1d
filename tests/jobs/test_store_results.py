"""Results in the store: today's typed shape round-trips; the shape written before it (a
`generation_info` text, "N/A" metadata, timings as a dict, an analysis's `raw`) reads as typed data."""

from __future__ import annotations

import json

from acestep_api.engine.request import Analysis, GenerationResult, SongMetas, Timings
from acestep_api.jobs.store import read_result
from tests.jobs import make_result


def test_a_typed_result_round_trips():
    result = make_result(["/tmp/a.mp3"], lm_metas={"bpm": 90}, analysis=None)
    assert read_result(GenerationResult, result.model_dump_json()) == result


def test_an_old_result_reads_as_typed_data_keeping_its_text():
    old = {
        "audio_paths": ["/x/a.mp3"], "seeds": [1], "prompt": "p", "lyrics": "", "dit_model": "d", "lm_model": "l",
        "metas": {"bpm": "N/A", "duration": 10, "genres": "N/A", "keyscale": "", "timesignature": "3"},
        "generation_info": "**Seeds:** 1", "timings": {"lm": 0.5, "diffusion": 1.0, "total": 2.0},
        "sample_rate": 48000, "raw": None,
    }
    result = read_result(GenerationResult, json.dumps(old))
    assert result.metas == SongMetas(duration=10, timesignature="3")
    assert isinstance(result.metas.duration, int)  # 10 stays 10 in answers, not 10.0
    assert result.timings == Timings(lm=0.5, diffusion=1.0, total=2.0)
    assert result.stored_generation_info == "**Seeds:** 1" and result.analysis is None


def test_old_analysis_answers_read_as_analyses():
    base = {"audio_paths": [], "seeds": [1], "prompt": "", "lyrics": "", "dit_model": "d", "lm_model": "l",
            "metas": {}, "timings": {}, "sample_rate": 48000}
    codes = {**base, "generation_info": "Audio Codes Extraction Success",
             "raw": {"status_message": "Audio Codes Extraction Success", "audio_codes": "<|audio_code_5|>"}}
    assert read_result(GenerationResult, json.dumps(codes)).analysis == Analysis(
        mode="extract_codes_only", audio_codes="<|audio_code_5|>")
    understood = {"bpm": 100, "caption": "c"}
    full = {**base, "generation_info": "Full Hardware Analysis Success",
            "raw": {"status_message": "Full Hardware Analysis Success", "bpm": 100, "metas": understood}}
    assert read_result(GenerationResult, json.dumps(full)).analysis == Analysis(
        mode="full_analysis_only", understood=understood)
