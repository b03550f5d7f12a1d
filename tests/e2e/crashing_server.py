"""A real demo server whose engine kills its own process on some prompts: poison jobs.

    python -m tests.e2e.crashing_server --port PORT --output-dir DIR [--fake-kernel ROOT]

The engine is the demo one, wrapped: the prompt CRASH_PROMPT reports progress, waits until the
test creates GO_FILE in the output folder (so the test can queue other jobs behind it first),
notes the attempt in ATTEMPTS_FILE and then dies as a segfault in native code would.
OOM_PROMPT does the same but dies as the kernel's OOM killer makes a process die: its OOM-kill
counter (in the fake /proc under --fake-kernel, which the server reads instead of the real one)
goes up by one and the process gets SIGKILL. Every other prompt is generated normally.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

from acestep_api.jobs.crash_evidence import read_counter

CRASH_PROMPT = "this prompt crashes the server"
OOM_PROMPT = "this prompt runs the server out of memory"
GO_FILE = "crash-now"
ATTEMPTS_FILE = "crash-attempts"
GO_WAIT_SECONDS = 120.0


class CrashingEngine:
    def __init__(self, engine, output_dir: Path, fake_kernel: Path | None):
        self._engine = engine
        self._output_dir = output_dir
        self._fake_kernel = fake_kernel

    def __getattr__(self, name):
        return getattr(self._engine, name)  # everything but generate is the demo engine's

    def generate(self, request, progress):
        if request.prompt not in (CRASH_PROMPT, OOM_PROMPT):
            return self._engine.generate(request, progress)
        with open(self._output_dir / ATTEMPTS_FILE, "a") as attempts:
            attempts.write(f"{os.getpid()}\n")
        progress(0.05, "about to crash")
        deadline = time.monotonic() + GO_WAIT_SECONDS
        while not (self._output_dir / GO_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if request.prompt == OOM_PROMPT:
            vmstat = self._fake_kernel / "proc" / "vmstat"
            vmstat.write_text(f"oom_kill {read_counter(vmstat, 'oom_kill') + 1}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGSEGV)
        raise AssertionError("unreachable: the signal ends the process")


def main() -> None:
    import uvicorn

    from acestep_api.engine.startup import build_engine, use_demo_checkpoints
    from acestep_api.jobs.crash_evidence import SystemFiles
    from acestep_api.server.app import create_app
    from acestep_api.settings import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--fake-kernel", type=Path, default=None)
    args = parser.parse_args()
    settings = use_demo_checkpoints(Settings(_env_file=None, output_dir=args.output_dir, api_port=args.port))
    engine = CrashingEngine(build_engine(settings), args.output_dir, args.fake_kernel)
    app = create_app(settings, engine=engine)
    if args.fake_kernel is not None:
        app.state.system_files = SystemFiles(proc=args.fake_kernel / "proc", cgroup_root=args.fake_kernel / "cgroup")
    uvicorn.run(app, host="127.0.0.1", port=args.port, workers=1)


if __name__ == "__main__":
    main()
