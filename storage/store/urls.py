"""Store URLs: which store, where, as whom; and how a URL may be shown (never its password)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit

from promptlake.storage.store.hits import StoreError

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True)
class StoreURL:
    scheme: str
    path: str = ""
    host: str = "localhost"
    port: int | None = None
    database: str = "promptlake"
    user: str | None = None
    password: str | None = None


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: what logs, markers and the UI may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def parse_store_url(url: str) -> StoreURL:
    """Split a store URL; chdb:///abs/path, clickhouse://[user:pass@]host[:port][/db]."""
    parts = urlparse(url)
    if parts.scheme == "chdb":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise StoreError(f"chdb URL {url!r} has no path: use chdb:///path/to/store")
        return StoreURL("chdb", path=path)
    if parts.scheme in ("clickhouse", "myscale"):
        shown = redact_url(url)
        if not parts.hostname:
            raise StoreError(f"store URL {shown!r} has no host")
        database = parts.path.strip("/") or "promptlake"
        if not _IDENTIFIER.fullmatch(database):  # it is formatted into SQL as an identifier
            raise StoreError(
                f"database name {database!r} in store URL {shown!r} must be letters, digits and "
                "underscores, not starting with a digit"
            )
        return StoreURL(
            parts.scheme,
            host=parts.hostname,
            port=parts.port,
            database=database,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )
    raise StoreError(
        f"unknown store URL {redact_url(url)!r}: use chdb:///path, clickhouse://… or myscale://…"
    )
