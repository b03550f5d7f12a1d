"""Whether an ASGI answer has started: after its first message, an error can no longer become
an answer of its own, and only closing the connection can tell the client."""

from __future__ import annotations

from starlette.types import Message, Send


class WatchedSend:
    """`send`, noting when the answer starts."""

    def __init__(self, send: Send):
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)
