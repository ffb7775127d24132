"""search: text or image in, nearest prompts or images out; every search is logged."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from promptlake.settings import Settings
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.vectors import ModelMismatch
from promptlake.storage.store import TABLES, Filters, Hit, StoreError
from promptlake.storage.store.hits import Facets, LoggedSearch
from promptlake.tasks.clip.encoder import ClipEncoder, Namespace, current_namespace, get_encoder
from promptlake.tasks.images.imaging import process_image
from promptlake.tasks.metadata import ImageMeta, read_metadata
from promptlake.tasks.query.resolve import query_settings, read_image  # noqa: F401  (callers import them here)
from promptlake.tasks.runtime.turn import store_turn


@dataclass
class SearchRequest:
    """What to look for: a text, an image (path or URL), or both (their vectors averaged)."""

    text: str | None = None
    image: str | None = None
    target: str = "prompts"
    k: int = 10
    filters: Filters = field(default_factory=Filters)
    log: bool = True  # the feedback flow's own searches are not logged: they would feed it
    image_body: bytes | None = field(default=None, repr=False)  # ``image`` already read

    def image_bytes(self, settings: Settings) -> bytes:
        """The image's bytes, read (or fetched) once per request."""
        if self.image_body is None:
            if self.image is None:
                raise ValueError("this search has no image")
            self.image_body = read_image(self.image, settings)
        return self.image_body

    def logged(self, hits: list[Hit], elapsed_ms: float) -> LoggedSearch:
        """This search as the searches log keeps it."""
        text = self.text.strip() if self.text else ""
        kind = "text+image" if text and self.image else ("text" if text else "image")
        best = hits[0].distance if hits else None
        return LoggedSearch(text or str(self.image), kind, self.target, self.k, best, elapsed_ms)

    def validate(self) -> None:
        if not (self.text and self.text.strip()) and not self.image:
            raise StoreError("give a text, an --image, or both")
        if self.target not in TABLES:
            raise StoreError(f"target must be prompts or images, not {self.target!r}")


@dataclass
class ReverseResult:
    """An image's prompt: exact from its metadata when it has some, else its CLIP neighbours."""

    exact: ImageMeta | None
    hits: list[Hit]


def reverse(
    image: str,
    data: DataDir,
    settings: Settings,
    *,
    k: int = 10,
    filters: Filters | None = None,
    use_metadata: bool = True,
) -> ReverseResult:
    """Reverse search: the image's own metadata first (no model, no store needed), then CLIP."""
    req = SearchRequest(image=image, target="prompts", k=k, filters=filters or Filters())
    if use_metadata:
        meta = read_metadata(req.image_bytes(settings))
        if meta is not None:
            return ReverseResult(meta, [])
    return ReverseResult(None, search(req, data, settings))


def image_vectors(bodies: list[bytes], enc: ClipEncoder, settings: Settings) -> np.ndarray:
    """Unit vectors of image files, made the way stored image vectors were made (resized and
    re-encoded like the fetch stage does, then cropped by the encoder)."""
    if not bodies:
        return np.zeros((0, enc.info.dim), dtype=np.float32)
    crops = []
    for body in bodies:
        stored = process_image(
            body,
            size=settings.image_size,
            fmt=settings.image_format,
            quality=settings.image_quality,
            resample=settings.resize_filter,
        ).data
        crops.append(enc.prepare_image(stored))
    return enc.encode_pixels(np.stack(crops))


def query_vector(req: SearchRequest, enc: ClipEncoder, settings: Settings) -> list[float]:
    """The request as one unit vector, made the way stored vectors were made."""
    parts = []
    if req.text and req.text.strip():
        parts.append(enc.encode_text([req.text])[0][0])
    if req.image:
        parts.append(image_vectors([req.image_bytes(settings)], enc, settings)[0])
    vec = sum(parts) / len(parts)
    return (vec / (float((vec**2).sum()) ** 0.5)).tolist()


def search(
    req: SearchRequest, data: DataDir, settings: Settings, *, namespace: Namespace | None = None
) -> list[Hit]:
    """Run and log one search against the store of ``data``, with the vectors of
    ``namespace`` (default: the data dir's current one, read from its files; a long-lived
    caller passes the one it started with, so a re-plan clearing those files does not touch
    it)."""
    req.validate()
    ns, model = namespace or current_namespace(data, settings)
    enc = get_encoder(settings.clip_model, settings.device, settings.precision)
    if enc.info.namespace != ns:
        raise ModelMismatch(
            f"the store holds vectors of {model['model']} ({ns}), not of "
            f"{settings.clip_model}: search with --model {model['model']}"
        )
    start = time.perf_counter()
    vector = query_vector(req, enc, settings)  # the model's work, before taking the store
    with store_turn(settings, "search") as store:
        store.ensure_schema(ns, int(model["dim"]))
        hits = store.search(req.target, vector, req.k, req.filters)
        if req.log:
            store.log_search(req.logged(hits, (time.perf_counter() - start) * 1000))
    return hits


def facets(
    target: str, data: DataDir, settings: Settings, *, namespace: Namespace | None = None
) -> Facets:
    """What the store's ``target`` table holds, for offering its filters: one turn (the
    ``namespace`` as :func:`search` takes it)."""
    if target not in TABLES:
        raise StoreError(f"target must be prompts or images, not {target!r}")
    ns, model = namespace or current_namespace(data, settings)
    with store_turn(settings, "facets") as store:
        store.ensure_schema(ns, int(model["dim"]))
        return store.facets(target)


def run(req: SearchRequest, settings: Settings, *, use_metadata: bool = True) -> list[Hit]:
    """One search; an image alone asking for prompts is a reverse search, answered from the
    image's own metadata (one hit, origin ``metadata:<tool>``) when it has some."""
    data = DataDir(settings.data_dir)
    if req.image and not (req.text and req.text.strip()) and req.target == "prompts":
        found = reverse(
            req.image, data, settings, k=req.k, filters=req.filters, use_metadata=use_metadata
        )
        return [found.exact.as_hit(req.image)] if found.exact else found.hits
    return search(req, data, settings)
