"""The OpenAPI document of a running server, and the routes that serve it.

It is built once per app, from the routes' decorators plus the request-body models they name
(route_docs.BODY_MODELS). It says what this server does: with ACESTEP_API_KEY unset the
operations carry no security requirement; set, they name the two header schemes. With
ACESTEP_PROTECT_DOCS (default true) and a key set, /openapi.json, /docs and /redoc need the
key too, so an open port does not hand out the API's map. An operation that a setting opens
(GET /metrics, ACESTEP_PROTECT_METRICS) names no security when that setting is false.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from pydantic.json_schema import models_json_schema

from acestep_api.server.auth import require_api_key
from acestep_api.server.openapi.request_bodies import with_aliases
from acestep_api.server.openapi.route_docs import AUTHORIZATION_HEADER, BEARER, BODY_MODELS, GUARDED_BY, RETRY_AFTER
from acestep_api.settings import Settings

OPENAPI_PATH, DOCS_PATH, REDOC_PATH = "/openapi.json", "/docs", "/redoc"
DESCRIPTION = """\
ACE-Step 1.5 music generation, speaking the official ACE-Step REST API.

Success answers of the official routes are the envelope `{data, code, error, timestamp, extra}`;
errors are `{"detail": "<message>"}` with the HTTP status, the message naming the field and what
is allowed. The request-body routes take JSON, urlencoded and multipart bodies alike, with the
official aliases of each field. {auth}"""
AUTH_ON = ("Auth is on: send the key as `Authorization: Bearer <key>`, `Authorization: Key <key>` or the "
           "bare key; operations marked `x-acestep-body-token` also take it as the body field `ai_token`.")
AUTH_OFF = "Auth is off on this server (neither ACESTEP_API_KEY nor ACESTEP_API_KEYS_FILE is set)."
# What a key of ACESTEP_API_KEYS_FILE adds to every operation that needs a key.
KEY_LIMIT_ANSWERS = {
    "403": "This key may not use this route, or the DiT model the request names; the message names it.",
    "429": "This key is over one of its limits (requests_per_minute, jobs_per_day, audio_seconds_per_day, "
           "max_waiting); the message names it, Retry-After says when to try again.",
}
ERROR_SCHEMA = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}}
SECURITY_SCHEMES = {
    BEARER: {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>`."},
    AUTHORIZATION_HEADER: {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "The key as it is, or fal's `Key <key>`.",
    },
}


def operation_id(route: APIRoute) -> str:
    """The route function's name: short, stable ids that the links between operations name."""
    return route.name


def _body_schemas() -> dict[str, dict]:
    models = [(model, "validation") for model, _ in BODY_MODELS.values()]
    _, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas = definitions.get("$defs", {})
    for name, (_, aliases) in BODY_MODELS.items():
        if aliases:
            with_aliases(schemas[name])
    return schemas


def build_document(app: FastAPI, settings: Settings) -> dict:
    auth_on = settings.auth_enabled
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=DESCRIPTION.replace("{auth}", AUTH_ON if auth_on else AUTH_OFF),
        routes=app.routes,
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, schema in _body_schemas().items():
        schemas.setdefault(name, schema)
    components["securitySchemes"] = SECURITY_SCHEMES
    for operations in document["paths"].values():
        for operation in operations.values():
            guard = operation.pop(GUARDED_BY, None)
            if not auth_on or (guard and not getattr(settings, guard)):
                operation.pop("security", None)
                operation.pop("x-acestep-body-token", None)
            elif settings.api_keys_file is not None and "security" in operation:
                _add_key_limit_answers(operation)
    return document


def _add_key_limit_answers(operation: dict) -> None:
    """The 403 and 429 a key's limits may give, on an operation that needs a key."""
    responses = operation.setdefault("responses", {})
    for status, description in KEY_LIMIT_ANSWERS.items():
        if status in responses:
            responses[status]["description"] += f" Or: {description}"
        else:
            responses[status] = {"description": description, "content": ERROR_SCHEMA,
                                 **({"headers": RETRY_AFTER} if status == "429" else {})}


def install_docs(app: FastAPI, settings: Settings) -> None:
    """Serve the document and its two viewers; build the app with openapi_url, docs_url and
    redoc_url None so FastAPI's unguarded ones are not there."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app, settings)
        return app.openapi_schema

    app.openapi = openapi
    guard = [Depends(require_api_key)] if settings.protect_docs else []

    @app.get(OPENAPI_PATH, include_in_schema=False, dependencies=guard)
    async def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get(DOCS_PATH, include_in_schema=False, dependencies=guard)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=OPENAPI_PATH, title=f"{app.title} - Swagger UI")

    @app.get(REDOC_PATH, include_in_schema=False, dependencies=guard)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=OPENAPI_PATH, title=f"{app.title} - ReDoc")
