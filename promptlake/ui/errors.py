"""Every failure as JSON, ``{"error": message}`` with a 4xx/5xx status, never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from promptlake.storage.datadir.vectors import ModelMismatch
from promptlake.storage.store.hits import StoreBusy, StoreError
from promptlake.tasks.clip.encoder import ModelLoadError
from promptlake.tasks.images.imaging import ImageProblem
from promptlake.tasks.query.llm import LLMError
from promptlake.ui.forms import BadRequest

log = logging.getLogger("promptlake.ui")

# the most specific class wins (Starlette looks handlers up along the exception's MRO)
STATUS: dict[type[Exception], int] = {
    StoreBusy: 503,  # another process holds the store past the page's short wait
    ModelMismatch: 409,
    StoreError: 400,  # the tasks layer's own validation: k, target, filters
    LLMError: 502,
    ModelLoadError: 503,
}


def error(status: int, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


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


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error(500, f"internal error ({type(exc).__name__}); the server's log has the details")


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    for cls in STATUS:
        app.add_exception_handler(cls, _known)
    app.add_exception_handler(BadRequest, _bad_request)
    app.add_exception_handler(ImageProblem, _bad_image)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
