"""The RunPod dialects without a worker: which dialect a job's input speaks, the defaults,
the error messages, and the answers."""

from __future__ import annotations

import base64

import pytest

from acestep_api.dialects.coercion import InvalidField
from acestep_api.dialects import runpod
from acestep_api.dialects.runpod import (
    CAPTION_REQUIRED,
    PROMPT_REQUIRED,
    Dialect,
    ReleaseTaskInput,
    V1Input,
    detect_dialect,
    engine_duration,
    parse_release_task_input,
    parse_v1_input,
)
from acestep_api.engine.request import SEED_MAX, GenerationRequest, GenerationResult
from acestep_api.settings import ServerlessSettings
from acestep_api.settings import Settings

SETTINGS = Settings(_env_file=None, batch_max=4)
OPTIONS = ServerlessSettings(_env_file=None, default_duration=90, job_timeout=1800)


def release_task(fields: dict, options: ServerlessSettings = OPTIONS):
    return parse_release_task_input(fields, SETTINGS, options)


def error_of(parse, fields: dict) -> str:
    with pytest.raises(InvalidField) as caught:
        parse(fields)
    return str(caught.value)


# --- Which dialect --------------------------------------------------------------------------

@pytest.mark.parametrize("fields,dialect", [
    ({"prompt": "upbeat electronic dance music", "duration": 30.0, "guidance_scale": 8.0,
      "num_inference_steps": 20, "seed": 42}, Dialect.V1),
    ({"prompt": "x"}, Dialect.V1),
    ({"prompt": "x", "lyrics": "la la"}, Dialect.V1),
    ({"prompt": ""}, Dialect.V1),
    ({"caption": "x", "lyrics": "", "duration": 30, "batch_size": 1}, Dialect.ACE_STEP_15),
    ({"prompt": "x", "caption": "y"}, Dialect.ACE_STEP_15),
    ({"prompt": "x", "batch_size": 2}, Dialect.ACE_STEP_15),  # a 1.5 field selects 1.5
    ({"prompt": "x", "return_audio_base64": True}, Dialect.ACE_STEP_15),
    ({}, Dialect.ACE_STEP_15),
    ({"duration": 30}, Dialect.ACE_STEP_15),
])
def test_dialect_is_told_by_the_fields(fields, dialect):
    assert detect_dialect(fields) is dialect


# --- The 1.5 dialect ------------------------------------------------------------------------

def test_release_task_template_defaults():
    job = release_task({"caption": "  Upbeat electronic instrumental  "})
    assert job.request.prompt == "Upbeat electronic instrumental"  # trimmed
    assert job.request.lyrics == ""
    assert job.request.audio_duration == 90.0
    assert job.request.batch_size == 1  # the template's default, not /release_task's 2
    assert job.timeout_seconds == 1800
    assert job.return_audio_base64 is False
    assert job.max_base64_bytes == 8_000_000


def test_release_task_defaults_follow_the_settings():
    options = ServerlessSettings(_env_file=None, default_duration=30, job_timeout=60)
    job = release_task({"caption": "x"}, options)
    assert job.request.audio_duration == 30.0
    assert job.timeout_seconds == 60


def test_release_task_seed_001_input():
    job = release_task({"caption": "Upbeat electronic instrumental with bright synths", "lyrics": "",
                        "duration": 30, "batch_size": 1, "timeout_seconds": 900, "poll_interval": 2,
                        "return_audio_base64": True, "max_base64_bytes": 1000})
    assert (job.request.audio_duration, job.request.batch_size) == (30.0, 1)
    assert (job.timeout_seconds, job.return_audio_base64, job.max_base64_bytes) == (900, True, 1000)


def test_release_task_takes_every_release_task_field_and_alias():
    job = release_task({"caption": "x", "audioDuration": 45, "inferenceSteps": 16, "guidanceScale": "5.5",
                        "bpm": 120, "keyscale": "C Major", "timeSignature": "3/4", "audio_format": "flac",
                        "model": "acestep-v15-base", "use_random_seed": False, "seed": 7, "thinking": "true",
                        "batch_size": "3"})
    request = job.request
    assert request.audio_duration == 45.0  # an alias of duration counts as given: no default
    assert (request.inference_steps, request.guidance_scale, request.bpm) == (16, 5.5, 120)
    assert (request.key_scale, request.time_signature, request.audio_format) == ("C Major", "3", "flac")
    assert (request.model, request.use_random_seed, request.seeds, request.thinking) == (
        "acestep-v15-base", False, [7], True)
    assert request.batch_size == 3


