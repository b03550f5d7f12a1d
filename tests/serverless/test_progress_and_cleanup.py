"""The progress callback (throttling, the deadline) and the pruning of old audio files."""

from __future__ import annotations

import os
import time

import pytest

from acestep_api.serverless.cleanup import expired_files, prune_audio
from acestep_api.serverless.progress import GenerationTimeout, ProgressReporter, progress_message


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reporter(interval: float = 2.0, timeout: float = 60.0):
    clock, sent = Clock(), []
    return ProgressReporter(sent.append, interval, timeout, clock=clock), clock, sent


def test_message_has_stage_and_percent():
    assert progress_message(0.475, "diffusion step 3/8") == "diffusion step 3/8 (48%)"
    assert progress_message(1.0, "done") == "done (100%)"


def test_first_report_is_sent_then_at_most_one_per_interval():
    report, clock, sent = reporter(interval=2.0)
    report(0.1, "diffusion step 0/8")
    clock.now += 0.5
    report(0.2, "diffusion step 1/8")
    clock.now += 1.0
    report(0.3, "diffusion step 2/8")
    assert sent == ["diffusion step 0/8 (10%)"]
    clock.now += 0.5  # 2 s after the first message
    report(0.4, "diffusion step 3/8")
    assert sent == ["diffusion step 0/8 (10%)", "diffusion step 3/8 (40%)"]


def test_the_same_message_is_not_sent_twice():
    report, clock, sent = reporter(interval=0.0)
    report(0.02, "text encoding")
    report(0.02, "text encoding")
    report(0.1, "diffusion step 0/8")
    assert sent == ["text encoding (2%)", "diffusion step 0/8 (10%)"]


def test_past_the_deadline_the_next_report_raises():
    report, clock, sent = reporter(timeout=30.0)
    report(0.1, "diffusion step 0/8")
    clock.now += 29.9
    report(0.2, "diffusion step 1/8")
    clock.now += 0.1
    with pytest.raises(GenerationTimeout) as caught:
        report(0.3, "diffusion step 2/8")
    assert str(caught.value) == "Generation timeout after 30 seconds"


def test_the_final_report_never_raises():
    report, clock, sent = reporter(timeout=1.0)
    clock.now += 5
    report(1.0, "done")  # the files are written: the job is complete
    assert sent == ["done (100%)"]


def test_start_restarts_the_deadline():
    report, clock, sent = reporter(timeout=10.0)
    clock.now += 60  # e.g. loading the models
    report.start()
    report(0.1, "text encoding")
    clock.now += 10
    with pytest.raises(GenerationTimeout, match="after 10 seconds"):
        report(0.2, "diffusion step 1/8")


def test_fractional_timeouts_are_worded_as_given():
    assert str(GenerationTimeout(0.5)) == "Generation timeout after 0.5 seconds"


# --- Pruning ---------------------------------------------------------------------------------

def test_only_files_older_than_the_retention_are_removed(tmp_path):
    old, new = tmp_path / "old.mp3", tmp_path / "new.mp3"
    old.write_bytes(b"a")
    new.write_bytes(b"b")
    (tmp_path / "folder").mkdir()
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    assert expired_files(tmp_path, 86400) == [str(old)]
    assert prune_audio(tmp_path, retention_days=1) == [str(old)]
    assert not old.exists() and new.exists() and (tmp_path / "folder").is_dir()


def test_zero_retention_keeps_everything(tmp_path):
    old = tmp_path / "old.mp3"
    old.write_bytes(b"a")
    os.utime(old, (0, 0))
    assert prune_audio(tmp_path, retention_days=0) == []
    assert old.exists()


@pytest.mark.parametrize("make", ["missing", "file"])
def test_a_missing_or_odd_folder_prunes_nothing(tmp_path, make):
    folder = tmp_path / "api_audio"
    if make == "file":
        folder.write_bytes(b"not a folder")
    assert prune_audio(folder, retention_days=1) == []
