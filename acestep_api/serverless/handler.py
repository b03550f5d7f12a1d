"""The RunPod serverless entry point: `python -m acestep_api.serverless.handler`.

The runpod SDK takes jobs from the platform (or, locally, from `--test_input`, or from its
development server with `--rp_serve_api`) and awaits `handler(job)`. The job runs in a thread,
so the SDK's event loop stays free while the engine works; the answer is the worker's dict.
Configuration is the ACESTEP_* environment, read when the first job arrives.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Callable

import runpod

from acestep_api.serverless.worker import ServerlessWorker

log = logging.getLogger("acestep_api.serverless")

# Set by the platform on its workers; where progress updates (and results) are posted.
PLATFORM_OUTPUT_URL = "RUNPOD_WEBHOOK_POST_OUTPUT"

_worker: ServerlessWorker | None = None


def get_worker() -> ServerlessWorker:
    global _worker
    if _worker is None:
        _worker = ServerlessWorker()
    return _worker


def progress_sender(job: dict) -> Callable[[str], None]:
    """Progress goes to the platform when there is one to receive it, else to the log."""
    if os.environ.get(PLATFORM_OUTPUT_URL):
        return lambda message: runpod.serverless.progress_update(job, message)
    return lambda message: log.info("%s | %s", job.get("id"), message)


async def handler(job: dict) -> dict[str, Any]:
    return await asyncio.to_thread(get_worker().run, job.get("input"), progress_sender(job))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
