"""Error responses: every failure is JSON `{"detail": ...}`, never a bare 500 page."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)


async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
    # Registered for Exception, so Starlette answers from its outermost middleware and the
    # server goes on serving; the traceback goes to the log, not to the client.
    log.exception("Unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return JSONResponse({"detail": f"Internal server error ({type(error).__name__})"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Exception, unexpected_error)
