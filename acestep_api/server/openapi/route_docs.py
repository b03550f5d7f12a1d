"""What the route decorators pass to FastAPI so the OpenAPI document tells the whole truth:
`responses=` for every status a route answers, `openapi_extra=` for the bodies the routes
read by hand and for their auth. The models live in answers.py and request_bodies.py."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from acestep_api.server.openapi.answers import ErrorDetail
from acestep_api.server.openapi.request_bodies import (
    FORM_TYPE,
    JSON_TYPE,
    MULTIPART_TYPE,
    upload_encoding,
)

# Security scheme names (components.securitySchemes, see document.py).
BEARER, AUTHORIZATION_HEADER = "bearer", "authorizationHeader"
KEY_REQUIRED = [{BEARER: []}, {AUTHORIZATION_HEADER: []}]

ERROR_DESCRIPTIONS = {
    400: "Bad input (or a body that cannot be read): the message names the field and what is allowed.",
    401: "Missing or wrong API key (only when ACESTEP_API_KEY or ACESTEP_API_KEYS_FILE is set).",
    403: "An audio path that leads outside the allowed folders, or names another request's upload.",
    404: "Not found.",
    409: "The job has already ended.",
    413: "The body, or an uploaded file, is larger than allowed (ACESTEP_MAX_UPLOAD_MB).",
    415: "A body that is neither JSON nor a form.",
    429: "Server busy: the queue is full. Retry-After says when to try again.",
    500: "The 5 Hz LM failed to load, or the job failed; the message says why.",
    503: "The request needs the 5 Hz LM, which is not loaded.",
    504: "The job did not end within ACESTEP_GENERATION_TIMEOUT; it is cancelled.",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}

AUDIO_MEDIA_TYPES = ("audio/mpeg", "audio/wav", "audio/flac", "audio/ogg", "audio/aac")
AUDIO_FILE = {
    "description": "The audio file; its type follows its extension (mp3, wav, flac, opus in ogg, aac in ADTS).",
    "content": {media_type: {"schema": {"type": "string", "format": "binary"}} for media_type in AUDIO_MEDIA_TYPES},
}
EVENT_STREAM = {
    "text/event-stream": {
        "schema": {
            "type": "string",
            "description": "With `stream: true`: server-sent events, each `data: <chat.completion.chunk JSON>`, "
                           "ending with `data: [DONE]`.",
        }
    }
}
THINKING_QUERY = {"parameters": [{
    "name": "thinking", "in": "query", "required": False, "schema": {"type": "boolean"},
    "description": "Read when the body has no fields: the LM writes the audio codes too (default true).",
}]}

FAL_WEBHOOK_QUERY = {"parameters": [{
    "name": "fal_webhook", "in": "query", "required": False, "schema": {"type": "string", "format": "uri"},
    "description": "fal's callback URL: the job's final /query_result item is POSTed there, signed per "
                   "Standard Webhooks, when it ends (docs/operations.md#webhooks).",
}]}

# The models named in request bodies; document.py puts their schemas into the components.
BODY_MODELS: dict[str, tuple[type[BaseModel], bool]] = {}


def ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


_NAMED: dict[str, type[BaseModel]] = {}


def named(model: Any) -> Any:
    """A parametrised generic model (Envelope[Queued]) as a plain subclass of it, so the
    document names its schema QueuedEnvelope rather than Envelope_Queued_."""
    generic = getattr(model, "__pydantic_generic_metadata__", None)
    if not generic or generic.get("origin") is None:
        return model
    if model.__name__ not in _NAMED:
        _NAMED[model.__name__] = type(model.__name__, (model,), {"__module__": model.__module__,
                                                                 "__doc__": generic["origin"].__doc__})
    return _NAMED[model.__name__]


def answers(model: Any, *statuses: int, description: str = "Success.", links: dict | None = None,
            more_content: dict | None = None) -> dict[int | str, dict]:
    """`responses=`: the 200 answer's model (with `links` to the operations that take its ids,
    and `more_content`: other media types it may come as) and each error status with its
    `{"detail"}` body."""
    documented: dict[int | str, dict] = {200: {"model": named(model), "description": description}} if model else {}
    if links:
        documented[200]["links"] = links
    if more_content:
        documented[200]["content"] = more_content
    for status in statuses:
        documented[status] = {"model": ErrorDetail, "description": ERROR_DESCRIPTIONS[status]}
        if status == 429:
            documented[status]["headers"] = RETRY_AFTER
    return documented


def _register(model: type[BaseModel], aliases: bool) -> dict:
    BODY_MODELS[model.__name__] = (model, aliases)
    return ref(model)


def body(json_model: type[BaseModel], form_model: type[BaseModel] | None = None,
         multipart_model: type[BaseModel] | None = None, *, aliases: bool = False,
         required: bool = False, description: str | None = None) -> dict:
    """The `requestBody` of a route that reads its body by hand (bodies.py): JSON, and the
    form encodings it takes as well. `aliases`: each official alias is a property too."""
    content = {JSON_TYPE: {"schema": _register(json_model, aliases)}}
    form_model = form_model or json_model
    content[FORM_TYPE] = {"schema": _register(form_model, aliases)}
    multipart = {"schema": _register(multipart_model or form_model, aliases)}
    if multipart_model is not None:
        multipart["encoding"] = upload_encoding()
    content[MULTIPART_TYPE] = multipart
    request_body: dict = {"required": required, "content": content}
    if description:
        request_body["description"] = description
    return {"requestBody": request_body}


def json_body(model: type[BaseModel], *, description: str | None = None) -> dict:
    """The `requestBody` of a JSON-only route that reads its body by hand."""
    BODY_MODELS[model.__name__] = (model, False)
    request_body: dict = {"required": True, "content": {JSON_TYPE: {"schema": ref(model)}}}
    if description:
        request_body["description"] = description
    return {"requestBody": request_body}


# Names the setting (a bool of Settings) that must be true for the key to guard an operation;
# document.py reads it and drops it.
GUARDED_BY = "x-acestep-guarded-by"


def key_required(*, body_token: bool = False, unless_off: str | None = None) -> dict:
    """`security` of a route behind ACESTEP_API_KEY (document.py drops it when no key is set).
    `body_token`: the route takes the body field `ai_token` instead, too. `unless_off`: the
    setting that opens the route when false ("protect_metrics")."""
    extra: dict = {"security": KEY_REQUIRED}
    if body_token:
        extra["x-acestep-body-token"] = "ai_token"
    if unless_off:
        extra[GUARDED_BY] = unless_off
    return extra


def merged(*parts: dict) -> dict:
    result: dict = {}
    for part in parts:
        result.update(part)
    return result
