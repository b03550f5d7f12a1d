"""From form values to the /release_task request the UI sends."""

from __future__ import annotations

from pathlib import Path

import pytest

from acestep_api.ui.form import FormError, FormValues, build_release_request, parse_seed, task_types_for


def test_defaults_send_only_what_the_form_sets():
    request = build_release_request(FormValues(caption="  lofi hip hop  ", lyrics="[inst]"))
    assert request.fields == {
        "prompt": "lofi hip hop", "lyrics": "[inst]", "batch_size": 2, "task_type": "text2music",
        "inference_steps": 8, "guidance_scale": 7.0, "thinking": False, "audio_format": "mp3",
        "vocal_language": "en", "use_random_seed": True,
    }
    assert request.files == {}


def test_metadata_and_numbers_take_the_api_names_and_types():
    values = FormValues(caption="rock", bpm=120.0, key_scale="F# minor", time_signature="3", vocal_language="ja",
                        duration=12.0, batch_size=3.0, model="acestep-v15-base", inference_steps=32.0,
                        guidance_scale=5, thinking=True, audio_format="flac")
    fields = build_release_request(values).fields
    assert fields["bpm"] == 120 and isinstance(fields["bpm"], int)
    assert fields["audio_duration"] == 12 and fields["batch_size"] == 3 and fields["inference_steps"] == 32
    assert (fields["key_scale"], fields["time_signature"], fields["vocal_language"]) == ("F# minor", "3", "ja")
    assert (fields["model"], fields["thinking"], fields["audio_format"]) == ("acestep-v15-base", True, "flac")
    assert fields["guidance_scale"] == 5.0


@pytest.mark.parametrize("bpm, duration", [(None, None), (0, 0), ("", ""), (-5, -1)])
def test_empty_or_zero_metadata_is_left_to_the_server(bpm, duration):
    fields = build_release_request(FormValues(caption="x", bpm=bpm, duration=duration)).fields
    assert "bpm" not in fields and "audio_duration" not in fields


def test_out_of_range_values_are_passed_on_for_the_server_to_name():
    # The server owns the ranges; its 400 message is what the page shows.
    assert build_release_request(FormValues(caption="x", duration=5000)).fields["audio_duration"] == 5000
    assert build_release_request(FormValues(caption="x", duration=12.5)).fields["audio_duration"] == 12.5


@pytest.mark.parametrize("text, expected", [
    ("random", None), ("", None), (" -1 ", None), ("RANDOM", None), (None, None), ("-1,-1", None),
    ("42", "42"), (" 7, -1 ,9", "7,-1,9"), (123, "123"),
])
def test_seed_words(text, expected):
    assert parse_seed(text) == expected


@pytest.mark.parametrize("text", ["abc", "1.5", "3,x", "-2"])
def test_a_seed_that_is_not_an_integer_is_refused_by_name(text):
    with pytest.raises(FormError, match="seed"):
        parse_seed(text)


def test_a_fixed_seed_turns_random_seeds_off():
    fields = build_release_request(FormValues(caption="x", seed="11,12")).fields
    assert fields["use_random_seed"] is False and fields["seed"] == "11,12"


def test_source_audio_goes_up_only_for_tasks_that_read_it(tmp_path: Path):
    source, reference = tmp_path / "src.wav", tmp_path / "ref.mp3"
    text2music = build_release_request(FormValues(caption="x", source_audio=str(source),
                                                  reference_audio=str(reference)))
    assert text2music.files == {"reference_audio": reference}

    cover = build_release_request(FormValues(caption="x", task_type="cover", source_audio=str(source),
                                             audio_cover_strength=0.3))
    assert cover.files == {"src_audio": source} and cover.fields["audio_cover_strength"] == 0.3

    repaint = build_release_request(FormValues(task_type="repaint", source_audio=str(source),
                                               repainting_start=2.0, repainting_end=None))
    assert repaint.fields["repainting_start"] == 2.0 and repaint.fields["repainting_end"] == -1.0
    assert "repainting_start" not in cover.fields


def test_text2music_needs_a_caption_or_lyrics():
    with pytest.raises(FormError, match="caption or lyrics"):
        build_release_request(FormValues(caption="  ", lyrics=""))
    assert build_release_request(FormValues(lyrics="la la")).fields["prompt"] == ""


def test_unknown_task_type_is_refused():
    with pytest.raises(FormError, match="task_type must be one of text2music"):
        build_release_request(FormValues(caption="x", task_type="remix"))


INVENTORY = [
    {"name": "acestep-v15-turbo", "is_default": True, "supported_task_types": ["text2music", "repaint", "cover"]},
    {"name": "acestep-v15-base", "is_default": False,
     "supported_task_types": ["text2music", "repaint", "cover", "extract", "lego", "complete"]},
]


def test_task_types_follow_the_chosen_model():
    assert task_types_for("acestep-v15-turbo", INVENTORY) == ["text2music", "cover", "repaint"]
    assert task_types_for("", INVENTORY) == ["text2music", "cover", "repaint"]  # the server default: turbo
    assert len(task_types_for("acestep-v15-base", INVENTORY)) == 6
    assert len(task_types_for("", [])) == 6  # not known yet: all, and the server says which model can


def test_cleared_widgets_fall_back_to_the_defaults():
    values = FormValues(caption="x", key_scale=None, time_signature=None, vocal_language=None, model=None,
                        audio_format=None, task_type=None, batch_size=None, inference_steps=None,
                        guidance_scale=None, lyrics=None, seed=None)
    fields = build_release_request(values).fields
    assert fields["task_type"] == "text2music" and fields["audio_format"] == "mp3"
    assert (fields["batch_size"], fields["inference_steps"], fields["guidance_scale"]) == (2, 8, 7.0)
    assert not {"key_scale", "time_signature", "vocal_language", "model"} & fields.keys()


@pytest.mark.parametrize("name, value, message", [
    ("bpm", "fast", "bpm must be a number"),
    ("batch_size", 2.5, "batch_size must be a whole number"),
    ("duration", "long", "duration must be a number"),
])
def test_numbers_that_are_not_numbers_are_refused_by_name(name, value, message):
    with pytest.raises(FormError, match=message):
        build_release_request(FormValues(caption="x", **{name: value}))
