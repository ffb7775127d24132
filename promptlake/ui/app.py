"""The search page's web app: the page, ``/img/<id>`` from the image cache, ``/healthz`` and the
JSON API. Everything it serves comes from this package: no CDN, usable offline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from promptlake.ui import api, errors
from promptlake.ui.forms import MAX_K, BadRequest
from promptlake.ui.service import PageService

HERE = Path(__file__).parent
# the page loads only its own files; pasted or dropped images show as blob: previews
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
IMAGE_TYPES = {b"\xff\xd8": "image/jpeg", b"\x89P": "image/png", b"RI": "image/webp"}
# an address naming the image's version (?v=, as hits link it) shows that picture for good; a
# bare /img/<id> may show another version tomorrow (the row changed): the browser asks again
VERSIONED = "public, max-age=31536000, immutable"
UNVERSIONED = "no-cache"


def create_app(service: PageService) -> FastAPI:
    """The app around ``service``; CLIP loads and the store is touched once before it serves."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not service.ready:
            await run_in_threadpool(service.warm_up)
        yield

    app = FastAPI(title="promptlake", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    errors.install(app)
    app.include_router(api.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request) -> HTMLResponse:
        s = service.settings
        context = {"k": s.ui_k, "refine_n": s.refine_n, "max_bytes": s.ui_max_upload_bytes}
        context["max_k"] = MAX_K  # "More" asks at most this deep
        response = templates.TemplateResponse(request, "index.html", context)
        response.headers["Content-Security-Policy"] = CSP
        return response

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """On the event loop, from memory only: it answers while every worker thread waits."""
        s = service.settings
        body = {"ok": True, "ready": service.ready, "model": s.clip_model}
        return JSONResponse(
            {**body, "data_dir": str(Path(s.data_dir).resolve()), "reason": service.reason}
        )

    @app.get("/img/{rid}")
    def image(rid: str, request: Request, v: str = "") -> Response:
        found = service.image(rid)
        if found is None:
            raise BadRequest(f"row {rid!r} has no cached image", 404)
        tag = f'"{found.version}"'
        headers = {
            "Cache-Control": VERSIONED if v == found.version else UNVERSIONED,
            "ETag": tag,
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers=headers)
        kind = IMAGE_TYPES.get(found.body[:2], "application/octet-stream")
        return Response(found.body, media_type=kind, headers=headers)

    return app
