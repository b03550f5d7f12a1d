"""What a key may do per request, checked once the request's key is known and before its body
is read when the key came in the Authorization header: the routes it may use (403) and its
requests_per_minute (429 with Retry-After).

The rate is counted by the `limits` library's moving window in this process's memory: each
replica counts its own requests. The daily quotas and max_waiting, which need the job table,
are in services/key_quotas.py.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

from fastapi import HTTPException
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.types import Scope

from acestep_api.server.key_file import KeySpec

# The request.state attribute holding the KeySpec the request was admitted with.
CALLER = "api_key"


class RefusalCounter(Protocol):
    def key_refused(self, key: str, limit: str) -> None: ...


class KeyRefused(HTTPException):
    """A key over one of its limits (429, with Retry-After) or outside what it may use (403)."""

    def __init__(self, key: KeySpec, limit: str, status_code: int, detail: str, retry_after: float | None = None,
                 counter: RefusalCounter | None = None):
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.key_name, self.limit = key.name, limit
        if counter is not None:
            counter.key_refused(key.name, limit)


def over_limit(key: KeySpec, limit: str, amount: float, retry_after: float, counter: RefusalCounter | None,
               what: str = "reached") -> KeyRefused:
    seconds = max(1, math.ceil(retry_after))
    return KeyRefused(key, limit, 429, f"{limit} limit of {amount:g} {what} for key {key.name!r}; "
                                       f"retry after {seconds} seconds", seconds, counter)


class RequestLimits:
    def __init__(self, counter: RefusalCounter | None = None):
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self.counter = counter

    def check(self, key: KeySpec, path: str) -> None:
        """Raise KeyRefused when `key` may not use `path` or has used up its minute."""
        if not key.may_use_route(path):
            raise KeyRefused(key, "routes", 403, f"key {key.name!r} may not use the route {path}; "
                                                 f"its routes: {', '.join(key.routes) or 'none'}",
                             counter=self.counter)
        if key.requests_per_minute is None:
            return
        item = RateLimitItemPerMinute(key.requests_per_minute)
        if not self._limiter.hit(item, key.name):
            reset = self._limiter.get_window_stats(item, key.name).reset_time
            raise over_limit(key, "requests_per_minute", key.requests_per_minute, reset - time.time(), self.counter)


def admit(scope: Scope, key: KeySpec) -> None:
    """Check `key`'s per-request limits for this request, once, and record it as the caller
    (a request whose header key the guard admitted is not counted again by its route)."""
    state = scope.setdefault("state", {})
    admitted = state.get(CALLER)
    if admitted is not None and admitted.name == key.name:
        return
    scope["app"].state.request_limits.check(key, scope["path"])
    state[CALLER] = key


def caller(scope: Scope) -> KeySpec | None:
    """The key this request was admitted with; None without auth."""
    return scope.get("state", {}).get(CALLER)
