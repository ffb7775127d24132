"""thumbnails: pictures of stored rows for result pages, from the LMDB image cache.

The cache holds every fetched image, local or remote, resized and re-encoded by the fetch stage,
so a result page never depends on the original host (or on a ``file://`` path a browser will not
open). With the search page running (``PROMPTLAKE_UI_URL``) pages link to its ``/img/<id>``;
without it they carry small inline JPEGs.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from PIL import Image

from promptlake.settings import Settings
from promptlake.storage.datadir.image_cache import CachedImage, ImageCache
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.records import FetchRecord

INLINE_PX = 96  # longest side of an inline thumbnail: ~3 KB each keeps artifacts small
INLINE_QUALITY = 60


@dataclass(frozen=True)
class Thumb:
    """Where a row's picture comes from, and the page to open when it is clicked."""

    src: str
    link: str | None = None


def cached_images(
    data: DataDir, wanted: Iterable[tuple[str, str | None]]
) -> dict[str, CachedImage]:
    """The cached images of the ``(id, url)`` pairs whose entry is of that URL — the row
    version a hit shows, not an older or newer one (URL None: whatever the id holds); none at
    all before the first fetch."""
    if not data.image_cache.exists():  # do not create a cache just to look into it
        return {}
    return ImageCache.open(data.image_cache).images_for([(i, u) for i, u in wanted if i])


def cached_records(data: DataDir, ids: Iterable[str]) -> dict[str, FetchRecord]:
    """The fetch records (status, stored and original size) of the ids that have one: what a
    page needs to show an image, without reading the images."""
    if not data.image_cache.exists():
        return {}
    return ImageCache.open(data.image_cache).records([i for i in ids if i])


def small_jpeg(body: bytes, size: int = INLINE_PX, quality: int = INLINE_QUALITY) -> bytes:
    """``body`` (a cached image) shrunk to ``size`` pixels on its longest side, as JPEG."""
    img: Image.Image = Image.open(io.BytesIO(body))
    img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale directly
    img = img.convert("RGB")
    img.thumbnail((size, size))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def page_image_url(ui_url: str, rid: str, version: str = "") -> str:
    """The search page's address of row ``rid``'s cached image (a path when ``ui_url`` is ""),
    naming its ``version`` when known: a browser may keep that address's picture for good."""
    tail = f"?v={quote(version, safe='')}" if version else ""
    return f"{ui_url.rstrip('/')}/img/{quote(rid, safe='')}{tail}"


def page_like_url(ui_url: str, rid: str) -> str:
    """The search page showing the images most like row ``rid``'s."""
    return f"{ui_url.rstrip('/')}/?like={quote(rid, safe='')}&target=images"


def thumbnails(hits: Iterable[tuple[str, str]], settings: Settings) -> dict[str, Thumb]:
    """A thumbnail for each ``(id, url)`` hit whose image of that URL is cached: the search
    page's when ``ui_url`` is set, else an inline ``data:`` JPEG."""
    images = cached_images(DataDir(settings.data_dir), hits)
    if settings.ui_url:
        ui = settings.ui_url
        return {
            i: Thumb(page_image_url(ui, i, img.version), page_like_url(ui, i))
            for i, img in images.items()
        }
    out = {}
    for rid, img in images.items():
        try:
            data = base64.b64encode(small_jpeg(img.body)).decode("ascii")
        except (OSError, ValueError):  # a damaged cache entry costs its thumbnail, not the page
            continue
        out[rid] = Thumb(f"data:image/jpeg;base64,{data}")
    return out