def test_release_task_duration_in_param_obj_counts_as_given():
    job = release_task({"caption": "x", "param_obj": {"duration": 20}})
    assert job.request.audio_duration == 20.0


def test_prompt_alias_is_a_caption_in_the_15_dialect():
    job = release_task({"prompt": "a song", "batch_size": 2})
    assert (job.request.prompt, job.request.batch_size) == ("a song", 2)


@pytest.mark.parametrize("fields", [{}, {"caption": ""}, {"caption": "   "}, {"lyrics": "la"}, {"caption": None}])
def test_release_task_caption_is_required(fields):
    assert error_of(release_task, fields) == CAPTION_REQUIRED == "Input 'caption' is required"


def test_release_task_sample_mode_needs_no_caption():
    job = release_task({"sample_query": "a sad waltz"})
    assert job.request.sample_query == "a sad waltz"


@pytest.mark.parametrize("fields,message", [
    ({"caption": "x", "duration": 5000}, "audio_duration must be between 10 and 600 seconds (got 5000)"),
    ({"caption": "x", "batch_size": 0}, "batch_size must be an integer of at least 1 (got 0)"),
    ({"caption": "x", "timeout_seconds": 0}, "timeout_seconds must be greater than 0 (got 0)"),
    ({"caption": "x", "timeout_seconds": "soon"}, "timeout_seconds must be a number greater than 0 (got 'soon')"),
    ({"caption": "x", "max_base64_bytes": -1}, "max_base64_bytes must be an integer of at least 0 (got -1)"),
    ({"caption": "x", "audio_format": "aiff"}, "audio_format must be one of mp3, wav, flac, opus, wav32, aac (got 'aiff')"),
])
def test_release_task_errors_name_the_field(fields, message):
    assert error_of(release_task, fields) == message


# --- The v1 dialect -------------------------------------------------------------------------

def v1(fields: dict):
    return parse_v1_input(fields, OPTIONS)


def test_v1_seed_000_example():
    job = v1({"prompt": "upbeat electronic dance music", "duration": 30.0, "guidance_scale": 7.5,
              "num_inference_steps": 25, "seed": 12345})
    request = job.request
    assert (job.prompt, job.duration, job.timeout_seconds) == ("upbeat electronic dance music", 30.0, 1800)
    assert (request.prompt, request.audio_duration, request.batch_size) == ("upbeat electronic dance music", 30.0, 1)
    assert (request.guidance_scale, request.inference_steps) == (7.5, 25)
    assert (request.use_random_seed, request.seeds) == (False, [12345])
    assert request.audio_format == "wav"


def test_v1_defaults():
    job = v1({"prompt": "x"})
    request = job.request
    assert job.duration == 30.0
    assert (request.guidance_scale, request.inference_steps, request.lyrics) == (8.0, 20, "")
    assert (request.use_random_seed, request.seeds) == (True, [])


@pytest.mark.parametrize("seed", [None, -1, "", "-1"])
def test_v1_seed_missing_or_minus_one_is_random(seed):
    assert v1({"prompt": "x", "seed": seed}).request.use_random_seed is True


def test_v1_lyrics_pass_through():
    assert v1({"prompt": "x", "lyrics": "[Verse]\nla la"}).request.lyrics == "[Verse]\nla la"


@pytest.mark.parametrize("duration,asked", [(1.0, 10.0), (2.5, 10.0), (10.0, 10.0), (20.25, 20.3), (240, 240.0)])
def test_v1_short_durations_ask_the_engine_for_its_minimum(duration, asked):
    job = v1({"prompt": "x", "duration": duration})
    assert job.duration == float(duration)
    assert job.request.audio_duration == asked == engine_duration(duration)


@pytest.mark.parametrize("fields", [{"prompt": ""}, {"prompt": "  "}, {"prompt": None}])
def test_v1_prompt_is_required(fields):
    assert error_of(v1, fields) == PROMPT_REQUIRED == "Prompt is required"


