"""Chat messages and options -> one GenerationRequest (api-contract 3.9).

The text of the user messages becomes the caption, the lyrics or a sample query, following
the official adapter's rules: `<prompt>...</prompt>` and `<lyrics>...</lyrics>` tags win;
untagged text that reads like lyrics is lyrics, other text the caption; with no tags and no
lyrics the text is a sample query for the 5 Hz LM. The `lyrics` and `sample_mode` fields
override that guess. `input_audio` parts become files in the upload folder, owned by the job
from submission on (the queue deletes them when it ends).

Unlike the official adapter, values it cannot use are refused with a 400 naming the field
(it dropped undecodable audio silently and failed the job later on out-of-range values).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from acestep_api.engine.request import (
    AUDIO_FORMATS,
    BPM_MAX,
    BPM_MIN,
    DURATION_MAX,
    DURATION_MIN,
    SOURCE_TASK_TYPES,
    TASK_TYPES,
    GenerationRequest,
)
from acestep_api.jobs.retention import remove_files
from acestep_api.dialects.coercion import InvalidField, show, to_choice, to_float, to_int, to_seeds
from acestep_api.server.protocol.chat import AudioConfig, AudioPart, ChatCompletionRequest, ChatMessage, TextPart
from acestep_api.dialects.official import invalid_field_from
from acestep_api.server.routes.tasks import check_model_supports
from acestep_api.settings import Settings

NOTHING_USABLE = "No valid prompt, lyrics, sample query, or input audio found in request"
# Official defaults of the chat adapter where they differ from /release_task.
CHAT_INFERENCE_STEPS = 8
CHAT_BATCH_SIZE = 1
# The official adapter's name for text2music with a reference recording; it is text2music here.
CONTINUATION_TASK = "music_continuation"
# Tasks whose first audio part is the recording to work on (the second, if any, the reference).
EDITING_TASKS = ("cover", *SOURCE_TASK_TYPES)

LYRICS_MARKERS = ("[verse", "[chorus", "[bridge", "[intro", "[outro", "[hook", "[pre-chorus", "[refrain", "[inst")
LYRICS_MIN_LINES = 4  # this many short lines read as verse even without section markers
LYRICS_MAX_AVERAGE_LINE = 60
_PROMPT_TAG = re.compile(r"<prompt>(.*?)</prompt>", re.DOTALL | re.IGNORECASE)
_LYRICS_TAG = re.compile(r"<lyrics>(.*?)</lyrics>", re.DOTALL | re.IGNORECASE)
_SUFFIX = re.compile(r"^[A-Za-z0-9]{1,10}$")
# Data URL MIME subtype -> file suffix, where they differ.
_MIME_SUFFIXES = {"mpeg": "mp3", "mp3": "mp3", "x-wav": "wav", "wave": "wav", "vnd.wave": "wav", "x-flac": "flac"}

# GenerationRequest field -> the chat field a client sets it with, for error messages.
CHAT_FIELD_NAMES = {
    "bpm": "audio_config.bpm",
    "audio_duration": "audio_config.duration",
    "key_scale": "audio_config.key_scale",
    "time_signature": "audio_config.time_signature",
    "vocal_language": "audio_config.vocal_language",
    "audio_format": "audio_config.format",
    "lm_temperature": "temperature",
    "lm_top_p": "top_p",
    "lm_top_k": "top_k",
    # Read from the messages: say so, since the client sent no field of that name.
    "prompt": "the caption (the user messages' text)",
    "sample_query": "the sample query (the user messages' text)",
}


class AudioTooLarge(InvalidField):
    status_code = 413


@dataclass
class AudioAttachment:
    """One `input_audio` part, not decoded yet."""

    field: str  # where it sits in the body, e.g. "messages[0].content[1].input_audio"
    data: str
    format: str | None


@dataclass
class MessageInput:
    """What the messages (and the fields that override them) ask for."""

    prompt: str = ""
    lyrics: str = ""
    sample_query: str = ""
    audio: list[AudioAttachment] = field(default_factory=list)
    has_tags: bool = False


# --- reading the messages ---------------------------------------------------------------


def split_tags(text: str) -> tuple[str | None, str | None, str]:
    """(tagged prompt, tagged lyrics, the text outside the tags); None for an absent tag."""
    prompt = lyrics = None
    remaining = text
    match = _PROMPT_TAG.search(text)
    if match:
        prompt = match.group(1).strip()
        remaining = remaining.replace(match.group(0), "").strip()
    match = _LYRICS_TAG.search(text)
    if match:
        lyrics = match.group(1).strip()
        remaining = remaining.replace(match.group(0), "").strip()
    return prompt, lyrics, remaining


def looks_like_lyrics(text: str) -> bool:
    lowered = text.lower()
    if any(marker in lowered for marker in LYRICS_MARKERS):
        return True
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return len(lines) >= LYRICS_MIN_LINES and sum(map(len, lines)) / len(lines) < LYRICS_MAX_AVERAGE_LINE


def _read_text(text: str, found: MessageInput, prompt_parts: list[str]) -> None:
    text = text.strip()
    if not text:
        return
    tagged_prompt, tagged_lyrics, remaining = split_tags(text)
    if tagged_prompt is not None or tagged_lyrics is not None:
        found.has_tags = True
        if tagged_prompt:
            prompt_parts.append(tagged_prompt)
        if tagged_lyrics:
            found.lyrics = tagged_lyrics
        if remaining:
            prompt_parts.append(remaining)
    elif looks_like_lyrics(text):
        found.lyrics = text  # the last lyrics-like text wins, as official
    else:
        prompt_parts.append(text)


def read_messages(messages: list[ChatMessage]) -> MessageInput:
    """Only user messages count; system and assistant messages are accepted and ignored."""
    found = MessageInput()
    prompt_parts: list[str] = []
    for index, message in enumerate(messages):
        if message.role != "user" or message.content is None:
            continue
        if isinstance(message.content, str):
            _read_text(message.content, found, prompt_parts)
            continue
        for part_index, part in enumerate(message.content):
            if isinstance(part, TextPart):
                _read_text(part.text, found, prompt_parts)
            elif isinstance(part, AudioPart) and part.input_audio.data.strip():
                where = f"messages[{index}].content[{part_index}].input_audio"
                found.audio.append(AudioAttachment(where, part.input_audio.data, part.input_audio.format))
    text = " ".join(prompt_parts).strip()
    if not found.has_tags and not found.lyrics and text:
        found.sample_query = text  # plain description: the LM writes caption, lyrics and metas
    else:
        found.prompt = text
    return found


def message_input(chat: ChatCompletionRequest) -> MessageInput:
    """The messages read, with the `lyrics` / `sample_mode` fields applied; InvalidField
    when nothing in the request can be made into music."""
    found = read_messages(chat.messages)
    if chat.lyrics or chat.sample_mode:
        text = found.prompt or found.sample_query
        if chat.lyrics:  # the lyrics are given: the message text is the caption
            found.prompt, found.lyrics, found.sample_query = text, chat.lyrics, ""
        else:  # sample mode asked for: the message text is the query
            found.prompt, found.lyrics, found.sample_query = "", "", text
    if not (found.prompt or found.lyrics or found.sample_query or chat.sample_mode or found.audio):
        raise InvalidField("messages", NOTHING_USABLE)
    return found


# --- the generation request -------------------------------------------------------------


def _task_type(chat: ChatCompletionRequest) -> str:
    task = to_choice("task_type", chat.task_type, "text2music", (*TASK_TYPES, CONTINUATION_TASK))
    return "text2music" if task == CONTINUATION_TASK else task


def _model_name(model: str) -> str | None:
    """"acestep/acestep-v15-turbo" -> "acestep-v15-turbo" (the /v1/models id form)."""
    name = model.split("/", 1)[1] if "/" in model else model
    return name.strip() or None


def _given(number: float | None) -> float | None:
    """0 or less is how some clients say "not given" (bpm, duration), as official."""
    return number if number is not None and number > 0 else None


def to_generation_request(chat: ChatCompletionRequest, found: MessageInput, settings: Settings) -> GenerationRequest:
    """The job for this chat request, without its audio files yet (see `save_audio`).
    Raises InvalidField naming the chat field when a value cannot be used."""
    config = chat.audio_config or AudioConfig()
    lyrics = found.lyrics
    if config.instrumental and not lyrics.strip():
        lyrics = "[inst]"
    repainting_end = chat.repainting_end
    values = dict(
        prompt=found.prompt,
        lyrics=lyrics,
        sample_query=found.sample_query,
        sample_mode=bool(chat.sample_mode or found.sample_query),
        bpm=to_int("audio_config.bpm", _given(config.bpm), None, minimum=BPM_MIN, maximum=BPM_MAX),
        key_scale=config.key_scale or "",
        time_signature=config.time_signature or "",
        audio_duration=to_float("audio_config.duration", _given(config.duration), None,
                                minimum=DURATION_MIN, maximum=DURATION_MAX, unit=" seconds"),
        vocal_language=config.vocal_language or "en",
        audio_format=to_choice("audio_config.format", config.format, "mp3", AUDIO_FORMATS),
        lm_temperature=0.85 if chat.temperature is None else chat.temperature,
        lm_top_p=0.9 if chat.top_p is None else chat.top_p,
        lm_top_k=chat.top_k or None,  # 0 = no top-k cut
        thinking=bool(chat.thinking),
        use_format=bool(chat.use_format),
        use_cot_caption=chat.use_cot_caption is not False,
        use_cot_language=chat.use_cot_language is not False,
        inference_steps=CHAT_INFERENCE_STEPS,
        guidance_scale=to_float("guidance_scale", chat.guidance_scale, 7.0, minimum=0.0, maximum=200.0),
        use_random_seed=chat.seed is None,
        seeds=to_seeds(chat.seed),
        batch_size=min(chat.batch_size or CHAT_BATCH_SIZE, settings.batch_max),
        task_type=_task_type(chat),
        repainting_start=chat.repainting_start or 0.0,
        # 0 and negative values mean "to the end", as in the official server.
        repainting_end=repainting_end if repainting_end and repainting_end > 0 else None,
        audio_cover_strength=to_float("audio_cover_strength", chat.audio_cover_strength, 1.0, minimum=0.0, maximum=1.0),
        model=_model_name(chat.model),
    )
    try:
        return GenerationRequest(**values)
    except ValidationError as error:
        problem = invalid_field_from(error)
        name = CHAT_FIELD_NAMES.get(problem.field, problem.field)
        message = str(problem)
        if problem.field and message.startswith(problem.field):
            message = name + message[len(problem.field):]
        raise InvalidField(name, message) from None


def lm_need(generation: GenerationRequest) -> str | None:
    """What in the request needs the 5 Hz LM, in the client's terms; None when nothing does."""
    if generation.sample_mode or generation.sample_query.strip():
        return "sample mode (a plain description without <prompt> or <lyrics> tags, or sample_mode)"
    if generation.thinking:
        return "thinking"
    if generation.use_format:
        return "use_format"
    return None


