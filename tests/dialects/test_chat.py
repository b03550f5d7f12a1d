"""The chat-completions dialect without a server: bodies, how messages become caption, lyrics
or a sample query, the options, input audio decoding, and the answers it renders."""

from __future__ import annotations

import base64
import json
import re

import pytest

from acestep_api.dialects import chat
from acestep_api.dialects.coercion import InvalidField
from acestep_api.engine.request import GenerationRequest, GenerationResult
from acestep_api.jobs.models import Job, JobStatus
from acestep_api.settings import Settings

SETTINGS = Settings(_env_file=None, batch_max=4)
MODEL = "acestep/acestep-v15-turbo"


def user(content) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}]}


def parsed(body: dict) -> GenerationRequest:
    return chat.parse(chat.read_request(body), SETTINGS).generation


def finished_job(tmp_path, *, lyrics="[inst]", metas=None, audio_name="song.mp3", prompt="Lo-fi beat") -> Job:
    paths = []
    if audio_name:
        paths.append(str(tmp_path / audio_name))
        (tmp_path / audio_name).write_bytes(b"ID3 not really audio")
    result = GenerationResult(audio_paths=paths, seeds=[1], prompt=prompt, lyrics=lyrics,
                              metas={"duration": 30.0, "bpm": None} if metas is None else metas, dit_model="acestep-v15-turbo",
                              lm_model="", generation_info="", timings={})
    return Job(id="job-1", request=GenerationRequest(prompt=prompt), status=JobStatus.SUCCEEDED, result=result)


# --- the body --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "detail"), [
    (b"{bad", "Invalid request format: the body is not valid JSON"),
    (b"[1, 2]", "Invalid request format: the body must be a JSON object"),
    (b"", "Invalid request format: the body is not valid JSON"),
])
def test_a_body_that_is_not_a_json_object_is_refused(raw, detail):
    with pytest.raises(InvalidField) as refused:
        chat.load_body(raw)
    assert str(refused.value).startswith(detail)


@pytest.mark.parametrize(("body", "detail"), [
    ({"messages": []}, "Invalid request format: model: Field required"),
    ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "Invalid request format: messages[0].content[0].input_audio.data: Field required"),
    ({"model": MODEL, "messages": [{"role": "user", "content": [5]}]},
     'Invalid request format: messages[0].content[0]: must be an object such as {"type": "text", "text": "..."}'),
])
def test_validation_errors_name_the_path_without_union_branches(body, detail):
    with pytest.raises(InvalidField) as refused:
        chat.read_request(body)
    assert str(refused.value) == detail


def test_nothing_usable_is_refused_naming_the_messages():
    with pytest.raises(InvalidField) as refused:
        parsed({"model": MODEL, "messages": [{"role": "system", "content": "You write songs."}]})
    assert (refused.value.field, str(refused.value)) == ("messages", chat.NOTHING_USABLE)


# --- what the messages become ------------------------------------------------------------------------


VERSE = "[Verse]\nWalking down the street\n[Chorus]\nDance with me tonight"
SHORT_LINES = "Sunlight on the water\nA brand new day begins\nWe hold the morning\nAnd never let it go"


@pytest.mark.parametrize(("body", "prompt", "lyrics", "query"), [
    (user("<prompt>Lo-fi hip hop</prompt>"), "Lo-fi hip hop", "", ""),
    (user("<PROMPT>Jazz trio</Prompt>\n<Lyrics>[verse]\nla la la</LYRICS>"), "Jazz trio", "[verse]\nla la la", ""),
    (user("<lyrics>[chorus]\nhey</lyrics> with brass"), "with brass", "[chorus]\nhey", ""),
    # Text outside the tags counts only when there is no <prompt>.
    (user("<prompt>Funk</prompt> with slap bass <lyrics>la</lyrics>"), "Funk", "la", ""),
    (user("<prompt></prompt> with slap bass"), "with slap bass", "", ""),
    (user(VERSE), "", VERSE, ""),
    (user(SHORT_LINES), "", SHORT_LINES, ""),
    # Plain text is the caption: the DiT alone can make it.
    (user("An upbeat pop song about summer and travel"), "An upbeat pop song about summer and travel", "", ""),
    # The message's text parts are one text, joined by new lines.
    (user([{"type": "text", "text": "<prompt>Energetic EDM</prompt>"}, {"type": "image_url", "image_url": {"url": "x"}},
           {"type": "text", "text": f"<lyrics>{VERSE}</lyrics>"}]), "Energetic EDM", VERSE, ""),
    (user([{"type": "text", "text": "Energetic EDM"}, {"type": "text", "text": VERSE}]), "",
     "Energetic EDM\n" + VERSE, ""),
    ({**user("Energetic EDM with heavy drops"), "lyrics": "[Drop]\nbass"}, "Energetic EDM with heavy drops",
     "[Drop]\nbass", ""),
    ({**user("<prompt>Ambient drones</prompt>"), "sample_mode": True}, "", "", "Ambient drones"),
    ({"model": MODEL, "messages": [{"role": "system", "content": "<prompt>ignored</prompt>"},
                                   {"role": "assistant", "content": "<prompt>ignored too</prompt>"},
                                   {"role": "user", "content": "<prompt>kept</prompt>"}]}, "kept", "", ""),
    # Only the last user message with content is read; empty ones after it do not count.
    ({"model": MODEL, "messages": [{"role": "user", "content": "<prompt>first</prompt><lyrics>old</lyrics>"},
                                   {"role": "assistant", "content": "done"},
                                   {"role": "user", "content": "<prompt>second</prompt>"},
                                   {"role": "user", "content": "  "}, {"role": "user", "content": []}]},
     "second", "", ""),
])
def test_messages_become_caption_lyrics_or_sample_query(body, prompt, lyrics, query):
    request = parsed(body)
    assert (request.prompt, request.lyrics, request.sample_query) == (prompt, lyrics, query)
    assert request.sample_mode is bool(query)


