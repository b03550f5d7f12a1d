"""Comparing a credential with the configured key; shared by the route dependencies
(auth.py), the request guard that checks the header before any body is read, and the
multipart reader that wants a valid ai_token before it writes a file."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

INVALID_API_KEY = "Invalid API key"
INVALID_AI_TOKEN = "Invalid ai_token"
# "Bearer <key>" as the official clients send it, "Key <key>" as fal clients do, or the raw key.
HEADER_SCHEMES = ("Bearer ", "Key ")


def matches(given: str, key: str) -> bool:
    # Constant time, so the answer's timing tells no one how much of a guess was right;
    # surrogatepass so that no text, however broken, makes the comparison raise.
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), key.encode("utf-8", "surrogatepass"))


def header_token(headers: Mapping[str, str]) -> str:
    header = headers.get("authorization", "")
    return next((header[len(scheme):] for scheme in HEADER_SCHEMES if header.startswith(scheme)), header)


def header_matches(headers: Mapping[str, str], key: str) -> bool:
    """Whether the request carries an Authorization header holding the key."""
    return bool(headers.get("authorization")) and matches(header_token(headers), key)