def check_task(generation: GenerationRequest, found: MessageInput, engine) -> None:
    """Refuse at once a task the chosen model cannot run, or one that lacks its recording."""
    check_model_supports(generation, engine)
    task = generation.task_type
    # A cover with nothing to cover runs as text2music (official); the others cannot run.
    if task in SOURCE_TASK_TYPES and not found.audio:
        raise InvalidField(
            "messages", f"task_type {task!r} needs source audio: add an input_audio part to a user message"
        )


# --- input audio ------------------------------------------------------------------------


def audio_targets(generation: GenerationRequest, audio: list[AudioAttachment]) -> list[tuple[str, AudioAttachment]]:
    """(request field, part) for the parts the task uses: the recording to work on and a
    style reference for editing tasks, a reference for text2music. Further parts are ignored."""
    editing = generation.task_type in EDITING_TASKS
    fields = ("src_audio_path", "reference_audio_path") if editing else ("reference_audio_path",)
    return list(zip(fields, audio))


def _encoded_size(byte_count: int) -> int:
    return (byte_count + 2) // 3 * 4


def max_body_bytes(settings: Settings, text_allowance: int) -> int:
    """The largest chat body worth reading: the text plus two audio parts at the upload limit."""
    return text_allowance + 2 * _encoded_size(settings.max_upload_bytes)


