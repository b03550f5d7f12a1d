"""OpenAI / OpenRouter chat completions (docs/wire-contract.md#chat-completions): the protocol models, `parse` and
`render`, free of any transport.

Request bodies follow the shape the official ACE-Step adapter speaks. Unknown request fields
are accepted (OpenAI clients send `n`, `user`, `response_format`, ...) and ignored.

Only the last user message with content is read (its text and its audio), following the
newer official adapter: `<prompt>...</prompt>` and `<lyrics>...</lyrics>` tags win, and text
outside them is the caption only when there is no `<prompt>`; untagged text that reads like
lyrics is lyrics, any other text the caption (the DiT alone can make it). The `lyrics` and
`sample_mode` fields override that guess. `input_audio` parts are decoded here; the server
writes them into its upload folder (`server/services/chat_audio.py`), where the job owns them
from submission on.

Unlike the official adapter, values it cannot use are refused with an `InvalidField` naming
the field (it dropped undecodable audio silently and failed the job later on out-of-range
values).

The answer without `stream` is the song's details as markdown, the first audio file as a
data URL and the audio codes the song followed (`render`); with `stream` it is server-sent
events (`ChunkWriter`): an empty first delta, a heartbeat "." while the job runs, then the
details, the audio, the codes, and the finish.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    Tag,
    ValidationError,
    model_serializer,
)

from acestep_api.audio_formats import mime_type
from acestep_api.dialects.coercion import InvalidField, show, to_choice, to_float, to_int, to_seeds
from acestep_api.dialects.official import NOT_AVAILABLE, invalid_field_from, lora_name
from acestep_api.engine.limits import (
    AUDIO_CODES_MAX_CHARS,
    CHAT_MAX_MESSAGES,
    CHAT_MAX_PARTS,
    CHAT_TEXT_MAX_CHARS,
    LYRICS_MAX_CHARS,
    SHORT_TEXT_MAX_CHARS,
    TAG_MAX_CHARS,
)
from acestep_api.engine.request import (
    AUDIO_FORMATS,
    BPM_MAX,
    BPM_MIN,
    DURATION_MAX,
    DURATION_MIN,
    INFER_METHODS,
    SOURCE_TASK_TYPES,
    TASK_TYPES,
    GenerationRequest,
    is_instrumental_lyrics,
    lyrics_or_instrumental,
)
from acestep_api.jobs.models import Job
from acestep_api.settings import Settings

# --- protocol: the request ----------------------------------------------------------------

# Bounded strings (engine/limits.py): the 400 names the field and its limit.
ChatText = Annotated[str, Field(max_length=CHAT_TEXT_MAX_CHARS)]
ShortText = Annotated[str, Field(max_length=SHORT_TEXT_MAX_CHARS)]
TagText = Annotated[str, Field(max_length=TAG_MAX_CHARS)]


class AudioInput(BaseModel):
    data: str = Field(description="Base64 audio, or a data URL (data:audio/wav;base64,...).")
    format: TagText | None = Field(default=None, description="File type of the data: mp3, wav, flac, ogg, ...")


class TextPart(BaseModel):
    type: Literal["text"]
    text: ChatText


class AudioPart(BaseModel):
    type: Literal["input_audio"]
    input_audio: AudioInput


class OtherPart(BaseModel):
    """A part of a kind this server does not use (image_url, file, ...): accepted, ignored."""

    model_config = ConfigDict(extra="allow")
    type: Any = None


# Union branch names pydantic puts into error locations; error messages leave them out.
TEXT_PART, AUDIO_PART, OTHER_PART = "text part", "audio part", "other part"
TEXT_CONTENT, CONTENT_PARTS = "text content", "content parts"
UNION_TAGS = frozenset({TEXT_PART, AUDIO_PART, OTHER_PART, TEXT_CONTENT, CONTENT_PARTS})


def _part_kind(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        value = {"type": getattr(value, "type", None)}
    if not isinstance(value, dict):
        return None
    return {"text": TEXT_PART, "input_audio": AUDIO_PART}.get(value.get("type"), OTHER_PART)


def _content_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return TEXT_CONTENT
    if isinstance(value, list):
        return CONTENT_PARTS
    return None


# Tagged unions pick the branch from the value's shape, so an error names one branch only.
ContentPart = Annotated[
    Union[
        Annotated[TextPart, Tag(TEXT_PART)],
        Annotated[AudioPart, Tag(AUDIO_PART)],
        Annotated[OtherPart, Tag(OTHER_PART)],
    ],
    Discriminator(
        _part_kind,
        custom_error_type="content_part",
        custom_error_message='must be an object such as {"type": "text", "text": "..."}',
    ),
]
MessageContent = Annotated[
    Union[
        Annotated[ChatText, Tag(TEXT_CONTENT)],
        Annotated[list[ContentPart], Field(max_length=CHAT_MAX_PARTS), Tag(CONTENT_PARTS)],
    ],
    Discriminator(
        _content_kind,
        custom_error_type="message_content",
        custom_error_message="must be a string or a list of content parts",
    ),
]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: MessageContent | None = None
    name: ShortText | None = None


class AudioConfig(BaseModel):
    duration: float | None = None
    format: TagText | None = None
    bpm: int | None = None
    key_scale: TagText | None = None
    time_signature: TagText | None = None
    vocal_language: TagText | None = None
    instrumental: bool | None = None


class ChatCompletionRequest(BaseModel):
    """Fields left null take the defaults of docs/wire-contract.md#chat-completions."""

    model_config = ConfigDict(extra="allow")

    model: ShortText
    messages: list[ChatMessage] = Field(max_length=CHAT_MAX_MESSAGES)
    modalities: list[ShortText] | None = Field(default=None, max_length=16)
    audio_config: AudioConfig | None = None

    # OpenAI sampling fields; temperature, top_p and top_k drive the 5 Hz LM.
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool | None = False
    stop: ShortText | Annotated[list[ShortText], Field(max_length=16)] | None = None
    seed: StrictInt | str | list[StrictInt] | None = None

    # ACE-Step fields
    thinking: bool | None = None
    guidance_scale: float | None = None
    batch_size: int | None = Field(default=None, ge=1)
    lyrics: Annotated[str, Field(max_length=LYRICS_MAX_CHARS)] | None = None
    sample_mode: bool | None = None
    use_format: bool | None = None
    use_cot_caption: bool | None = None
    use_cot_language: bool | None = None
    task_type: TagText | None = None
    repainting_start: float | None = None
    repainting_end: float | None = None
    audio_cover_strength: float | None = None
    # The newer official adapter's fields (docs/chat-completions.md#request)
    inference_steps: int | None = None
    infer_method: TagText | None = None
    lm_cfg_scale: float | None = None
    audio_codes: Annotated[str, Field(max_length=AUDIO_CODES_MAX_CHARS)] | None = None
    cover_noise_strength: float | None = None
    use_cot_metas: bool | None = None
    # This server's: an adapter for the DiT, by folder name in the adapters folder, and its strength.
    lora_name: Annotated[str, Field(max_length=128)] | None = None
    lora_scale: float | None = Field(default=None, ge=0, le=1)


