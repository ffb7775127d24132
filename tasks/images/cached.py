"""Whether a cached image is still the one fetch stored: the sha256 its record keeps (records
made before it was kept: the image must decode). A damaged one is refetched by
``--retry-failed`` and answered 410 by the search page, never served as a broken 200."""

from __future__ import annotations

import hashlib
import io

from PIL import Image

from promptlake.storage.datadir.image_cache import CachedImage, ImageCache
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.records import FetchRecord
from promptlake.tasks.images.imaging import DECODER_ERRORS


class DamagedImage(ValueError):
    """A cached image that no longer is what fetch stored; the message says what to do."""


def image_ok(record: FetchRecord | None, body: bytes) -> bool:
    """Whether ``body`` is the image ``record`` describes (or, for an old record, decodes)."""
    if record is not None and record.image_sha256:
        return hashlib.sha256(body).hexdigest() == record.image_sha256
    key = hashlib.blake2b(body, digest_size=16).digest()
    if key not in _DECODES:  # a decode costs a few ms: once per image and process
        if len(_DECODES) >= 4096:
            _DECODES.clear()
        _DECODES[key] = _decodes(body)
    return _DECODES[key]


_DECODES: dict[bytes, bool] = {}


def _decodes(body: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(body)) as img:
            img.load()
    except DECODER_ERRORS:
        return False
    return True


def damaged(cache: ImageCache, records: dict[str, FetchRecord]) -> set[str]:
    """The ids among ``records`` (fetched ok) whose cached image is missing or damaged."""
    ok = [rid for rid, rec in records.items() if rec.ok]
    images = cache.images(ok)
    return {rid for rid in ok if rid not in images or not image_ok(records[rid], images[rid])}


def page_image(data: DataDir, rid: str) -> CachedImage | None:
    """Row ``rid``'s cached image for a page; None when it has none (or there is no cache yet:
    none is made just to look into it); :class:`DamagedImage` when it is damaged."""
    if not data.image_cache.exists():
        return None
    found = ImageCache.open(data.image_cache).images_for([(rid, None)]).get(rid)
    if found is None:
        return None
    if not image_ok(found.record, found.body):
        raise DamagedImage(
            f"the cached image of row {rid!r} is damaged: `promptlake resume --retry-failed` "
            "fetches it again"
        )
    return found
