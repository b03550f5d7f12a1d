"""parse_release_task: every alias, the source precedence, coercion and the 400 messages."""

from __future__ import annotations

import json

import pytest

from acestep_api.engine.request import DEFAULT_INSTRUCTION
from acestep_api.dialects.coercion import InvalidField
from acestep_api.dialects.official import ALIASES, METADATA_KEYS, parse_release_task
from acestep_api.settings import Settings

SETTINGS = Settings(_env_file=None, batch_max=4)

# canonical field -> (a value to send, the value the request must then hold)
ALIAS_CASES = {
    "prompt": ("a calm song", "a calm song"),
    "sample_mode": (True, True),
    "sample_query": ("a sad waltz", "a sad waltz"),
    "use_format": ("true", True),
    "model": ("acestep-v15-base", "acestep-v15-base"),
    "key_scale": ("C Major", "C Major"),
    "time_signature": ("3/4", "3"),
    "audio_duration": ("45", 45.0),
    "vocal_language": ("fr", "fr"),
    "inference_steps": (16, 16),
    "guidance_scale": ("5.5", 5.5),
    "use_random_seed": ("false", False),
    "audio_cover_strength": (0.25, 0.25),
    "cover_noise_strength": ("0.4", 0.4),
    "reference_audio_path": ("/tmp/ref.wav", "/tmp/ref.wav"),
    "src_audio_path": ("/tmp/src.wav", "/tmp/src.wav"),
    "task_type": ("cover", "cover"),
    "infer_method": ("sde", "sde"),
    "use_tiled_decode": ("no", False),
    "constrained_decoding": (False, False),
    "use_cot_caption": ("0", False),
    "use_cot_language": ("off", False),
    "allow_lm_batch": (False, False),
    "analysis_only": ("yes", True),
    "full_analysis_only": ("on", True),
    "extract_codes_only": ("yes", True),
    "audio_code_string": ("<|audio_code_1|>", "<|audio_code_1|>"),
    "track_name": ("drums", "drums"),
    "track_classes": ("vocals", ["vocals"]),
    "lora_name": ("demo-lora", "demo-lora"),
    "lora_scale": ("0.5", 0.5),
}


def parse(body: dict, settings: Settings = SETTINGS):
    return parse_release_task(body, settings)


def alias_params():
    for name, (sent, expected) in ALIAS_CASES.items():
        for alias in ALIASES[name]:
            yield pytest.param(name, alias, sent, expected, id=f"{name}<-{alias}")


@pytest.mark.parametrize("name,alias,sent,expected", list(alias_params()))
def test_every_alias_reaches_its_field(name, alias, sent, expected):
    assert getattr(parse({alias: sent}), name) == expected


def test_every_aliased_request_field_has_a_case():
    from acestep_api.engine.request import GenerationRequest

    aliased = {name for name in ALIASES if name in GenerationRequest.model_fields}
    assert aliased <= set(ALIAS_CASES)


def test_defaults_match_the_official_server():
    request = parse({})
    assert request.cover_noise_strength == 0.0
    # The repaint numbers come from the mode and strength unless given (official defaults).
    assert request.repaint_mode == "balanced" and request.repaint_strength == 0.5
    assert request.repaint_latent_crossfade_frames is None and request.repaint_wav_crossfade_sec is None
    assert request.global_caption == "" and request.use_cot_metas is True
    assert request.chunk_mask_mode == "explicit"  # official: "auto" (docs/api.md says why not)
    assert request.prompt == "" and request.lyrics == ""
    assert request.batch_size == 2
    assert request.inference_steps == 8 and request.guidance_scale == 7.0 and request.shift == 3.0
    assert request.audio_format == "mp3" and request.vocal_language == "en"
    assert request.audio_duration is None and request.bpm is None
    assert request.use_random_seed is True and request.seeds == []
    assert request.lm_temperature == 0.85 and request.lm_cfg_scale == 2.5 and request.lm_top_p == 0.9
    assert request.instruction == DEFAULT_INSTRUCTION and request.task_type == "text2music"


def test_first_non_null_alias_wins_even_when_empty():
    assert parse({"prompt": "", "caption": "x"}).prompt == ""
    assert parse({"prompt": None, "caption": "x"}).prompt == "x"
    assert parse({"audio_duration": None, "duration": 30, "audioDuration": 40}).audio_duration == 30.0


def test_flat_body_beats_param_obj_beats_metas():
    body = {"caption": "flat", "param_obj": {"prompt": "param", "bpm": 100, "key": "A minor"},
            "metas": {"prompt": "meta", "bpm": 90, "keyscale": "B minor", "duration": 33}}
    request = parse(body)
    assert request.prompt == "flat"
    assert request.bpm == 100
    assert request.key_scale == "A minor"
    assert request.audio_duration == 33.0  # only the metas carry it


