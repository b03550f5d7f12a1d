"""How `acestep-api generate` shows a task while it waits for it.

Every display takes `update(state, elapsed_seconds)` after each poll (it is the `on_update`
of `AceStepClient.wait`) and `close()` once the wait is over, however it ended.

- `ProgressBar`: a tqdm bar on a terminal. While the task waits in line it shows the queue
  position and the server's ETA; while it runs, the stage ("diffusion step 3/8") and a
  percentage from the result element's `progress`.
- `PlainLines`: the community generate_music.py's lines on stdout
  (`  Waiting for task to start... (12s)`, `  Generating... (17s)`), for pipes, logs and CI.
- `Silent`: `--quiet`.

`choose_display` draws the bar only when its stream (stderr) is a terminal, and then instead
of the plain lines: a bar redrawn in place and lines scrolling under it would garble each
other on the same screen.
"""

from __future__ import annotations

import sys
from typing import IO, Protocol

from tqdm import tqdm

from acestep_api.client.api_client import TaskState

BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {elapsed}"


class Display(Protocol):
    def update(self, state: TaskState, elapsed: float) -> None: ...

    def close(self) -> None: ...


def is_waiting(state: TaskState) -> bool:
    """Not started yet: unknown to the server so far, or queued (our server also reports a
    place in line; the official one only the stage "queued")."""
    return not state.known or state.queue_position is not None or state.stage == "queued"


def format_seconds(seconds: float) -> str:
    """A short human duration: 7s, 1m 05s, 2h 03m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def describe(state: TaskState) -> str:
    """The bar's label for one poll."""
    if state.finished:
        return "Done" if state.succeeded else "Failed"
    if not state.known:
        return "Waiting for the server to list the task"
    if is_waiting(state):
        parts = []
        if state.queue_position is not None:
            parts.append(f"position {state.queue_position}")
        eta = state.eta_seconds
        if isinstance(eta, (int, float)) and not isinstance(eta, bool) and eta >= 0:
            parts.append(f"ETA ~{format_seconds(eta)}")
        return "Queued" + (f": {', '.join(parts)}" if parts else "")
    stage = state.stage
    return f"Generating: {stage}" if stage and stage != "running" else "Generating"


class Silent:
    def update(self, state: TaskState, elapsed: float) -> None:
        pass

    def close(self) -> None:
        pass


class PlainLines:
    """One line per poll while the task is not finished, as the community CLI prints them."""

    def __init__(self, out: IO[str]):
        self.out = out

    def update(self, state: TaskState, elapsed: float) -> None:
        if state.finished:
            return
        what = "Waiting for task to start..." if is_waiting(state) else "Generating..."
        print(f"  {what} ({int(elapsed)}s)", file=self.out, flush=True)

    def close(self) -> None:
        pass


class ProgressBar:
    """A percentage bar redrawn in place on `stream`; created at the first poll so nothing is
    drawn before there is something to show."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self._bar: tqdm | None = None

    def update(self, state: TaskState, elapsed: float) -> None:
        label = describe(state)
        if self._bar is None:
            self._bar = tqdm(total=100, file=self.stream, desc=label, bar_format=BAR_FORMAT,
                             dynamic_ncols=True, leave=True)
        percent = 100.0 if state.succeeded else min(max(state.progress, 0.0), 1.0) * 100
        self._bar.n = round(percent, 1)
        self._bar.set_description_str(label, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()  # leaves the last state on screen and ends its line
            self._bar = None


def stream_is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def choose_display(quiet: bool, *, stream: IO[str] | None = None, out: IO[str] | None = None,
                   bar: bool | None = None) -> Display:
    """The display for one wait: nothing when `quiet`; the bar on `stream` (stderr) when it is a
    terminal, or when `bar` forces it; else plain lines on `out` (stdout)."""
    if quiet:
        return Silent()
    stream = sys.stderr if stream is None else stream
    out = sys.stdout if out is None else out
    if bar if bar is not None else stream_is_terminal(stream):
        return ProgressBar(stream)
    return PlainLines(out)
