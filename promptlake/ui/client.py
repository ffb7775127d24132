"""The CLI's way to a running search page: ``search`` and ``refine`` ask a ``promptlake ui`` that
serves the same data dir with the same settings, instead of importing torch and loading CLIP
(about 5 s) for a query the page answers in tens of milliseconds.

Light on purpose: the standard library, urllib3 and the storage records only. Nothing here (nor
what the CLI imports before it) may import torch, transformers, chDB, Prefect or the LLM client:
tests/ui/test_ui_cli.py runs it under ``-X importtime``, and import-linter checks this module.
Any doubt means no page: the caller runs the query itself, as it always could.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import urllib3

from promptlake.settings import Settings, store_url
from promptlake.storage.datadir import activity
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.store.hits import Filters, Hit
from promptlake.storage.store.urls import redact_url

PAGE_KIND = "page"  # the ``kind`` of a search page's note in state/running (not an ingest)
# what must be equal for the page's answer to be this process's: the model and how query
# vectors are made, the store, and for refine the LLM (never its key)
FINGERPRINT = (
    "clip_model",
    "precision",
    "image_size",
    "image_format",
    "image_quality",
    "resize_filter",
    "max_image_pixels",
    "llm_base_url",
    "llm_model",
    "llm_temperature",
)
INFO_TIMEOUT = urllib3.Timeout(connect=0.5, read=3.0)  # /api/info answers without the store
_HIT_FIELDS = [f.name for f in fields(Hit)]
Say = Callable[[str], None]


class PageUnavailable(RuntimeError):
    """The page did not answer this query; the caller runs it itself."""


def fingerprint(settings: Settings) -> dict[str, Any]:
    """The settings a query's answer depends on, as JSON values (the store without a
    password). The page publishes its own; the CLI compares its own with it."""
    out: dict[str, Any] = {name: _plain(getattr(settings, name)) for name in FINGERPRINT}
    out["data_dir"] = str(Path(settings.data_dir).resolve())
    out["store"] = redact_url(store_url(settings))
    return out


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


@dataclass
class Page:
    """A running search page this process may ask."""

    url: str
    pid: int
    http: urllib3.PoolManager

    def search(
        self, *, text: str | None, image: tuple[str, bytes] | None, target: str, k: int,
        filters: Filters, timeout: float,
    ) -> list[Hit]:  # fmt: skip
        """The page's hits for this search, as the store's records."""
        fields_ = {"text": text or "", "target": target, "k": k, **_filters(filters)}
        body = self._ask("/api/search", fields_, image, timeout)
        return [to_hit(h) for h in body["hits"]]

    def refine(
        self, *, idea: str, image: tuple[str, bytes] | None, n: int, k: int, llm: str,
        filters: Filters, timeout: float,
    ) -> dict[str, Any]:  # fmt: skip
        """The page's refine, in the shape ``RefineResult.to_dict()`` prints."""
        fields_ = {"idea": idea, "n": n, "k": k, "llm": llm, **_filters(filters)}
        body = self._ask("/api/refine", fields_, image, timeout)
        keys = ("idea", "refiner", "variants", "exact", "asked", "shortfall")
        out = {key: body.get(key) for key in keys}
        out["sources"] = [{f: h[f] for f in _HIT_FIELDS} for h in body["sources"]]
        return {key: out[key] for key in (*keys[:3], "sources", *keys[3:])}

    def _ask(
        self, path: str, fields_: dict[str, Any], image: tuple[str, bytes] | None, timeout: float
    ) -> dict[str, Any]:
        plain = {key: str(value) for key, value in fields_.items() if value not in (None, "")}
        limit = urllib3.Timeout(connect=1.0, read=timeout)
        try:
            if image is None:
                r = self.http.request("GET", self.url + path, fields=plain, timeout=limit)
            else:
                form: dict[str, Any] = {**plain, "image": image}
                r = self.http.request("POST", self.url + path, fields=form, timeout=limit)
        except urllib3.exceptions.HTTPError as exc:
            raise PageUnavailable(f"the search page at {self.url} did not answer: {exc}") from exc
        body = _json(r.data)
        if r.status != 200:
            said = body.get("error") or r.reason
            raise PageUnavailable(f"the search page at {self.url} answered {r.status}: {said}")
        return body


def _filters(filters: Filters) -> dict[str, Any]:
    return {name: getattr(filters, name) for name in Filters.__dataclass_fields__}


def _json(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def to_hit(body: dict[str, Any]) -> Hit:
    """A hit as the page's API gives it, back as the store's record."""
    return Hit(**{name: body[name] for name in _HIT_FIELDS})


def page_notes(data: DataDir) -> list[dict[str, Any]]:
    """The search pages running on ``data`` on this machine, newest first."""
    here = socket.gethostname()
    pages = [n for n in activity.now(data) if n.get("kind") == PAGE_KIND]
    return [n for n in reversed(pages) if n.get("host") == here and n.get("url")]


def find_page(settings: Settings, say: Say) -> Page | None:
    """A ready page serving ``settings``' data dir with the same fingerprint, or None."""
    want = fingerprint(settings)
    http = urllib3.PoolManager(retries=False)
    for note in page_notes(DataDir(settings.data_dir)):
        url = str(note["url"])
        try:
            r = http.request("GET", url + "/api/info", timeout=INFO_TIMEOUT)
        except urllib3.exceptions.HTTPError as exc:
            say(f"promptlake: the search page at {url} did not answer ({exc}): searching here")
            continue
        info = _json(r.data)
        if r.status != 200 or not info.get("ready"):
            say(f"promptlake: the search page at {url} is not ready: searching here")
            continue
        theirs = info.get("fingerprint") or {}
        differ = sorted(key for key in want if theirs.get(key) != want[key])
        if differ:
            say(f"promptlake: the search page at {url} runs with other {', '.join(differ)}")
            continue
        return Page(url, int(info.get("pid") or note.get("pid") or 0), http)
    return None
