"""Waking an asyncio task from any thread: the job queue's worker and the webhook sender are
woken by request handlers and by the engine thread alike."""

from __future__ import annotations

import asyncio


def set_from_any_thread(loop: asyncio.AbstractEventLoop | None, event: asyncio.Event | None) -> None:
    """Set `event`, which belongs to `loop`: directly on that loop's thread, else through the
    loop (an asyncio.Event is not thread-safe). Nothing when either is missing or the loop is closed."""
    if loop is None or event is None or loop.is_closed():
        return
    try:
        same_loop = asyncio.get_running_loop() is loop
    except RuntimeError:
        same_loop = False
    if same_loop:
        event.set()
    else:
        loop.call_soon_threadsafe(event.set)
