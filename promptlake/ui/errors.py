"""Every failure as JSON, ``{"error": message}`` with a 4xx status, or 503 with the reason when
the page cannot answer now (the store busy or being changed, no embeddings yet, the LLM down):
never a 500, never a traceback in the page's log."""

from __future__ import annotations

import json
import logging

import lmdb
from clickhouse_connect.driver.exceptions import ClickHouseError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptlake.storage.datadir.vectors import ModelMismatch
from promptlake.storage.store.hits import StoreBusy, StoreError, StoreUnavailable
from promptlake.tasks.clip.encoder import ModelLoadError
from promptlake.tasks.images.imaging import ImageProblem
from promptlake.tasks.query.llm import LLMError
from promptlake.ui.forms import BadRequest

log = logging.getLogger("promptlake.ui")
RETRY_AFTER = "2"  # seconds a client should wait before asking again after a 503

# the most specific class wins (Starlette looks handlers up along the exception's MRO)
STATUS: dict[type[Exception], int] = {
    StoreBusy: 503,  # another process holds the store past the page's short wait
    StoreUnavailable: 503,  # the store cannot be opened, or there are no embeddings (yet)
    ModelMismatch: 409,
    StoreError: 400,  # the tasks layer's own validation: k, target, filters
    LLMError: 503,  # the LLM endpoint failed or is not configured: the page cannot refine now
    ModelLoadError: 503,
}
# errors of the parts under the page while an ingest changes them: the store mid-mutation, the
# image cache growing, a file of the data dir replaced or removed meanwhile
CHANGING = (ClickHouseError, lmdb.Error, OSError)


def error(status: int, message: str, **extra: object) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER} if status == 503 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


async def _known(request: Request, exc: Exception) -> JSONResponse:
    status = next(STATUS[c] for c in type(exc).__mro__ if c in STATUS)
    return error(status, str(exc), busy=isinstance(exc, StoreBusy))


async def _bad_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BadRequest)
    return error(exc.status, str(exc))


async def _bad_image(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImageProblem)
    return error(413 if exc.status == "too_large" else 400, f"{exc.status}: {exc}")


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    return error(400, str(exc))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, str(exc.detail))


async def _changing(request: Request, exc: Exception) -> JSONResponse:
    text = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    log.warning("%s %s: %s", request.method, request.url.path, text)
    return error(503, f"the data dir is being changed ({text}); try again in a moment")


class Guard:
    """The outermost layer the page's handlers can reach: an exception no handler took (a bug)
    becomes a 503 naming its type, logged as one line. Starlette would answer 500 and re-raise
    it to the server, which logs a traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            what = f"{type(exc).__name__}: {str(exc)[:300]}"
            log.error("%s %s failed: %s", scope.get("method"), scope.get("path"), what)
            if started:  # the answer is on its way: nothing else can be said
                return
            body = {"error": f"unexpected error ({what}); the page's log has the details"}
            await send(_start(503))
            await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def _start(status: int) -> Message:
    headers = [(b"content-type", b"application/json"), (b"retry-after", RETRY_AFTER.encode())]
    return {"type": "http.response.start", "status": status, "headers": headers}


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``, and the guard around it."""
    for cls in STATUS:
        app.add_exception_handler(cls, _known)
    for cls in CHANGING:
        app.add_exception_handler(cls, _changing)
    app.add_exception_handler(BadRequest, _bad_request)
    app.add_exception_handler(ImageProblem, _bad_image)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_middleware(Guard)
