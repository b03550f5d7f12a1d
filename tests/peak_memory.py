"""How much memory a block of code made the test process take at its peak."""

from __future__ import annotations

import threading
import time
from pathlib import Path


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{key} missing from /proc/self/status")


class PeakRss:
    """The process's peak resident memory while the block runs, in MiB above where it began.

    The kernel's high-water mark (VmHWM) is reset through /proc/self/clear_refs; where that
    is not allowed, a thread samples VmRSS every millisecond instead."""

    def __enter__(self) -> PeakRss:
        self.growth_mb = 0.0
        self._stop = threading.Event()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._thread = None
        except OSError:
            self._samples = [_status_kb("VmRSS")]
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self._start_kb = _status_kb("VmRSS")
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._samples.append(_status_kb("VmRSS"))
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            peak = _status_kb("VmHWM")
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._samples)
        self.growth_mb = (peak - self._start_kb) / 1024