def test_param_obj_and_metas_may_be_json_strings():
    body = {"param_obj": json.dumps({"bpm": 110}), "metadata": json.dumps({"timesignature": "6"})}
    request = parse(body)
    assert request.bpm == 110 and request.time_signature == "6"


def test_non_object_param_obj_is_ignored():
    assert parse({"param_obj": "[1, 2]"}).bpm is None
    assert parse({"param_obj": "{not json"}).bpm is None


@pytest.mark.parametrize("key", METADATA_KEYS)
def test_each_metadata_key_is_a_source(key):
    assert parse({key: {"bpm": 95}}).bpm == 95


def test_first_truthy_metadata_key_is_the_only_one_used():
    body = {"metas": {}, "meta": {"bpm": 80}, "metadata": {"bpm": 70, "keyscale": "E major"}}
    request = parse(body)
    assert request.bpm == 80
    assert request.key_scale == ""  # "metadata" is not consulted once "meta" was chosen


@pytest.mark.parametrize("sent", [120, "120", 120.0, " 120 ", "120.0"])
def test_whole_numbers_are_accepted_for_int_fields(sent):
    assert parse({"bpm": sent}).bpm == 120


def test_blank_numbers_mean_default():
    request = parse({"bpm": "", "inference_steps": " ", "guidance_scale": ""})
    assert request.bpm is None and request.inference_steps == 8 and request.guidance_scale == 7.0


@pytest.mark.parametrize("sent", [None, 0, -5, "0", "-1"])
def test_missing_or_non_positive_duration_lets_the_engine_decide(sent):
    assert parse({"audio_duration": sent}).audio_duration is None


def test_batch_size_null_is_two_and_large_values_are_clamped():
    assert parse({"batch_size": None}).batch_size == 2
    assert parse({"batch_size": 99}).batch_size == SETTINGS.batch_max


@pytest.mark.parametrize("sent,expected", [
    (True, True), (False, False), (1, True), (0, False), ("1", True), ("TRUE", True), ("Yes", True),
    ("y", True), ("on", True), ("no", False), ("false", False), ("banana", False),
])
def test_booleans_follow_the_official_rule(sent, expected):
    assert parse({"thinking": sent}).thinking is expected


@pytest.mark.parametrize("sent,expected", [
    (42, [42]), ("42", [42]), ("1,2,-1", [1, 2, -1]), (" 7 , 8 ", [7, 8]), (-1, []), ("-1", []),
    ("", []), ([3, 4], [3, 4]),
])
def test_seed_int_or_comma_list(sent, expected):
    assert parse({"seed": sent, "use_random_seed": False}).seeds == expected


@pytest.mark.parametrize("sent", ["0.9,0.5,0", [0.9, 0.5, 0.0], "0.9, 0.5, 0.0"])
def test_timesteps_string_or_list(sent):
    assert parse({"timesteps": sent}).timesteps == [0.9, 0.5, 0.0]


def test_prompt_is_stringified_like_the_official_parser():
    assert parse({"prompt": 5}).prompt == "5"


def test_instrumental_flag_without_lyrics_means_inst_tag():
    assert parse({"instrumental": True}).lyrics == "[inst]"
    assert parse({"instrumental": "true", "lyrics": "la la"}).lyrics == "la la"
    assert parse({"instrumental": False}).lyrics == ""


def test_blank_instruction_and_model_fall_back():
    request = parse({"instruction": "  ", "model": ""})
    assert request.instruction == DEFAULT_INSTRUCTION and request.model is None


def test_choices_are_case_insensitive():
    request = parse({"audio_format": "FLAC", "task_type": "Text2Music", "infer_method": "SDE"})
    assert (request.audio_format, request.task_type, request.infer_method) == ("flac", "text2music", "sde")


def test_lm_fields_are_accepted():
    request = parse({"thinking": True, "sample_mode": True, "sample_query": "x", "use_format": True,
                     "lm_backend": "pt", "lm_top_k": 0, "lm_top_p": 1.0, "ai_token": "t"})
    assert request.needs_lm
    assert request.lm_top_k is None and request.lm_top_p == 1.0


def test_repeated_form_values_for_track_classes():
    assert parse({"track_classes": ["vocals", "drums"]}).track_classes == ["vocals", "drums"]


def test_repainting_end_zero_or_negative_means_the_end():
    assert parse({"repainting_end": 0}).repainting_end is None
    assert parse({"repainting_end": -1}).repainting_end is None
    assert parse({"repainting_end": 12.5}).repainting_end == 12.5