def test_options_map_to_the_generation_request():
    request = parsed({
        **user("<prompt>x</prompt>"), "model": "acestep/acestep-v15-base", "seed": "42,-1,7", "batch_size": 3,
        "temperature": 1.1, "top_p": 0.5, "top_k": 20, "thinking": True, "guidance_scale": 4.5,
        "use_cot_caption": False, "audio_config": {"vocal_language": "ja", "format": "flac", "instrumental": True},
        "max_tokens": 100, "modalities": ["audio", "text"], "n": 1, "user": "someone",
    })
    assert request.model == "acestep-v15-base"
    assert (request.use_random_seed, request.seeds, request.batch_size) == (False, [42, -1, 7], 3)
    assert (request.lm_temperature, request.lm_top_p, request.lm_top_k) == (1.1, 0.5, 20)
    assert (request.thinking, request.guidance_scale) == (True, 4.5)
    assert (request.use_cot_caption, request.use_cot_language) == (False, True)
    assert (request.vocal_language, request.audio_format, request.lyrics) == ("ja", "flac", "[inst]")


def test_the_batch_is_clamped_to_the_server_maximum():
    assert parsed({**user("<prompt>x</prompt>"), "batch_size": 50}).batch_size == SETTINGS.batch_max


def test_what_needs_the_lm_is_named_in_the_clients_terms():
    assert chat.lm_need(parsed(user("<prompt>x</prompt>"))) is None
    assert chat.lm_need(parsed(user("a plain description"))) is None
    assert chat.lm_need(parsed({**user("a plain description"), "sample_mode": True})) == "sample_mode"
    assert chat.lm_need(parsed({**user("<prompt>x</prompt>"), "thinking": True})) == "thinking"
    assert chat.lm_missing_message("thinking", None).startswith(
        "Model not initialized. init_error=the 5Hz LM is not loaded; thinking needs it.")
    assert "the 5Hz LM failed to load (no weights)" in chat.lm_missing_message("thinking", "no weights")


def test_a_source_task_without_audio_is_refused():
    call = chat.parse(chat.read_request({**user("<prompt>x</prompt>"), "task_type": "repaint"}), SETTINGS)
    with pytest.raises(InvalidField) as refused:
        chat.check_source_audio(call.found, call.generation)
    assert str(refused.value) == "task_type 'repaint' needs source audio: add an input_audio part to a user message"


# --- input audio --------------------------------------------------------------------------------------


def audio_body(*parts, task_type="cover") -> dict:
    return {**user([{"type": "text", "text": "<prompt>x</prompt>"},
                    *({"type": "input_audio", "input_audio": part} for part in parts)]), "task_type": task_type}


def test_the_parts_a_task_uses_are_its_source_then_its_reference():
    cover = chat.parse(chat.read_request(audio_body({"data": "QQ=="}, {"data": "Qg=="}, {"data": "Qw=="})), SETTINGS)
    assert [(name, part.field) for name, part in chat.audio_targets(cover)] == [
        ("src_audio_path", "messages[0].content[1].input_audio"),
        ("reference_audio_path", "messages[0].content[2].input_audio"),
    ]
    text2music = chat.parse(chat.read_request(audio_body({"data": "QQ=="}, task_type="music_continuation")), SETTINGS)
    assert text2music.generation.task_type == "text2music"
    assert [name for name, _ in chat.audio_targets(text2music)] == ["reference_audio_path"]