# --- protocol: the answer -----------------------------------------------------------------


class AudioUrl(BaseModel):
    url: str  # data:<mime>;base64,<audio>


class AudioOutput(BaseModel):
    type: Literal["audio_url"] = "audio_url"
    audio_url: AudioUrl


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    audio: list[AudioOutput] | None = None
    audio_codes: str | None = None  # the 5 Hz codes the first song followed, when it had any


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "error"] = "stop"


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage = Field(default_factory=Usage)


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    audio: list[AudioOutput] | None = None

    @model_serializer(mode="wrap")
    def _only_what_changed(self, handler: SerializerFunctionWrapHandler) -> dict:
        # A delta carries just its new keys: {"content": "."}, never {"role": null, ...}.
        return {key: value for key, value in handler(self).items() if value is not None}


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "error"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]


# --- parse: the body ----------------------------------------------------------------------

INVALID_REQUEST = "Invalid request format: {}"


def load_body(raw: bytes) -> dict:
    """The JSON object of a body, whatever its declared type (as official)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise InvalidField("", INVALID_REQUEST.format(f"the body is not valid JSON ({error})")) from None
    if not isinstance(body, dict):
        raise InvalidField("", INVALID_REQUEST.format("the body must be a JSON object"))
    return body


def describe_validation_error(error: ValidationError) -> str:
    """Every problem as `path: message`, the path in the client's terms
    (`messages[0].content[1].input_audio.data`)."""
    problems = []
    for problem in error.errors(include_url=False):
        path = ""
        for part in problem.get("loc", ()):
            if isinstance(part, int):
                path += f"[{part}]"
            elif part not in UNION_TAGS:
                path += f".{part}" if path else str(part)
        problems.append(f"{path}: {problem['msg']}" if path else problem["msg"])
    return "; ".join(problems)


def read_request(body: dict) -> ChatCompletionRequest:
    """A JSON object as a ChatCompletionRequest; InvalidField listing every problem."""
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as error:
        raise InvalidField("", INVALID_REQUEST.format(describe_validation_error(error))) from None


# --- parse: the field rules ---------------------------------------------------------------

NOTHING_USABLE = "No valid prompt, lyrics, sample query, or input audio found in request"
# Official defaults of the chat adapter where they differ from /release_task.
CHAT_INFERENCE_STEPS = 8
CHAT_BATCH_SIZE = 1
CHAT_LM_CFG_SCALE = 2.0
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
    "audio_code_string": "audio_codes",
    # Read from the messages: say so, since the client sent no field of that name.
    "prompt": "the caption (the last user message's text)",
    "sample_query": "the sample query (the last user message's text)",
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


# --- parse: the messages ------------------------------------------------------------------


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


def _read_text(text: str, found: MessageInput) -> None:
    """The message's text as caption and lyrics: tags first (text outside them is the caption
    only when there is no <prompt>), else lyrics if it reads like lyrics, else the caption."""
    tagged_prompt, tagged_lyrics, remaining = split_tags(text)
    if tagged_prompt is not None or tagged_lyrics is not None:
        found.prompt = tagged_prompt or remaining
        found.lyrics = tagged_lyrics or ""
    elif looks_like_lyrics(text):
        found.lyrics = text
    else:
        found.prompt = text


def _has_content(message: ChatMessage) -> bool:
    if isinstance(message.content, str):
        return bool(message.content.strip())
    return bool(message.content)


def read_messages(messages: list[ChatMessage]) -> MessageInput:
    """Only the last user message with content counts (its text parts joined by new lines, and
    its audio parts); earlier turns, system and assistant messages are accepted and ignored."""
    found = MessageInput()
    index = next((i for i in range(len(messages) - 1, -1, -1)
                  if messages[i].role == "user" and _has_content(messages[i])), None)
    if index is None:
        return found
    content = messages[index].content
    texts: list[str] = []
    if isinstance(content, str):
        texts.append(content)
    else:
        for part_index, part in enumerate(content):
            if isinstance(part, TextPart):
                texts.append(part.text.strip())
            elif isinstance(part, AudioPart) and part.input_audio.data.strip():
                where = f"messages[{index}].content[{part_index}].input_audio"
                found.audio.append(AudioAttachment(where, part.input_audio.data, part.input_audio.format))
    text = "\n".join(texts).strip()
    if text:
        _read_text(text, found)
    return found


def message_input(chat: ChatCompletionRequest) -> MessageInput:
    """The messages read, with the `lyrics` / `sample_mode` fields applied; InvalidField
    when nothing in the request can be made into music."""
    found = read_messages(chat.messages)
    if chat.lyrics or chat.sample_mode:
        text = found.prompt
        if chat.lyrics:  # the lyrics are given: the message text is the caption
            found.prompt, found.lyrics, found.sample_query = text, chat.lyrics, ""
        else:  # sample mode asked for: the message text is the query
            found.prompt, found.lyrics, found.sample_query = "", "", text
    if not (found.prompt or found.lyrics or found.sample_query or chat.sample_mode or found.audio):
        raise InvalidField("messages", NOTHING_USABLE)
    return found


# --- parse: the generation request --------------------------------------------------------


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
    """The job for this chat request, without its audio files yet.
    Raises InvalidField naming the chat field when a value cannot be used."""
    config = chat.audio_config or AudioConfig()
    lyrics = lyrics_or_instrumental(found.lyrics, bool(config.instrumental))
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
        lm_cfg_scale=CHAT_LM_CFG_SCALE if chat.lm_cfg_scale is None else chat.lm_cfg_scale,
        thinking=bool(chat.thinking),
        use_format=bool(chat.use_format),
        use_cot_caption=chat.use_cot_caption is not False,
        use_cot_language=chat.use_cot_language is not False,
        use_cot_metas=chat.use_cot_metas is not False,
        inference_steps=CHAT_INFERENCE_STEPS if chat.inference_steps is None else chat.inference_steps,
        infer_method=to_choice("infer_method", chat.infer_method, "ode", INFER_METHODS),
        audio_code_string=chat.audio_codes or "",
        cover_noise_strength=0.0 if chat.cover_noise_strength is None else chat.cover_noise_strength,
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
        lora_name=lora_name(chat.lora_name),
        lora_scale=chat.lora_scale,
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
        return "sample_mode"
    if generation.thinking:
        return "thinking"
    if generation.use_format:
        return "use_format"
    return None


def check_source_audio(found: MessageInput, generation: GenerationRequest) -> None:
    """Refuse at once a task that lacks its recording."""
    task = generation.task_type
    # A cover with nothing to cover runs as text2music (official); the others cannot run.
    if task in SOURCE_TASK_TYPES and not found.audio:
        raise InvalidField(
            "messages", f"task_type {task!r} needs source audio: add an input_audio part to a user message"
        )


def lm_missing_message(reason: str, lm_error: str | None) -> str:
    """Why a request that needs the 5 Hz LM cannot run here, and how to do without it."""
    why = f"the 5Hz LM failed to load ({lm_error})" if lm_error else "the 5Hz LM is not loaded"
    return (f"Model not initialized. init_error={why}; {reason} needs it. Put the description in "
            "<prompt>...</prompt> (and lyrics in <lyrics>...</lyrics>), or start the server with "
            "ACESTEP_INIT_LLM=true.")


@dataclass(frozen=True)
class ChatCall:
    """A parsed chat request: the job to run (without its audio files yet) and what the
    messages held, for the checks and the audio the server still has to write."""

    chat: ChatCompletionRequest
    found: MessageInput
    generation: GenerationRequest


def parse(chat: ChatCompletionRequest, settings: Settings) -> ChatCall:
    """The generation job a chat request asks for. Raises InvalidField naming the chat field."""
    found = message_input(chat)
    return ChatCall(chat, found, to_generation_request(chat, found, settings))


# --- parse: input audio -------------------------------------------------------------------


def audio_targets(call: ChatCall) -> list[tuple[str, AudioAttachment]]:
    """(request field, part) for the parts the task uses: the recording to work on and a
    style reference for editing tasks, a reference for text2music. Further parts are ignored."""
    editing = call.generation.task_type in EDITING_TASKS
    fields = ("src_audio_path", "reference_audio_path") if editing else ("reference_audio_path",)
    return list(zip(fields, call.found.audio))


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


def audio_suffix(attachment: AudioAttachment, subtype: str | None) -> str:
    """The file suffix for a part: its declared format, else its data URL's type, else .mp3."""
    declared = (attachment.format or "").strip().lower().lstrip(".")
    if declared and not _SUFFIX.match(declared):
        raise InvalidField(f"{attachment.field}.format",
                           f"{attachment.field}.format must be a file type such as mp3, wav or flac "
                           f"(got {show(attachment.format)})")
    chosen = declared or _MIME_SUFFIXES.get(subtype or "", subtype or "mp3")
    return "." + (chosen if _SUFFIX.match(chosen) else "mp3")


