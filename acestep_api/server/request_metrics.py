"""Counts and times every HTTP answer into the app's metrics (acestep_api/metrics.py), labelled
by the route's template (`/v1/jobs/{job_id}`, never the raw path, so the label has as many
values as the app has routes) and the status. Outermost of the app's middleware, it sees the
answers the request guard gives before any route runs too."""

from __future__ import annotations

import time

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from acestep_api.metrics import UNMATCHED_ROUTE, ServerMetrics


def route_template(scope: Scope) -> str:
    """The path template of the route that answered, or that would have (a request refused
    before routing, a method the route does not take)."""
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return route.path
    partial = None
    for candidate in scope["app"].router.routes:
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return candidate.path
        if match is Match.PARTIAL and partial is None:
            partial = candidate.path
    return partial or UNMATCHED_ROUTE


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
