"""POST /v1/chat/completions bodies, in the OpenAI / OpenRouter shape the official ACE-Step
adapter speaks (api-contract 3.9).

Only the shapes live here; what the fields mean for a generation job is decided in
`server/chat_messages.py`. Unknown request fields are accepted (OpenAI clients send `n`,
`user`, `response_format`, ...) and ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    Tag,
    model_serializer,
)

from acestep_api.engine.limits import (
    CHAT_MAX_MESSAGES,
    CHAT_MAX_PARTS,
    CHAT_TEXT_MAX_CHARS,
    LYRICS_MAX_CHARS,
    SHORT_TEXT_MAX_CHARS,
    TAG_MAX_CHARS,
)

# --- request ------------------------------------------------------------------------------

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
    """Fields left null take the defaults of api-contract 3.9."""

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


# --- response -----------------------------------------------------------------------------


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
