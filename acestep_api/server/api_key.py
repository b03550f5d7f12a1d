"""Reading a credential from a request and finding the key it is (key_ring.py holds the keys);
shared by the route dependencies (auth.py), the request guard that checks the header before
any body is read, and the multipart reader that wants a valid ai_token before it writes a file."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import Scope

from acestep_api.server.key_file import KeySpec
from acestep_api.server.key_ring import KeyRing

INVALID_API_KEY = "Invalid API key"
INVALID_AI_TOKEN = "Invalid ai_token"
# "Bearer <key>" as the official clients send it, "Key <key>" as fal clients do, or the raw key.
HEADER_SCHEMES = ("Bearer ", "Key ")


def key_ring(scope: Scope) -> KeyRing:
    return scope["app"].state.keys


def header_token(headers: Mapping[str, str]) -> str:
    header = headers.get("authorization", "")
    return next((header[len(scheme):] for scheme in HEADER_SCHEMES if header.startswith(scheme)), header)


def header_key(headers: Mapping[str, str], ring: KeyRing) -> KeySpec | None:
    """The key the request's Authorization header holds; None without one or for a wrong one."""
    if not headers.get("authorization"):
        return None
    return ring.identify(header_token(headers))
