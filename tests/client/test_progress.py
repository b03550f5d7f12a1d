"""The progress display, fed the TaskStates a wait reports, writing to in-memory streams."""

from __future__ import annotations

import io

import pytest

from acestep_api.client.api_client import TaskState
from acestep_api.client.progress import (
    PlainLines,
    ProgressBar,
    Silent,
    choose_display,
    describe,
    format_seconds,
)


class TerminalIO(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def element(**fields) -> dict:
    return {"file": "", "wave": "", "status": 0, "error": None, **fields}


UNKNOWN = TaskState("t", 0, [], known=False)
QUEUED = TaskState("t", 0, [element(progress=0.0, stage="queued", queue_position=2, eta_seconds=6.2)], "queued")
RUNNING = TaskState("t", 0, [element(progress=0.45, stage="diffusion step 3/8", queue_position=0)],
                    "diffusion step 3/8")
SUCCEEDED = TaskState("t", 1, [element(status=1, progress=1.0, stage="succeeded", file="/v1/audio?path=%2Fa.mp3")])
FAILED = TaskState("t", 2, [element(status=2, progress=0.0, stage="failed", error="out of memory")])
# What the official server reports: no queue position or ETA, just the stage.
OFFICIAL_QUEUED = TaskState("t", 0, [element(progress=0.0, stage="queued")], "12:00:01 | INFO | loading")
OFFICIAL_RUNNING = TaskState("t", 0, [element(progress=0.3, stage="running")], "12:00:02 | INFO | step")


def test_choose_display_follows_quiet_and_the_terminal():
    terminal, out = TerminalIO(), io.StringIO()
    assert isinstance(choose_display(True, stream=terminal, out=out), Silent)
    assert isinstance(choose_display(False, stream=terminal, out=out), ProgressBar)
    assert isinstance(choose_display(False, stream=io.StringIO(), out=out), PlainLines)
    assert isinstance(choose_display(False, stream=io.StringIO(), out=out, bar=True), ProgressBar)
    assert isinstance(choose_display(False, stream=terminal, out=out, bar=False), PlainLines)
    closed = io.StringIO()
    closed.close()  # isatty on a closed stream raises; that is no terminal
    assert isinstance(choose_display(False, stream=closed, out=out), PlainLines)


def test_plain_lines_are_the_community_clis():
    out = io.StringIO()
    display = PlainLines(out)
    for state, elapsed in ((UNKNOWN, 0.2), (QUEUED, 1.9), (OFFICIAL_QUEUED, 2.0), (RUNNING, 7.5),
                           (OFFICIAL_RUNNING, 8.0), (SUCCEEDED, 12.0)):
        display.update(state, elapsed)
    display.close()
    assert out.getvalue().splitlines() == [
        "  Waiting for task to start... (0s)",
        "  Waiting for task to start... (1s)",
        "  Waiting for task to start... (2s)",
        "  Generating... (7s)",
        "  Generating... (8s)",
    ]  # nothing once the task has ended


def test_bar_shows_place_in_line_then_stage_and_percentage():
    terminal, out = TerminalIO(), io.StringIO()
    display = choose_display(False, stream=terminal, out=out)
    display.update(QUEUED, 0.0)
    queued = terminal.getvalue()
    assert "Queued: position 2, ETA ~6s" in queued and "  0%|" in queued
    display.update(RUNNING, 3.0)
    running = terminal.getvalue()[len(queued):]
    assert "Generating: diffusion step 3/8" in running and " 45%|" in running
    assert "Queued" not in running
    display.update(SUCCEEDED, 5.0)
    display.close()
    written = terminal.getvalue()
    assert "Done 100%|" in written and written.endswith("\n")
    assert "\n" not in written[:-1]  # redrawn in place on one line
    assert out.getvalue() == ""  # the bar replaces the plain lines


def test_bar_on_a_failed_task_and_on_official_shapes():
    terminal = TerminalIO()
    bar = ProgressBar(terminal)
    bar.update(OFFICIAL_QUEUED, 0.0)
    bar.update(OFFICIAL_RUNNING, 1.0)
    bar.update(FAILED, 2.0)
    bar.close()
    bar.close()  # closing twice is harmless (an interrupted wait closes early)
    written = terminal.getvalue()
    assert "Queued   0%" in written and "Generating  30%" in written and "Failed" in written


def test_nothing_is_drawn_before_the_first_poll_nor_when_quiet():
    terminal = TerminalIO()
    ProgressBar(terminal).close()
    quiet = Silent()
    quiet.update(RUNNING, 1.0)
    quiet.close()
    assert terminal.getvalue() == ""


@pytest.mark.parametrize(("state", "label"), [
    (UNKNOWN, "Waiting for the server to list the task"),
    (QUEUED, "Queued: position 2, ETA ~6s"),
    (TaskState("t", 0, [element(stage="queued", queue_position=3)]), "Queued: position 3"),
    (OFFICIAL_QUEUED, "Queued"),
    (RUNNING, "Generating: diffusion step 3/8"),
    (OFFICIAL_RUNNING, "Generating"),
    (SUCCEEDED, "Done"),
    (FAILED, "Failed"),
])
def test_labels(state, label):
    assert describe(state) == label


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (6.4, "6s"), (59.6, "1m 00s"), (65, "1m 05s"), (3599, "59m 59s"), (7380, "2h 03m"), (-3, "0s"),
])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text
