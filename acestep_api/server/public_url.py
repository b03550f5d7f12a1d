"""The absolute base URL clients reach this server at, for answers that must carry a full URL
(a client behind RunPod's proxy, https://<POD_ID>-8000.proxy.runpod.net, downloads it as is).

In order: `settings.public_url` when set; else the request's own scheme and Host, with the
forwarding headers of a trusted proxy (X-Forwarded-Proto / X-Forwarded-Host, then the standard
`Forwarded` header's proto= / host=) taking their place. Forwarding headers from any other peer
are ignored: otherwise any client could point the URLs it is given somewhere else.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from starlette.requests import Request

from acestep_api.settings import Settings

SCHEMES = ("http", "https")
# host, host:port, [IPv6] or [IPv6]:port; anything else in a header is not used.
HOST_PATTERN = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")
FORWARDED_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*')
# uvicorn, for a trusted proxy, replaces the peer with the client named in X-Forwarded-For
# and gives it port 0, which no real TCP peer has.
RESOLVED_BY_SERVER_PORT = 0


def peer_is_trusted(peer: tuple[str, int] | None, allowed: str) -> bool:
    """Whether the direct peer may set the forwarding headers. `allowed` is
    `forwarded_allow_ips`: "*" for any peer, else a comma list of IPs or networks.

    Under `acestep-api serve`, uvicorn has already applied a trusted proxy's X-Forwarded-For
    (same setting), so the peer the app sees is then the proxy's client, with port 0: that
    too means the connection came from a trusted proxy.
    """
    entries = [entry.strip() for entry in allowed.split(",") if entry.strip()]
    if "*" in entries:
        return True
    if peer is None:
        return False
    host, port = peer
    if port == RESOLVED_BY_SERVER_PORT:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host in entries  # e.g. a unix socket name
    for entry in entries:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _first(value: str | None) -> str | None:
    """The first of a comma list: the value the client-facing proxy wrote."""
    if not value:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def forwarded_fields(header: str | None) -> dict[str, str]:
    """proto= and host= (and any other parameter) of the first element of an RFC 7239
    `Forwarded` header, names lowercased, quotes removed."""
    fields: dict[str, str] = {}
    if not header:
        return fields
    first = header.split(",", 1)[0]
    for pair in first.split(";"):
        match = FORWARDED_PARAM.fullmatch(pair)
        if match is None:
            continue
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        fields.setdefault(name, value)
    return fields


def forwarded_origin(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(scheme, host) a proxy says the client used; None where it says nothing usable."""
    standard = forwarded_fields(headers.get("forwarded"))
    scheme = _first(headers.get("x-forwarded-proto")) or standard.get("proto")
    host = _first(headers.get("x-forwarded-host")) or standard.get("host")
    scheme = scheme.lower() if scheme and scheme.lower() in SCHEMES else None
    host = host if host and HOST_PATTERN.fullmatch(host) else None
    return scheme, host


def public_base_url(request: Request, settings: Settings) -> str:
    """Scheme, host and mount path clients reach us at, without a trailing slash."""
    if settings.public_url:
        return settings.public_url
    scheme, host = request.url.scheme, request.url.netloc
    if peer_is_trusted(request.client and (request.client.host, request.client.port), settings.forwarded_allow_ips):
        forwarded_scheme, forwarded_host = forwarded_origin(request.headers)
        scheme, host = forwarded_scheme or scheme, forwarded_host or host
    root_path = request.scope.get("root_path", "").rstrip("/")
    return f"{scheme}://{host}{root_path}"


def absolute_url(request: Request, settings: Settings, root_relative: str) -> str:
    """`root_relative` ("/v1/audio?path=...") as an absolute URL; absolute ones pass through."""
    if root_relative.startswith(("http://", "https://")):
        return root_relative
    return public_base_url(request, settings) + root_relative
