"""The JSON API: ``/api/search`` and ``/api/refine`` (GET, or POST with an image),
``/api/facets`` (what the filters can be) and ``/api/info`` (for a CLI deciding to ask)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from promptlake.ui.forms import BadRequest, RefineQuery, SearchQuery, read_form
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
    """``?idea=&n=&k=&llm=`` (and the filters): ``{"variants": [...], "sources": [...],
    "asked", "shortfall"}``, each variant naming the sources it drew from."""
    service = service_of(request)
    query = RefineQuery.parse(dict(request.query_params), service.settings)
    return JSONResponse(service.refine(query))


@router.post("/refine")
async def refine_post(request: Request) -> JSONResponse:
    """Multipart: ``image`` plus the GET fields; an image with its generation prompt lends it
    as the idea when none is given (``exact``)."""
    service = service_of(request)
    fields, upload = await read_form(request, service.settings)
    query = RefineQuery.parse(fields, service.settings)
    return JSONResponse(await run_in_threadpool(service.refine, query, upload))


@router.get("/facets")
def facets_get(request: Request, target: str = "prompts") -> JSONResponse:
    """``?target=prompts|images``: each filter column's values with their row counts (most
    first), the row count and the widest and tallest images: what the page offers."""
    if target not in ("prompts", "images"):
        raise BadRequest(f"target must be prompts or images, not {target[:40]!r}")
    return JSONResponse(service_of(request).facets(target))


@router.get("/info")
def info_get(request: Request) -> JSONResponse:
    """Ready or not, this process, its data dir and the settings its answers depend on: a
    CLI asks this page only when they equal its own."""
    return JSONResponse(service_of(request).info())
