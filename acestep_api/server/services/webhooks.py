"""A request's callback URL (`webhook_url`, or `webhook`), checked before its job is queued:
the server must have a signing secret, and the URL must pass webhooks/targets.py (scheme,
length, public addresses only unless ACESTEP_WEBHOOK_ALLOW_PRIVATE, not this server). A refusal
is a 400 naming the field."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from acestep_api.dialects.coercion import InvalidField
from acestep_api.settings import Settings
from acestep_api.webhooks.targets import Endpoints, RefusedTarget, check_target, own_endpoints

# The names a body may give the callback URL under, in lookup order.
WEBHOOK_FIELDS = ("webhook_url", "webhookUrl", "webhook")
FAL_WEBHOOK_FIELD = "fal_webhook"  # fal's own name, a query parameter of the request


def no_secret(field: str) -> str:
    return (f"{field} cannot be used: this server has no webhook secret (ACESTEP_WEBHOOK_SECRET), "
            "and it never sends unsigned webhooks")


def server_endpoints(settings: Settings) -> Endpoints:
    """Where this server answers by its settings: its bind address and port, and its public URL."""
    hosts: list[tuple[str | None, int | None]] = [(settings.api_host, settings.api_port)]
    if settings.public_url:
        hosts.append(_host_port(settings.public_url))
    return own_endpoints(hosts)


def _host_port(url: str) -> tuple[str | None, int | None]:
    try:
        parts = urllib.parse.urlsplit(url)
        return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None, None


def _check(url: object, allow_private: bool, static: Endpoints, base_url: str) -> str:
    """check_target against the server's endpoints and the host and port this request reached
    it at (both resolved here: this runs off the event loop)."""
    own = static | own_endpoints([_host_port(base_url)])
    return check_target(url, allow_private=allow_private, own=own).url


async def accepted_webhook(fields: Mapping, request: Request, settings: Settings,
                           names: Sequence[str] = WEBHOOK_FIELDS) -> str | None:
    """The checked callback URL the fields name (the first of `names` given), or None.
    InvalidField (a 400) when the server has no secret or the URL is refused."""
    found = next(((name, fields.get(name)) for name in names if fields.get(name) not in (None, "")), None)
    if found is None:
        return None
    name, value = found
    if settings.webhook_secret is None:
        raise InvalidField(name, no_secret(name))
    static = getattr(request.app.state, "webhook_endpoints", frozenset())
    try:
        # Resolving host names blocks: off the event loop.
        return await run_in_threadpool(_check, value, settings.webhook_allow_private, static, str(request.base_url))
    except RefusedTarget as refused:
        raise InvalidField(name, f"{name} {refused}") from None