@pytest.mark.parametrize("fields,message", [
    ({"duration": 0.5}, "duration must be between 1 and 240 (got 0.5)"),
    ({"duration": 241}, "duration must be between 1 and 240 (got 241)"),
    ({"duration": "long"}, "duration must be a number between 1 and 240 (got 'long')"),
    ({"guidance_scale": 0.5}, "guidance_scale must be between 1 and 20 (got 0.5)"),
    ({"guidance_scale": 25}, "guidance_scale must be between 1 and 20 (got 25)"),
    ({"num_inference_steps": 5}, "num_inference_steps must be an integer between 10 and 100 (got 5)"),
    ({"num_inference_steps": 101}, "num_inference_steps must be an integer between 10 and 100 (got 101)"),
    ({"num_inference_steps": 20.5}, "num_inference_steps must be an integer between 10 and 100 (got 20.5)"),
    ({"seed": "abc"}, f"seed must be an integer between 0 and {SEED_MAX}, or -1 for random (got 'abc')"),
    ({"seed": SEED_MAX + 1}, f"seed must be an integer between 0 and {SEED_MAX}, or -1 for random (got {SEED_MAX + 1})"),
])
def test_v1_out_of_range_names_field_and_range(fields, message):
    assert error_of(v1, {"prompt": "x", **fields}) == message


def test_parse_picks_the_dialect_the_fields_speak():
    assert isinstance(runpod.parse({"prompt": "x"}, SETTINGS, OPTIONS), V1Input)
    assert isinstance(runpod.parse({"caption": "x"}, SETTINGS, OPTIONS), ReleaseTaskInput)


# --- The answers ----------------------------------------------------------------------------

def result_with(paths: list[str], duration=30.0) -> GenerationResult:
    return GenerationResult(audio_paths=paths, seeds=[7, 8][:len(paths) or 1], prompt="p", lyrics="",
                            metas={"duration": duration}, dit_model="acestep-v15-turbo", lm_model="",
                            generation_info="", timings={}, sample_rate=48000)


def test_release_task_answer_lists_the_elements_and_on_request_the_files(tmp_path):
    small, large = tmp_path / "a.wav", tmp_path / "b.flac"
    small.write_bytes(b"RIFF")
    large.write_bytes(b"f" * 100)
    job = ReleaseTaskInput(request=GenerationRequest(prompt="p", audio_duration=30.0, batch_size=2),
                           timeout_seconds=60, return_audio_base64=True, max_base64_bytes=10)
    output = runpod.render_release_task("t-1", job, result_with([str(small), str(large)]), started_at=1.0)
    assert (output["task_id"], output["status"], output["duration"], output["batch_size"]) == ("t-1", "completed", 30, 2)
    assert [element["seed_value"] for element in output["results"]] == ["7,8", "7,8"]
    first, second = output["audio"]
    assert (first["index"], first["content_type"], base64.b64decode(first["base64"])) == (0, "audio/wav", b"RIFF")
    assert first["file"] == output["results"][0]["file"]
    assert second == {"index": 1, "file": output["results"][1]["file"], "skipped": True,
                      "reason": runpod.FILE_TOO_LARGE, "bytes": 100}
    without = runpod.render_release_task("t-1", ReleaseTaskInput(job.request, 60, False, 10),
                                         result_with([str(small)]), started_at=1.0)
    assert "audio" not in without


def test_release_task_duration_is_the_songs_when_none_was_asked():
    job = ReleaseTaskInput(request=GenerationRequest(prompt="p"), timeout_seconds=60, return_audio_base64=False,
                           max_base64_bytes=0)
    assert runpod.render_release_task("t", job, result_with([], duration=42.5), started_at=1.0)["duration"] == 42.5


def test_v1_answers_and_failures_have_the_v1_shape():
    job = V1Input(request=GenerationRequest(prompt="x"), prompt=" x ", duration=5.0, timeout_seconds=60)
    assert runpod.render_v1(job, b"RIFF", result_with(["a.wav"]), 1.234) == {
        "audio_base64": base64.b64encode(b"RIFF").decode(), "generation_time": 1.23, "prompt": " x ",
        "duration": 5.0, "seed": 7, "sample_rate": 48000, "success": True}
    assert runpod.render_v1_failure("boom", 0.456) == {"error": "boom", "generation_time": 0.46, "success": False}
    assert runpod.render_failure("boom") == {"error": "boom"}