def decode_attachment(attachment: AudioAttachment, max_bytes: int, max_mb: float) -> tuple[bytes, str]:
    """A part's audio bytes and the file suffix they should be saved under."""
    raw, subtype = decode_audio_data(attachment.field, attachment.data, max_bytes, max_mb)
    return raw, audio_suffix(attachment, subtype)


# --- render -------------------------------------------------------------------------------

FIRST_DELTA = ""  # the first chunk only opens the assistant's turn, as the newer official adapter
HEARTBEAT = "."
NO_DETAILS = "Music generated successfully."
GENERATION_FAILED = "Generation failed"
JOB_NOT_FOUND = "Job not found"
NO_AUDIO_MIME_TYPE = "application/octet-stream"
METADATA_LINES = (("BPM", "bpm", ""), ("Duration", "duration", "s"), ("Key", "keyscale", ""),
                  ("Time Signature", "timesignature", ""))


def _shown(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def describe_result(job: Job) -> str:
    """The song's details as markdown: a Metadata block (values known only) and the lyrics
    unless it is an instrumental."""
    result = job.result
    lines = []
    caption = (result.prompt or job.request.prompt).strip()
    if caption:
        lines.append(f"**Caption:** {caption}")
    for label, key, unit in METADATA_LINES:
        value = result.metas.get(key)
        if value not in (None, "", NOT_AVAILABLE):
            lines.append(f"**{label}:** {_shown(value)}{unit}")
    sections = ["## Metadata\n" + "\n".join(lines)] if lines else []
    if not is_instrumental_lyrics(result.lyrics):
        sections.append(f"## Lyrics\n{result.lyrics}")
    return "\n\n".join(sections) or NO_DETAILS


def data_url(path: str) -> str:
    """An audio file as a data URL. Reads the file: call it off the event loop."""
    mime = mime_type(path, NO_AUDIO_MIME_TYPE)
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def first_audio(job: Job) -> list[AudioOutput] | None:
    """The first audio file as a data URL (only the first, as official), None without audio.
    Reads the file: call it off the event loop."""
    paths = job.result.audio_paths
    if not paths:
        return None
    return [AudioOutput(audio_url=AudioUrl(url=data_url(paths[0])))]


def song_codes(job: Job) -> str | None:
    """The 5 Hz audio codes the first song followed (the LM's, else the client's); None when
    it had none or its result predates the stored request."""
    resolved = job.result.resolved
    if resolved is None:
        return None
    codes = resolved.lm_audio_codes[0] if resolved.lm_audio_codes else resolved.audio_code_string
    return codes.strip() or None


def completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(8)}"  # 16 hex digits, as the official adapter


