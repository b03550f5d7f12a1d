"""Error responses: every failure is JSON `{"detail": ...}`, never a bare 500 page.

A value a dialect cannot use (`InvalidField`, whichever route or check raised it) is a 400
naming the field, or the status the error carries (403 for an audio path leading out).

An exception no route turned into an answer is caught by `InternalErrorMiddleware`, inside
Starlette's ServerErrorMiddleware: that one re-raises after answering, and uvicorn then drops
the keep-alive connection. Answered here, the exception ends with the answer and the client's
connection stays usable. The traceback goes to the log; the client reads one sentence naming
no exception, path or value.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from acestep_api.server.answer_started import WatchedSend

from acestep_api.dialects.coercion import InvalidField
from acestep_api.storage.output_store import OutputStoreError
from acestep_api.jobs.backend import BackendUnavailable

log = logging.getLogger(__name__)

INTERNAL_ERROR = "Internal server error; the details are in the server log"


class InternalErrorMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watched_send = WatchedSend(send)
        try:
            await self.app(scope, receive, watched_send)
        except BackendUnavailable as error:
            log.warning("%s %s: %s", scope.get("method"), scope.get("path"), error)
            if watched_send.started:
                raise
            await unavailable_response(error)(scope, receive, send)
        except Exception:
            log.exception("Unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if watched_send.started:
                raise  # half an answer is out: only closing the connection can tell the client
            await JSONResponse({"detail": INTERNAL_ERROR}, status_code=500)(scope, receive, send)


def unavailable_response(error: BackendUnavailable) -> JSONResponse:
    """The job state is out of reach for a moment (the distributed mode's database)."""
    return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": "5"})


async def backend_unavailable(request: Request, error: BackendUnavailable) -> JSONResponse:
    return unavailable_response(error)


async def invalid_field(request: Request, error: InvalidField) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=getattr(error, "status_code", 400))


async def output_store_unavailable(request: Request, error: OutputStoreError) -> JSONResponse:
    # The bucket is down or refused: the server is fine and the file may come back.
    log.warning("Output store failure on %s: %s", request.url.path, error)
    return JSONResponse({"detail": f"Audio storage unavailable: {error}"}, status_code=503,
                        headers={"Retry-After": "5"})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(InvalidField, invalid_field)
    app.add_exception_handler(OutputStoreError, output_store_unavailable)
    app.add_exception_handler(BackendUnavailable, backend_unavailable)
    app.add_middleware(InternalErrorMiddleware)
