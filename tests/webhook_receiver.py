"""A webhook receiver for tests: a real HTTP server on loopback in a thread of the test process,
recording each POST (its headers and body) and answering the statuses it is told to."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: list[int] = []  # statuses to answer, first to last; 200 once used up
        self.always: int | None = None  # a status for every request, before `answers`
        self._lock = threading.Lock()
        self.url = ""

    def record(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            self.received.append(Received(path, headers, body))
            if self.always is not None:
                return self.always
            return self.answers.pop(0) if self.answers else 200

    async def arrived(self, count: int, timeout: float = 30.0) -> list[Received]:
        """The first `count` requests once they have come (the event loop keeps running: the
        server under test sends from it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            await asyncio.sleep(0.02)
        raise AssertionError(f"the receiver got {len(self.received)} requests, not {count}, within {timeout}s")


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status = receiver.record(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
