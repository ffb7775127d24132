"""The page's long-lived side: CLIP loaded once at start, one store call at a time, answers as
JSON-ready dicts. Everything here is synchronous (FastAPI runs it in its thread pool)."""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi.encoders import jsonable_encoder
from PIL import Image

from promptlake.settings import Settings, get_settings
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.store.hits import Hit, StoreBusy
from promptlake.tasks.clip.encoder import current_namespace, get_encoder
from promptlake.tasks.images.cached import DamagedImage, page_image
from promptlake.tasks.images.thumbnails import cached_records
from promptlake.tasks.metadata import read_metadata
from promptlake.tasks.query.refine import RefineRequest, refine
from promptlake.tasks.query.search import SearchRequest, image_vectors, query_settings, search
from promptlake.tasks.query.search import facets as store_facets
from promptlake.ui.client import fingerprint
from promptlake.ui.forms import (
    BadRequest,
    RefineQuery,
    SearchQuery,
    Upload,
    check_image,
    hit_json,
    valid_id,
)

log = logging.getLogger("promptlake.ui")


def page_settings(data_dir: str | None, **overrides: object) -> Settings:
    """Settings for the page: the data dir's own CLIP model, and a short wait for the store."""
    settings = query_settings(get_settings(data_dir=data_dir, **overrides))
    if "store_wait" in Settings.model_fields:  # turn-taking: a page answers "busy" quickly
        settings = settings.model_copy(update={"store_wait": settings.ui_store_wait})
    return settings


@dataclass
class PageService:
    """What the app's routes call: searches, refines and cached images of one data dir."""

    data_dir: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ready: bool = False
    reason: str = "starting"

    def __post_init__(self) -> None:
        self.settings = page_settings(self.data_dir, **self.overrides)

    @property
    def data(self) -> DataDir:
        return DataDir(self.settings.data_dir)

    def warm_up(self) -> None:
        """Load CLIP (both towers) and run one unlogged search, so the first real search is warm.
        A data dir without embeddings yet leaves the page up, answering 503 until it has some."""
        # the model the data dir was embedded with (it may have been embedded since start)
        self.settings = s = page_settings(self.data_dir, **self.overrides)
        try:
            current_namespace(self.data, s)
        except RuntimeError as exc:
            self.reason = str(exc)
            return
        enc = get_encoder(s.clip_model, s.device, s.precision)
        enc.encode_text(["warm up"])
        image_vectors([_blank_jpeg()], enc, s)
        try:
            search(SearchRequest(text="warm up", k=1, log=False), self.data, s)
        except StoreBusy as exc:  # the first search will wait its turn instead
            log.warning("store busy while warming up: %s", exc)
        self.ready, self.reason = True, ""

    def _call(self, fn, *args):
        """``fn`` with the store, one call at a time in this process (chDB answers concurrent
        queries from threads, but more slowly than one after another on a few cores)."""
        with self.lock:
            if not self.ready:
                self.warm_up()
            if not self.ready:
                raise BadRequest(f"the search page is not ready: {self.reason}", 503)
            return fn(*args, self.data, self.settings)

    def search(self, q: SearchQuery, upload: Upload | None) -> dict[str, Any]:
        """Text, an uploaded image, or a stored row's image (``like``): hits as JSON; an upload
        carrying its generation metadata also answers with that exact prompt."""
        exact = None
        if upload:
            check_image(upload.body, self.settings)
            exact = read_metadata(upload.body)
        elif q.like:
            upload = self.stored_image(q.like)
        if not q.text and not upload:
            raise BadRequest("give a text, an image, or like=<id>")
        req = SearchRequest(
            q.text or None,
            upload.name if upload else None,
            q.target,
            q.k,
            q.filters(),
            image_body=upload.body if upload else None,
        )
        start = time.perf_counter()
        hits = self._call(search, req)
        took = (time.perf_counter() - start) * 1000
        return {
            "hits": self.hits_json(hits),
            "took_ms": round(took, 2),
            "exact": jsonable_encoder(asdict(exact)) if exact else None,
        }

    def refine(self, q: RefineQuery, upload: Upload | None = None) -> dict[str, Any]:
        """Variants of an idea, an uploaded image or both (the configured LLM, else offline),
        each naming its sources; fewer than asked come with the reason."""
        if upload:
            check_image(upload.body, self.settings)
        req = RefineRequest(idea=q.idea, n=q.n, k=q.k, llm=q.llm, filters=q.filters())
        if upload:
            req.image, req.image_body = upload.name, upload.body
        start = time.perf_counter()
        result = self._call(refine, req)
        return {
            "idea": result.idea,
            "refiner": result.refiner,
            "variants": [asdict(v) for v in result.variants],
            "sources": self.hits_json(result.sources),
            "took_ms": round((time.perf_counter() - start) * 1000, 2),
            "asked": result.asked,
            "shortfall": result.shortfall,
            "exact": jsonable_encoder(asdict(result.exact)) if result.exact else None,
        }

    def facets(self, target: str) -> dict[str, Any]:
        """The values the store's ``target`` table holds in each filter column, with counts."""
        found = self._call(store_facets, target)
        sizes = {"max_width": found.max_width, "max_height": found.max_height}
        return {"target": target, "rows": found.rows, **found.values, **sizes}

    def info(self) -> dict[str, Any]:
        """What a CLI checks before it asks this page instead of loading CLIP (no store, no
        lock: answered at once, even mid-search)."""
        return {
            "ready": self.ready,
            "reason": self.reason,
            "pid": os.getpid(),
            "data_dir": str(self.settings.data_dir),
            "fingerprint": fingerprint(self.settings),
        }

    def stored_image(self, rid: str) -> Upload:
        """A row's cached image, the very bytes its stored image vector was made from."""
        body = self.image(rid)
        if body is None:
            raise BadRequest(f"row {rid!r} has no cached image", 404)
        return Upload(f"cache:{rid}", body)

    def image(self, rid: str) -> bytes | None:
        """The cached image of row ``rid`` (validated: an id, never a path); a damaged one is
        410 Gone, never a 200 that does not decode."""
        try:
            return page_image(self.data, valid_id(rid))
        except DamagedImage as exc:
            raise BadRequest(str(exc), 410) from None

    def hits_json(self, hits: list[Hit]) -> list[dict[str, Any]]:
        records = cached_records(self.data, [h.id for h in hits])  # small: no image bodies
        cached = {rid for rid, record in records.items() if record.ok}
        return [hit_json(h, cached, records.get(h.id)) for h in hits]


def _blank_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(out, "JPEG")
    return out.getvalue()
