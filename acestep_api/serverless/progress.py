"""The engine's progress callback for a serverless job: throttled updates to the platform,
and the job's deadline.

The engine runs in the handler's thread and reports at each stage start and after every
diffusion step; raising from the callback is how a job past its deadline is stopped there.
"""

from __future__ import annotations

import time
from typing import Callable


class GenerationTimeout(Exception):
    def __init__(self, timeout_seconds: float):
        super().__init__(f"Generation timeout after {timeout_seconds:g} seconds")
        self.timeout_seconds = timeout_seconds


def progress_message(fraction: float, stage: str) -> str:
    return f"{stage} ({round(fraction * 100)}%)"


class ProgressReporter:
    """Called as `reporter(fraction, stage)`. Sends at most one message per `interval` seconds
    (the first at once) and raises GenerationTimeout once `timeout_seconds` have passed since
    `start()`. The final report (fraction 1) never raises: the audio is written by then."""

    def __init__(
        self,
        send: Callable[[str], None],
        interval: float,
        timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.send = send
        self.interval = interval
        self.timeout_seconds = timeout_seconds
        self.clock = clock
        self.deadline = clock() + timeout_seconds
        self._last_sent: float | None = None
        self._last_message = ""

    def start(self) -> None:
        """Start the deadline now (time spent before, e.g. loading the models, is not counted)."""
        self.deadline = self.clock() + self.timeout_seconds

    def __call__(self, fraction: float, stage: str) -> None:
        now = self.clock()
        if fraction < 1.0 and now >= self.deadline:
            raise GenerationTimeout(self.timeout_seconds)
        message = progress_message(fraction, stage)
        due = self._last_sent is None or now - self._last_sent >= self.interval
        if due and message != self._last_message:
            self._last_sent, self._last_message = now, message
            self.send(message)
