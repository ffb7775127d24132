"""search: text or image in, nearest prompts or images out; every search is logged."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from promptlake.settings import Settings, store_url
from storage.layout import DataDir
from storage.store import TABLES, Filters, Hit, StoreError, open_store
from storage.vectors import ModelMismatch
from tasks.encoder import ClipEncoder, get_encoder
from tasks.fetcher import Fetcher
from tasks.imaging import process_image
from tasks.load import current_namespace


@dataclass
class SearchRequest:
    """What to look for: a text, an image (path or URL), or both (their vectors averaged)."""

    text: str | None = None
    image: str | None = None
    target: str = "prompts"
    k: int = 10
    filters: Filters = field(default_factory=Filters)

    def validate(self) -> None:
        if not (self.text and self.text.strip()) and not self.image:
            raise StoreError("give a text, an --image, or both")
        if self.target not in TABLES:
            raise StoreError(f"target must be prompts or images, not {self.target!r}")


def read_image(source: str, settings: Settings) -> bytes:
    """Image bytes from a local path or an http(s) URL (with the fetch stage's limits)."""
    if urlparse(source).scheme in ("http", "https"):
        got = Fetcher(settings).attempt(source)
        if got.status != "ok":
            raise StoreError(f"could not fetch {source}: {got.status} {got.error}")
        return got.body
    path = Path(source).expanduser()
    if not path.is_file():
        raise StoreError(f"image not found: {source!r}")
    return path.read_bytes()


def query_vector(req: SearchRequest, enc: ClipEncoder, settings: Settings) -> list[float]:
    """The request as one unit vector, made the way stored vectors were made."""
    parts = []
    if req.text and req.text.strip():
        parts.append(enc.encode_text([req.text])[0][0])
    if req.image:
        body = read_image(req.image, settings)
        stored = process_image(
            body,
            size=settings.image_size,
            fmt=settings.image_format,
            quality=settings.image_quality,
            resample=settings.resize_filter,
        ).data
        parts.append(enc.encode_pixels(np.stack([enc.prepare_image(stored)]))[0])
    vec = sum(parts) / len(parts)
    return (vec / (float((vec**2).sum()) ** 0.5)).tolist()


def search(req: SearchRequest, data: DataDir, settings: Settings) -> list[Hit]:
    """Run and log one search against the store of ``data``."""
    req.validate()
    ns, model = current_namespace(data, settings)
    enc = get_encoder(settings.clip_model, settings.device, settings.precision)
    if enc.info.namespace != ns:
        raise ModelMismatch(
            f"the store holds vectors of {model.get('name')} ({ns}), not of "
            f"{settings.clip_model}: search with --model {model.get('name')}"
        )
    store = open_store(store_url(settings))
    store.ensure_schema(ns, int(model["dim"]))
    start = time.perf_counter()
    hits = store.search(req.target, query_vector(req, enc, settings), req.k, req.filters)
    label = req.text or f"image:{req.image}"
    store.log_search(label, req.target, req.k, hits, (time.perf_counter() - start) * 1000)
    return hits
