"""The page's long-lived side: CLIP loaded once at start, one store call at a time, answers as
JSON-ready dicts. Everything here is synchronous (FastAPI runs it in its thread pool)."""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi.encoders import jsonable_encoder
from PIL import Image

from promptlake.settings import Settings, get_settings
from promptlake.storage.datadir.image_cache import CachedImage
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.store.hits import Hit, NoEmbeddings, StoreBusy
from promptlake.tasks.clip.encoder import Namespace, current_namespace, get_encoder
from promptlake.tasks.images.cached import DamagedImage, page_image
from promptlake.tasks.images.thumbnails import cached_records
from promptlake.tasks.metadata import read_metadata
from promptlake.tasks.query.refine import RefineRequest, retrieve, write
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
    """What the app's routes call: searches, refines and cached images of one data dir.

    The page keeps what it warmed up with — its settings and the store's embedding namespace —
    so a re-plan that clears the data dir's files does not disturb it: it answers from what the
    store holds. Store calls run one at a time (``lock``); a refine holds it only to retrieve,
    and waits on the LLM in one of ``ui_refine_slots`` slots, so searches never wait for it."""

    data_dir: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ready: bool = False
    reason: str = "starting"
    namespace: Namespace | None = None

    def __post_init__(self) -> None:
        self.settings = page_settings(self.data_dir, **self.overrides)
        self._warming = threading.Lock()
        self._refines = threading.BoundedSemaphore(self.settings.ui_refine_slots)

    @property
    def data(self) -> DataDir:
        return DataDir(self.settings.data_dir)

    def warm_up(self) -> None:
        """Load CLIP (both towers) and run one unlogged search, so the first real search is warm.
        A data dir without embeddings yet leaves the page up, answering 503 until it has some."""
        with self._warming:
            if not self.ready:
                self._warm_up()

    def _warm_up(self) -> None:
        # the model the data dir was embedded with (it may have been embedded since start)
        s = page_settings(self.data_dir, **self.overrides)
        try:
            ns = current_namespace(DataDir(s.data_dir), s)
        except NoEmbeddings as exc:
            self.reason = str(exc)
            return
        enc = get_encoder(s.clip_model, s.device, s.precision)
        enc.encode_text(["warm up"])
        image_vectors([_blank_jpeg()], enc, s)
        try:
            with self.lock:
                search(SearchRequest(text="warm up", k=1, log=False), self.data, s, namespace=ns)
        except StoreBusy as exc:  # the first search will wait its turn instead
            log.warning("store busy while warming up: %s", exc)
        self.settings, self.namespace = s, ns
        self.ready, self.reason = True, ""

    def _check_ready(self) -> None:
        """Answer 503 at once while not ready, and try again to get ready meanwhile (in the
        background: a data dir that gains embeddings makes the page ready)."""
        if self.ready:
            return
        if not self._warming.locked():
            threading.Thread(target=self._try_warm_up, daemon=True, name="warm-up").start()
        raise BadRequest(f"the search page is not ready: {self.reason}", 503)

    def _try_warm_up(self) -> None:
        if not self._warming.acquire(blocking=False):
            return
        try:
            if not self.ready:
                self._warm_up()
        except Exception as exc:  # the next request tries again; this one says why
            self.reason = f"could not get ready ({type(exc).__name__}: {str(exc)[:300]})"
            log.warning("warming up failed: %s", self.reason)
        finally:
            self._warming.release()

    def _call(self, fn, *args):
        """``fn`` with the store, one call at a time in this process (chDB answers concurrent
        queries from threads, but more slowly than one after another on a few cores)."""
        self._check_ready()
        with self.lock:
            return fn(*args, self.data, self.settings, namespace=self.namespace)

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
        each naming its sources; fewer than asked come with the reason. The store is held only
        while the neighbours are retrieved; at most ``ui_refine_slots`` refines wait on the LLM
        at once, and one more is answered 503 at once."""
        if upload:
            check_image(upload.body, self.settings)
        req = RefineRequest(idea=q.idea, n=q.n, k=q.k, llm=q.llm, filters=q.filters())
        if upload:
            req.image, req.image_body = upload.name, upload.body
        start = time.perf_counter()
        if not self._refines.acquire(blocking=False):
            n = self.settings.ui_refine_slots
            raise BadRequest(f"{n} refines are already waiting on the LLM: try again soon", 503)
        try:
            result = write(self._call(retrieve, req))  # the LLM's wait holds no lock
        finally:
            self._refines.release()
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
            "data_dir": str(Path(self.settings.data_dir).resolve()),
            "fingerprint": fingerprint(self.settings),
        }

    def stored_image(self, rid: str) -> Upload:
        """A row's cached image, the very bytes its stored image vector was made from."""
        found = self.image(rid)
        if found is None:
            raise BadRequest(f"row {rid!r} has no cached image", 404)
        return Upload(f"cache:{rid}", found.body)

    def image(self, rid: str) -> CachedImage | None:
        """The cached image of row ``rid`` (validated: an id, never a path); a damaged one is
        410 Gone, never a 200 that does not decode."""
        try:
            return page_image(self.data, valid_id(rid))
        except DamagedImage as exc:
            raise BadRequest(str(exc), 410) from None

    def hits_json(self, hits: list[Hit]) -> list[dict[str, Any]]:
        """Hits as JSON, each with a thumbnail when the cache holds the image of the very row
        version the store returned (its URL): never a changed row's old picture; a record of
        another version of the row is not this hit's either."""
        records = cached_records(self.data, [h.id for h in hits])  # small: no image bodies
        out = []
        for hit in hits:
            rec = records.get(hit.id)
            mine = rec if rec is not None and rec.url == hit.url else None
            out.append(hit_json(hit, mine.version if mine and mine.ok else None, mine))
        return out


def _blank_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(out, "JPEG")
    return out.getvalue()