@pytest.mark.parametrize(("data", "fmt", "raw", "suffix"), [
    (base64.b64encode(b"RIFF....").decode(), "wav", b"RIFF....", ".wav"),
    ("data:audio/x-wav;base64," + base64.b64encode(b"RIFF").decode(), None, b"RIFF", ".wav"),
    ("data:audio/mpeg;base64," + base64.b64encode(b"ID3").decode(), None, b"ID3", ".mp3"),
    (base64.urlsafe_b64encode(b"\xfb\xff").decode().rstrip("="), ".FLAC", b"\xfb\xff", ".flac"),
    (base64.b64encode(b"x").decode(), None, b"x", ".mp3"),
])
def test_input_audio_is_decoded_with_the_suffix_it_is_saved_under(data, fmt, raw, suffix):
    part = chat.AudioAttachment("messages[0].content[1].input_audio", data, fmt)
    assert chat.decode_attachment(part, 1000, 0.001) == (raw, suffix)


@pytest.mark.parametrize(("data", "fmt", "error", "detail"), [
    ("!!not base64!!", "wav", InvalidField, "messages[0].content[1].input_audio.data is not valid base64"),
    ("data:audio/wav,RIFF", "wav", InvalidField, "messages[0].content[1].input_audio.data must be base64 audio"),
    ("", "wav", InvalidField, "messages[0].content[1].input_audio.data is empty"),
    ("QUJD", "../../x", InvalidField, "messages[0].content[1].input_audio.format must be a file type"),
    (base64.b64encode(b"x" * 2000).decode(), "wav", chat.AudioTooLarge,
     "messages[0].content[1].input_audio.data: the audio is larger than the 0.001 MB limit"),
])
def test_bad_input_audio_is_refused_naming_the_part(data, fmt, error, detail):
    part = chat.AudioAttachment("messages[0].content[1].input_audio", data, fmt)
    with pytest.raises(error) as refused:
        chat.decode_attachment(part, 1000, 0.001)
    assert str(refused.value).startswith(detail)
    assert getattr(refused.value, "status_code", 400) == (413 if error is chat.AudioTooLarge else 400)


