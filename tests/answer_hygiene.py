"""The error-hygiene rule, checked on every answer the suite receives over HTTP.

No answer may show a client a traceback, a Python exception class name, or a server path
under a folder the server keeps (uploads, audio, the job database): those are internals, and
a path tells an attacker where things live. Success answers of the official API do carry the
audio files' server paths (`file`, `/v1/audio?path=...`, as the official server does), so only
error answers are read whole; in success answers, the `error` texts (the envelope's and a
job's) are read.

Installed by tests/conftest.py around httpx's send, so in-process ASGI clients, real server
processes and the API client all pass through it.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

import httpx

TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+")
# CamelCase names ending the way Python's exception classes do: ValueError, OverflowError,
# PydanticSerializationError, LibsndfileError, JobCancelled is not one (a word of ours).
EXCEPTION_NAME = re.compile(r"\b(?:[A-Z][a-z0-9]+){1,6}(?:Error|Exception|Warning)\b|\bKeyboardInterrupt\b|\bStopIteration\b")
# Folders of a server's output directory: a path naming one is the server's own.
SERVER_PATH = re.compile(r"(?:/[^\s'\"/]+)+/(?:uploads|api_audio)/|[^\s'\"]*jobs\.sqlite3")


def _error_texts(value: Any) -> Iterable[str]:
    """The `error` / `detail` / `message` strings anywhere in a JSON answer."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("error", "detail", "message", "error_message") and isinstance(item, str):
                yield item
            elif key == "result" and isinstance(item, str) and item[:1] in "[{":
                try:
                    yield from _error_texts(json.loads(item))
                except ValueError:
                    pass
            else:
                yield from _error_texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _error_texts(item)


def problems(status_code: int, text: str) -> list[str]:
    """What in this answer breaks the rule (empty when nothing does)."""
    if status_code >= 400:
        texts = [text]
    else:
        try:
            texts = list(_error_texts(json.loads(text)))
        except ValueError:
            return []
    found = []
    for item in texts:
        for name, pattern in (("a traceback", TRACEBACK), ("an exception class name", EXCEPTION_NAME),
                              ("a server path", SERVER_PATH)):
            match = pattern.search(item)
            if match:
                found.append(f"{name} ({match.group(0)!r}) in a {status_code} answer: {item[:300]}")
    return found


class AnswerLog:
    """Collects rule breaks between `take` calls (one test's worth)."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def inspect(self, request: httpx.Request, response: httpx.Response) -> None:
        if not hasattr(response, "_content"):
            return  # a streamed answer its reader has not read: nothing to look at yet
        content_type = response.headers.get("content-type", "")
        if not (content_type.startswith("application/json") or content_type.startswith("text/")):
            return
        try:
            text = response.text
        except (httpx.ResponseNotRead, UnicodeDecodeError):
            return
        for problem in problems(response.status_code, text):
            self.found.append(f"{request.method} {request.url.path}: {problem}")

    def take(self) -> list[str]:
        found, self.found = self.found, []
        return found


def install(log: AnswerLog) -> None:
    """Wrap httpx's sync and async send so every answer is inspected once it is read."""
    sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

    def send(self, request, *args, **kwargs):
        response = sync_send(self, request, *args, **kwargs)
        log.inspect(request, response)
        return response

    async def asend(self, request, *args, **kwargs):
        response = await async_send(self, request, *args, **kwargs)
        log.inspect(request, response)
        return response

    httpx.Client.send, httpx.AsyncClient.send = send, asend


# The suite's one log, installed once by tests/conftest.py.
SUITE_LOG = AnswerLog()