def render(job: Job, model: str, audio: list[AudioOutput] | None) -> dict:
    """The answer without `stream` to a job that succeeded; `audio` is `first_audio(job)`."""
    message = AssistantMessage(content=describe_result(job), audio=audio, audio_codes=song_codes(job))
    answer = ChatCompletion(id=completion_id(), created=int(time.time()), model=model,
                            choices=[Choice(message=message)])
    return answer.model_dump()


def failure_reason(job: Job | None) -> str:
    """What the answer says of a job that did not succeed (None: the job is gone)."""
    return (job.error or GENERATION_FAILED) if job is not None else JOB_NOT_FOUND


class ChunkWriter:
    """The server-sent events of one streamed answer, all under one completion id, in the
    order they are sent: `start`, any `heartbeat`s, then `details`, `audio` and `finish`, or
    `failure`; `DONE` closes the stream."""

    DONE = "data: [DONE]\n\n"

    def __init__(self, model: str):
        self.model = model
        self.id, self.created = completion_id(), int(time.time())

    def event(self, finish_reason: str | None = None, **delta: Any) -> str:
        chunk = ChatCompletionChunk(id=self.id, created=self.created, model=self.model,
                                    choices=[ChunkChoice(delta=Delta(**delta), finish_reason=finish_reason)])
        return f"data: {json.dumps(chunk.model_dump(), ensure_ascii=False)}\n\n"

    def start(self) -> str:
        return self.event(role="assistant", content=FIRST_DELTA)

    def heartbeat(self) -> str:
        return self.event(content=HEARTBEAT)

    def details(self, job: Job) -> str:
        """The song's details, once its job has succeeded."""
        return self.event(content=f"\n\n{describe_result(job)}")

    def audio(self, audio: list[AudioOutput]) -> str:
        """The audio (`first_audio(job)`) after the details."""
        return self.event(audio=audio)

    def codes(self, job: Job) -> str | None:
        """The song's audio codes as their own content chunk, after the audio; None without codes."""
        codes = song_codes(job)
        return self.event(content=f"\n\n[audio_codes]{codes}[/audio_codes]") if codes else None

    def finish(self) -> str:
        return self.event(finish_reason="stop")

    def failure(self, error: str) -> list[str]:
        """The end of a stream whose job failed, was lost or ran out of time."""
        return [self.event(content=f"\n\nError: {error}"), self.event(finish_reason="error")]
