"""A real demo server whose engine kills the process with SIGSEGV on one prompt: a poison job.

    python -m tests.e2e.crashing_server --port PORT --output-dir DIR

The engine is the demo one, wrapped: the prompt CRASH_PROMPT reports progress, waits until the
test creates GO_FILE in the output folder (so the test can queue other jobs behind it first),
notes the attempt in ATTEMPTS_FILE and then dies as a segfault in native code would. Every
other prompt is generated normally.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

CRASH_PROMPT = "this prompt crashes the server"
GO_FILE = "crash-now"
ATTEMPTS_FILE = "crash-attempts"
GO_WAIT_SECONDS = 120.0


class CrashingEngine:
    def __init__(self, engine, output_dir: Path):
        self._engine = engine
        self._output_dir = output_dir

    def __getattr__(self, name):
        return getattr(self._engine, name)  # everything but generate is the demo engine's

    def generate(self, request, progress):
        if request.prompt != CRASH_PROMPT:
            return self._engine.generate(request, progress)
        with open(self._output_dir / ATTEMPTS_FILE, "a") as attempts:
            attempts.write(f"{os.getpid()}\n")
        progress(0.05, "about to crash")
        deadline = time.monotonic() + GO_WAIT_SECONDS
        while not (self._output_dir / GO_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGSEGV)
        raise AssertionError("unreachable: SIGSEGV ends the process")


def main() -> None:
    import uvicorn

    from acestep_api.cli import use_demo_checkpoints
    from acestep_api.server.app import create_app, load_engine
    from acestep_api.settings import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    args = parser.parse_args()
    settings = use_demo_checkpoints(Settings(_env_file=None, output_dir=args.output_dir, api_port=args.port))
    engine = CrashingEngine(load_engine(settings), args.output_dir)
    uvicorn.run(create_app(settings, engine=engine), host="127.0.0.1", port=args.port, workers=1)


if __name__ == "__main__":
    main()