@pytest.mark.parametrize("body,field,words", [
    ({"audio_duration": 5000}, "audio_duration", "audio_duration must be between 10 and 600 seconds (got 5000)"),
    ({"duration": 5}, "audio_duration", "between 10 and 600 seconds"),
    ({"duration": "long"}, "audio_duration", "audio_duration must be a number"),
    ({"batch_size": 0}, "batch_size", "batch_size must be an integer of at least 1 (got 0)"),
    ({"batch_size": "two"}, "batch_size", "batch_size must be an integer"),
    ({"bpm": "fast"}, "bpm", "bpm must be an integer between 30 and 300"),
    ({"bpm": 500}, "bpm", "bpm must be an integer between 30 and 300 (got 500)"),
    ({"bpm": 120.5}, "bpm", "bpm must be an integer between 30 and 300"),
    ({"bpm": True}, "bpm", "bpm must be an integer"),
    ({"audio_format": "ogg"}, "audio_format", "audio_format must be one of mp3, wav, flac, opus, wav32, aac"),
    ({"task_type": "remix"}, "task_type",
     "task_type must be one of text2music, repaint, cover, cover-nofsq, extract, lego, complete"),
    ({"infer_method": "euler"}, "infer_method", "infer_method must be one of ode, sde"),
    ({"lm_backend": "onnx"}, "lm_backend", "lm_backend must be one of vllm, pt, mlx"),
    ({"chunk_mask_mode": "x"}, "chunk_mask_mode", "chunk_mask_mode must be one of explicit, auto"),
    ({"repaint_mode": "x"}, "repaint_mode", "repaint_mode must be one of conservative, balanced, aggressive"),
    ({"repaint_strength": 2}, "repaint_strength", "repaint_strength must be between 0 and 1"),
    ({"repaint_strength": "most"}, "repaint_strength", "repaint_strength must be a number"),
    ({"repaint_wav_crossfade_sec": -1}, "repaint_wav_crossfade_sec",
     "repaint_wav_crossfade_sec must be between 0 and 10"),
    ({"repaint_wav_crossfade_sec": 11}, "repaint_wav_crossfade_sec",
     "repaint_wav_crossfade_sec must be between 0 and 10"),
    ({"global_caption": "x" * 5000}, "global_caption", "global_caption must be at most 4096 characters"),
    ({"global_caption": ["a"]}, "global_caption", "global_caption must be a string"),
    ({"inference_steps": 0}, "inference_steps", "inference_steps must be an integer between 1 and 200"),
    ({"guidance_scale": "nan"}, "guidance_scale", "guidance_scale must be a number"),
    ({"shift": 0}, "shift", "shift must be greater than 0 and at most 10"),
    ({"audio_cover_strength": 1.5}, "audio_cover_strength", "audio_cover_strength must be between 0 and 1"),
    ({"cover_noise_strength": -0.1}, "cover_noise_strength", "cover_noise_strength must be between 0 and 1"),
    ({"repaint_latent_crossfade_frames": 2.5}, "repaint_latent_crossfade_frames",
     "repaint_latent_crossfade_frames must be an integer between 0 and 250"),
    ({"time_signature": "5/4"}, "time_signature", "time_signature must be one of 2, 3, 4, 6"),
    ({"timesteps": "a,b"}, "timesteps", "timesteps must be comma-separated numbers between 0 and 1"),
    ({"timesteps": "2,0.5"}, "timesteps", "timesteps must be a non-empty list of numbers between 0 and 1"),
    ({"seed": "lucky"}, "seed", "seed must be an integer"),
    ({"seed": 2**40}, "seed", "seed must be an integer between 0 and 4294967295"),
    ({"prompt": {"a": 1}}, "prompt", "prompt must be a string"),
    ({"cfg_interval_start": 0.8, "cfg_interval_end": 0.2}, "",
     "cfg_interval_start must not be greater than cfg_interval_end"),
    ({"param_obj": {"bpm": 10}}, "bpm", "bpm must be an integer between 30 and 300 (got 10)"),
])
def test_impossible_values_name_the_field_and_what_is_allowed(body, field, words):
    with pytest.raises(InvalidField) as caught:
        parse(body)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_the_newer_official_fields_reach_the_request():
    request = parse({
        "task_type": "cover-nofsq", "global_caption": "a whole song", "chunk_mask_mode": "auto",
        "repaint_mode": "conservative", "repaint_strength": "0.25", "repaint_wav_crossfade_sec": 0.5,
        "repaint_latent_crossfade_frames": 3, "use_cot_metas": "false",
    })
    assert request.task_type == "cover-nofsq" and request.global_caption == "a whole song"
    assert request.chunk_mask_mode == "auto" and request.repaint_mode == "conservative"
    assert request.repaint_strength == 0.25 and request.repaint_wav_crossfade_sec == 0.5
    assert request.repaint_latent_crossfade_frames == 3 and request.use_cot_metas is False
