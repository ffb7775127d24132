"""What the page and the API accept: validated queries, bounded image uploads, hits as JSON."""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from fastapi.encoders import jsonable_encoder
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from promptlake.argtypes import bounds
from promptlake.settings import LLMChoice, Settings
from promptlake.storage.datadir.records import FetchRecord
from promptlake.storage.store.hits import Filters, Hit
from promptlake.tasks.images.thumbnails import page_image_url

_ID = re.compile(r"[^\x00-\x1f\x7f/\\]{1,256}")
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the text fields around the image
MAX_K = int(bounds("search_k")[1] or 1000)  # the CLI's -k bound: its searches can come here


class BadRequest(ValueError):
    """A request the page cannot serve as asked; ``status`` is its HTTP status (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def valid_id(rid: str) -> str:
    """A row id as the store keeps it: never a path (no slashes, no ``..``, no control bytes)."""
    if not _ID.fullmatch(rid) or rid in (".", ".."):
        raise BadRequest(f"not a row id: {rid[:80]!r}")
    return rid


class Query(BaseModel):
    """Fields shared by searches and refines: the filters."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    source_site: str | None = Field(None, max_length=200)
    min_width: int | None = Field(None, ge=0, le=1_000_000)
    min_height: int | None = Field(None, ge=0, le=1_000_000)
    origin: str | None = Field(None, max_length=200)
    model_name: str | None = Field(None, max_length=200)
    tool: str | None = Field(None, max_length=50)

    @classmethod
    def parse(cls, fields: dict[str, Any], settings: Settings):
        """Validate form or query-string ``fields`` (empty ones count as absent)."""
        given = {k: v for k, v in fields.items() if v not in ("", None)}
        try:
            return cls.model_validate({**cls.defaults(settings), **given})
        except ValidationError as exc:
            raise BadRequest(describe(exc)) from exc

    @classmethod
    def defaults(cls, settings: Settings) -> dict[str, Any]:
        return {}

    def filters(self) -> Filters:
        return Filters.of(self)


class SearchQuery(Query):
    """A search: a text, an image (uploaded, or a stored row's via ``like``), or both."""

    text: str = Field("", max_length=2000)
    target: Literal["prompts", "images"] = "prompts"
    k: int = Field(ge=1, le=MAX_K)
    like: str | None = Field(None, description="search with this row's cached image")

    @classmethod
    def defaults(cls, settings: Settings) -> dict[str, Any]:
        return {"k": settings.ui_k}


class RefineQuery(Query):
    """A refine: an idea, the variants to write and the neighbours to draw them from."""

    idea: str = Field("", max_length=2000)  # or an uploaded image (POST)
    n: int = Field(ge=1, le=20)
    k: int = Field(ge=1, le=200)
    llm: LLMChoice = "auto"

    @classmethod
    def defaults(cls, settings: Settings) -> dict[str, Any]:
        return {"n": settings.refine_n, "k": settings.refine_k}


def describe(exc: ValidationError) -> str:
    """A pydantic error as one line that names each bad field and what it wants."""
    parts = []
    for err in exc.errors():
        field = ".".join(map(str, err["loc"])) or "request"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{field}: {msg}")
    return "; ".join(parts)


@dataclass
class Upload:
    """An image to search with: its bytes and a label for the search log."""

    name: str
    body: bytes


async def read_form(request: Request, settings: Settings) -> tuple[dict[str, str], Upload | None]:
    """The text fields and the ``image`` part of a multipart POST, read within the byte bound
    before anything is parsed (a chunked body is counted as it arrives)."""
    kind = request.headers.get("content-type", "")
    if not kind.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise BadRequest(f"send multipart/form-data (an image field), not {kind!r}", 415)
    limit = settings.ui_max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise too_large(int(declared), limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit + FORM_OVERHEAD:
            raise too_large(len(body), limit)

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=20)
    except Exception as exc:  # starlette raises its own parse errors: all are a bad body
        raise BadRequest(f"could not read the form: {exc}") from exc
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    image = form.get("image")
    if not isinstance(image, UploadFile):
        return fields, None
    data = await image.read()
    if len(data) > limit:
        raise too_large(len(data), limit)
    return fields, (Upload(f"upload:{image.filename or 'image'}", data) if data else None)


def too_large(size: int, limit: int) -> BadRequest:
    return BadRequest(
        f"the upload is {size:,} bytes; the page accepts images up to {limit:,} bytes "
        "(PROMPTLAKE_UI_MAX_UPLOAD_BYTES)",
        413,
    )


def check_image(body: bytes, settings: Settings) -> None:
    """Refuse what is not an image, or one over the pixel bound, from its header alone."""
    most = f"the page decodes at most {settings.ui_max_upload_pixels:,} pixels"
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            width, height = Image.open(io.BytesIO(body)).size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadRequest(f"{exc}; {most} (PROMPTLAKE_UI_MAX_UPLOAD_PIXELS)", 413) from exc
        except (UnidentifiedImageError, OSError) as exc:
            raise BadRequest("the upload is not an image (png, jpeg, webp, …)", 415) from exc
    if width * height > settings.ui_max_upload_pixels:
        size = f"{width}x{height} = {width * height:,} pixels"
        raise BadRequest(f"the image is {size}; {most} (PROMPTLAKE_UI_MAX_UPLOAD_PIXELS)", 413)


def hit_json(hit: Hit, version: str | None, record: FetchRecord | None = None) -> dict[str, Any]:
    """One hit for the API: the store's fields (the distance as the store gave it, so a CLI
    asking the page prints what it would print itself), its thumbnail (when its image is
    cached: ``version`` names the cached picture, so the link changes when the row's image
    does), ``image`` (the cached copy's size, or why there is none: its fetch record) and
    ``extra`` (lineage, generation settings: whatever the store carries)."""
    return {
        "id": hit.id,
        "prompt": hit.prompt,
        "url": hit.url,
        "distance": hit.distance,
        "width": hit.width,
        "height": hit.height,
        "source_site": hit.source_site,
        "origin": hit.origin,
        "negative_prompt": hit.negative_prompt,
        "model_name": hit.model_name,
        "tool": hit.tool,
        "settings": hit.settings,
        "thumbnail": page_image_url("", hit.id, version) if version else None,
        "image": image_json(record),
        "extra": jsonable_encoder(hit.extra),
    }


def image_json(record: FetchRecord | None) -> dict[str, Any] | None:
    """A row's cached image as the detail shows it: the stored size, or the fetch's status."""
    if record is None:
        return None
    keys = ("status", "http_status", "width", "height")
    return {**{key: getattr(record, key) for key in keys}, "error": record.error[:300]}