def test_a_chat_body_may_hold_two_audio_parts_at_the_upload_limit():
    settings = Settings(_env_file=None, max_upload_mb=3)
    assert chat.max_body_bytes(settings, 1000) == 1000 + 2 * ((settings.max_upload_bytes + 2) // 3 * 4)


# --- the answers ---------------------------------------------------------------------------------------


def test_the_details_show_known_metadata_and_lyrics_unless_instrumental(tmp_path):
    assert chat.describe_result(finished_job(tmp_path)) == "## Metadata\n**Caption:** Lo-fi beat\n**Duration:** 30s"
    job = finished_job(tmp_path, lyrics="[verse]\nla", metas={"bpm": 90, "keyscale": "A minor", "duration": 12.5,
                                                              "timesignature": "3"})
    assert chat.describe_result(job) == ("## Metadata\n**Caption:** Lo-fi beat\n**BPM:** 90\n**Duration:** 12.5s\n"
                                         "**Key:** A minor\n**Time Signature:** 3\n\n## Lyrics\n[verse]\nla")
    assert chat.describe_result(finished_job(tmp_path, prompt=" ", metas={})) == chat.NO_DETAILS


@pytest.mark.parametrize(("name", "mime"), [("song.mp3", "audio/mpeg"), ("song.WAV", "audio/wav"),
                                            ("song.opus", "audio/ogg"), ("song.xyz", "application/octet-stream")])
def test_the_audio_is_a_data_url_of_its_type(tmp_path, name, mime):
    [audio] = chat.first_audio(finished_job(tmp_path, audio_name=name))
    assert audio.audio_url.url == f"data:{mime};base64," + base64.b64encode(b"ID3 not really audio").decode()
    assert chat.first_audio(finished_job(tmp_path, audio_name=None)) is None


def test_the_completion_has_the_openai_shape(tmp_path):
    job = finished_job(tmp_path)
    answer = chat.render(job, MODEL, chat.first_audio(job))
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{16}", answer["id"])
    assert answer["choices"][0]["message"]["audio_codes"] is None  # no codes: present, null
    assert (answer["object"], answer["model"], answer["usage"]["total_tokens"]) == ("chat.completion", MODEL, 0)
    [choice] = answer["choices"]
    assert (choice["index"], choice["finish_reason"], choice["message"]["role"]) == (0, "stop", "assistant")
    assert choice["message"]["audio"][0]["audio_url"]["url"].startswith("data:audio/mpeg;base64,")


def test_chunks_carry_only_what_changed_under_one_id(tmp_path):
    writer = chat.ChunkWriter(MODEL)
    job = finished_job(tmp_path)
    events = [writer.start(), writer.heartbeat(), writer.details(job), writer.audio(chat.first_audio(job)),
              writer.finish(), *writer.failure("boom")]
    chunks = [json.loads(event.removeprefix("data: ")) for event in events]
    assert all(event.startswith("data: ") and event.endswith("\n\n") for event in events)
    assert {chunk["id"] for chunk in chunks} == {writer.id}
    assert [(chunk["choices"][0]["delta"], chunk["choices"][0]["finish_reason"]) for chunk in chunks if
            "audio" not in chunk["choices"][0]["delta"]] == [
        ({"role": "assistant", "content": ""}, None), ({"content": "."}, None),
        ({"content": "\n\n## Metadata\n**Caption:** Lo-fi beat\n**Duration:** 30s"}, None), ({}, "stop"),
        ({"content": "\n\nError: boom"}, None), ({}, "error"),
    ]
    assert writer.DONE == "data: [DONE]\n\n"


def test_a_job_that_did_not_succeed_is_answered_with_its_error():
    failed = Job(id="x", request=GenerationRequest(prompt="x"), status=JobStatus.FAILED, error="out of tunes")
    assert chat.failure_reason(failed) == "out of tunes"
    assert chat.failure_reason(Job(id="x", request=GenerationRequest(prompt="x"), status=JobStatus.FAILED)) == (
        "Generation failed")
    assert chat.failure_reason(None) == "Job not found"


def test_the_newer_official_fields_map_to_the_generation_request():
    request = parsed({
        **user("<prompt>x</prompt>"), "inference_steps": 30, "infer_method": "sde", "lm_cfg_scale": 3.5,
        "audio_codes": "<|audio_code_5|><|audio_code_9|>", "cover_noise_strength": 0.4, "use_cot_metas": False,
        "task_type": "cover-nofsq",
    })
    assert (request.inference_steps, request.infer_method, request.lm_cfg_scale) == (30, "sde", 3.5)
    assert request.audio_code_string == "<|audio_code_5|><|audio_code_9|>"
    assert (request.cover_noise_strength, request.use_cot_metas, request.task_type) == (0.4, False, "cover-nofsq")
    defaults = parsed(user("<prompt>x</prompt>"))
    assert (defaults.inference_steps, defaults.infer_method, defaults.lm_cfg_scale) == (8, "ode", 2.0)
    assert (defaults.audio_code_string, defaults.cover_noise_strength, defaults.use_cot_metas) == ("", 0.0, True)


@pytest.mark.parametrize(("extra", "field", "words"), [
    ({"inference_steps": 0}, "inference_steps", "inference_steps must be"),
    ({"inference_steps": 500}, "inference_steps", "200"),
    ({"infer_method": "euler"}, "infer_method", "infer_method must be one of ode, sde"),
    ({"lm_cfg_scale": -1}, "lm_cfg_scale", "lm_cfg_scale must be"),
    ({"cover_noise_strength": 2}, "cover_noise_strength", "cover_noise_strength must be"),
    ({"audio_codes": "<|audio_code_1|>" * 3001}, "audio_codes", "audio_codes must hold at most 3000 audio codes"),
    ({"task_type": "remix"}, "task_type", "cover-nofsq"),
])
def test_the_newer_fields_are_bounded(extra, field, words):
    with pytest.raises(InvalidField) as refused:
        parsed({**user("<prompt>x</prompt>"), **extra})
    assert refused.value.field == field and words in str(refused.value)


def test_cover_nofsq_takes_its_source_from_the_audio_and_needs_it():
    call = chat.parse(chat.read_request(audio_body({"data": "QQ=="}, task_type="cover-nofsq")), SETTINGS)
    assert [name for name, _ in chat.audio_targets(call)] == ["src_audio_path"]
    bare = chat.parse(chat.read_request({**user("<prompt>x</prompt>"), "task_type": "cover-nofsq"}), SETTINGS)
    with pytest.raises(InvalidField, match="needs source audio"):
        chat.check_source_audio(bare.found, bare.generation)


def test_the_answer_carries_the_codes_the_song_followed(tmp_path):
    job = finished_job(tmp_path)
    job.result.resolved = GenerationRequest(prompt="x", lm_audio_codes=["<|audio_code_3|>", "<|audio_code_4|>"])
    assert chat.render(job, MODEL, None)["choices"][0]["message"]["audio_codes"] == "<|audio_code_3|>"
    writer = chat.ChunkWriter(MODEL)
    chunk = json.loads(writer.codes(job).removeprefix("data: "))
    assert chunk["choices"][0]["delta"] == {"content": "\n\n[audio_codes]<|audio_code_3|>[/audio_codes]"}
    job.result.resolved = GenerationRequest(prompt="x", audio_code_string="<|audio_code_8|>")
    assert chat.song_codes(job) == "<|audio_code_8|>"
    job.result.resolved = None
    assert chat.song_codes(job) is None and writer.codes(job) is None