def decode_audio_data(where: str, data: str, max_bytes: int, max_mb: float) -> tuple[bytes, str | None]:
    """The audio bytes of base64 text or a data URL, and the subtype its data URL names."""
    name = f"{where}.data"
    text, subtype = data.strip(), None
    if "," in text:  # base64 has no commas: this is a data URL header
        header, _, text = text.partition(",")
        if header[:5].lower() == "data:":
            if ";base64" not in header.lower():
                raise InvalidField(name, f"{name} must be base64 audio or a data URL like data:audio/wav;base64,<data>")
            subtype = header[5:].split(";", 1)[0].strip().lower().rpartition("/")[2] or None
    compact = "".join(text.split())
    too_large = AudioTooLarge(name, f"{name}: the audio is larger than the {max_mb:g} MB limit (ACESTEP_MAX_UPLOAD_MB)")
    if len(compact) > _encoded_size(max_bytes):
        raise too_large
    try:
        raw = base64.b64decode(compact + "=" * (-len(compact) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidField(name, f"{name} is not valid base64 (got {show(data)})") from None
    if not raw:
        raise InvalidField(name, f"{name} is empty")
    if len(raw) > max_bytes:
        raise too_large
    return raw, subtype


def _suffix(attachment: AudioAttachment, subtype: str | None) -> str:
    declared = (attachment.format or "").strip().lower().lstrip(".")
    if declared and not _SUFFIX.match(declared):
        raise InvalidField(f"{attachment.field}.format",
                           f"{attachment.field}.format must be a file type such as mp3, wav or flac "
                           f"(got {show(attachment.format)})")
    chosen = declared or _MIME_SUFFIXES.get(subtype or "", subtype or "mp3")
    return "." + (chosen if _SUFFIX.match(chosen) else "mp3")


def save_audio(targets: list[tuple[str, AudioAttachment]], settings: Settings) -> dict[str, str]:
    """Decode, write and check each used part; request field -> file path. Blocking (call it
    in a worker thread). On any failure no file is left behind."""
    # Imported here: decoding pulls in the numeric audio stack, needed only when audio comes.
    from acestep_api.engine.audio_input import AudioInputError, check_audio

    upload_dir = Path(settings.upload_dir).absolute()  # jobs record absolute paths
    paths: dict[str, str] = {}
    try:
        for path_field, attachment in targets:
            raw, subtype = decode_audio_data(attachment.field, attachment.data, settings.max_upload_bytes,
                                             settings.max_upload_mb)
            suffix = _suffix(attachment, subtype)
            upload_dir.mkdir(parents=True, exist_ok=True)
            handle, path = tempfile.mkstemp(prefix="chat_audio_", suffix=suffix, dir=upload_dir)
            paths[path_field] = path
            with os.fdopen(handle, "wb") as file:
                file.write(raw)
            try:
                # Labelled, never by the file's server-chosen name.
                check_audio(path, max_seconds=DURATION_MAX, label="audio file",
                            max_decoded_mb=settings.max_decoded_audio_mb)
            except AudioInputError as error:
                name = f"{attachment.field}.data"
                raise InvalidField(name, f"{name}: {error}") from None
    except BaseException:
        remove_files(paths.values())
        raise
    return paths
