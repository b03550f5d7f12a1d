"""Counts and times every HTTP answer into the app's metrics (acestep_api/metrics.py), labelled
by the route's template (`/v1/jobs/{job_id}`, never the raw path, so the label has as many
values as the app has routes) and the status. Outermost of the app's middleware, it sees the
answers the request guard gives before any route runs too."""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from acestep_api.metrics import UNMATCHED_ROUTE, ServerMetrics

# "{job_id}" in a template, as re.escape leaves it.
PATH_PARAMETER = re.compile(r"\\\{[^/]+?\\\}")


def route_template(scope: Scope) -> str:
    """The path template of the route that answered, or of the route that would have (a
    request the guard refused before routing): one of the OpenAPI document's paths, which
    lists every route, or of the routes outside it (/openapi.json, /docs, /redoc)."""
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return route.path
    path = scope["path"]
    for template, pattern in _templates(scope["app"]):
        if pattern.fullmatch(path):
            return template
    return UNMATCHED_ROUTE


def _templates(app: Any) -> list[tuple[str, re.Pattern[str]]]:
    """The app's path templates with their patterns, built on first use (read from the
    document rather than the router, whose nesting of included routers is FastAPI's own)."""
    templates = getattr(app.state, "route_templates", None)
    if templates is None:
        paths = [route.path for route in app.routes if isinstance(getattr(route, "path", None), str)]
        paths += [path for path in app.openapi().get("paths", {}) if path not in paths]
        templates = [(path, re.compile(PATH_PARAMETER.sub("[^/]+", re.escape(path)))) for path in paths]
        app.state.route_templates = templates
    return templates


class RequestMetrics:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics: ServerMetrics | None = getattr(scope["app"].state, "metrics", None) if scope["type"] == "http" else None
        if metrics is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes every handler ends as Starlette's 500

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            metrics.request_answered(scope["method"], route_template(scope), status, time.perf_counter() - started)
