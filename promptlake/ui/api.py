"""The JSON API: ``/api/search`` (GET, or POST with an image) and ``/api/refine``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from promptlake.ui.forms import RefineQuery, SearchQuery, read_form
from promptlake.ui.service import PageService

router = APIRouter(prefix="/api")


def service_of(request: Request) -> PageService:
    return request.app.state.service


@router.get("/search")
def search_get(request: Request) -> JSONResponse:
    """``?text=&target=&k=&source_site=&min_width=&min_height=&origin=`` and ``like=<id>`` (a
    stored row's image): ``{"hits": [...], "took_ms": ..., "exact": null}``."""
    service = service_of(request)
    query = SearchQuery.parse(dict(request.query_params), service.settings)
    return JSONResponse(service.search(query, None))


@router.post("/search")
async def search_post(request: Request) -> JSONResponse:
    """Multipart: ``image`` plus the GET fields. An image with A1111/ComfyUI metadata also
    answers ``exact``: the prompt it was made with."""
    service = service_of(request)
    fields, upload = await read_form(request, service.settings)
    query = SearchQuery.parse(fields, service.settings)
    return JSONResponse(await run_in_threadpool(service.search, query, upload))


@router.get("/refine")
def refine_get(request: Request) -> JSONResponse:
    """``?idea=&n=&k=`` (and the filters): ``{"variants": [...], "sources": [...]}``, each
    variant naming the sources it drew from."""
    service = service_of(request)
    query = RefineQuery.parse(dict(request.query_params), service.settings)
    return JSONResponse(service.refine(query))
