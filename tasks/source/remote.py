"""An ``http(s)://`` source, kept current: each ingest asks the server whether the file changed
(a conditional GET with the ETag or Last-Modified it sent), downloads it again when it did (the
plan then makes a new generation of the difference), and resumes an interrupted download only
when the server promises the same version (``If-Range``), so two versions are never spliced.

Beside ``source/<name>``: ``<name>.http.json`` (the validators of the complete file, written
after the file is in place and trusted only while its size and mtime match) and, during a
download, ``<name>.part`` with ``<name>.part.json`` (the version being downloaded, written
before its first byte).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import requests

from promptlake.storage.datadir import crashpoints
from promptlake.storage.datadir.layout import atomic_path, read_json, remove, write_json
from promptlake.tasks.net.backoff import TRANSIENT_STATUSES
from promptlake.tasks.source.sourcefile import DownloadError

log = logging.getLogger("promptlake.download")
BLOCK = 1 << 16


def fetch_http(url: str, target: Path, *, timeout: float) -> Path:
    """``url`` as the current complete file ``target`` (see the module docstring)."""
    sidecar, part = _beside(target, ".http.json"), _beside(target, ".part")
    resume = _resumable(part, url)
    headers = _resume_headers(resume, part) if resume else _conditional(sidecar, target, url)
    try:
        resp = requests.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.RequestException as exc:
        if not resume and _current(sidecar, target, url) is not None:
            log.warning("could not check %s (%s): using the copy downloaded before", url, exc)
            return target  # a nightly run goes on with what it has
        raise _failed(url, part, exc) from exc
    with resp:
        if resp.status_code == 304:
            return target
        _receive(resp, url, part, resume)
    size = part.stat().st_size
    with atomic_path(target) as tmp:
        part.replace(tmp)
    stat = target.stat()
    version = read_json(_beside(part, ".json"))
    write_json(sidecar, {**version, "size": size, "mtime": stat.st_mtime})
    remove(_beside(part, ".json"))
    return target


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _version(resp: requests.Response, url: str) -> dict[str, Any]:
    """What names this version of the file: its validators and length."""
    total = resp.headers.get("Content-Length")
    if resp.status_code == 206:
        total = resp.headers.get("Content-Range", "").rpartition("/")[2]
    return {
        "url": url,
        "etag": resp.headers.get("ETag"),
        "last_modified": resp.headers.get("Last-Modified"),
        "length": int(total) if total and total.isdigit() else None,
    }


def _current(sidecar: Path, target: Path, url: str) -> dict[str, Any] | None:
    """The validators of the complete file, if they are of ``url`` and it is unchanged."""
    if not (sidecar.exists() and target.exists()):
        return None
    known, stat = read_json(sidecar), target.stat()
    same = (known.get("url"), known.get("size"), known.get("mtime"))
    return known if same == (url, stat.st_size, stat.st_mtime) else None


def _conditional(sidecar: Path, target: Path, url: str) -> dict[str, str]:
    """Headers asking for the file only if it changed (none: download it again)."""
    known = _current(sidecar, target, url) or {}
    headers = {}
    if known.get("etag"):
        headers["If-None-Match"] = known["etag"]
    if known.get("last_modified"):
        headers["If-Modified-Since"] = known["last_modified"]
    return headers


def _resumable(part: Path, url: str) -> dict[str, Any] | None:
    """The version a partial download is of, when it can be resumed: of this URL, with a strong
    validator (a weak ETag or none: resuming blind is how versions get spliced). Otherwise the
    part is discarded."""
    record = _beside(part, ".json")
    version = read_json(record) if record.exists() and part.exists() else None
    if version and version.get("url") == url and _strong(version) and part.stat().st_size:
        return version
    for path in (part, record):
        remove(path)
    return None


def _strong(version: dict[str, Any]) -> str | None:
    etag = version.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return version.get("last_modified")


def _resume_headers(version: dict[str, Any], part: Path) -> dict[str, str]:
    return {"Range": f"bytes={part.stat().st_size}-", "If-Range": str(_strong(version))}


def _receive(resp: requests.Response, url: str, part: Path, resume: dict | None) -> None:
    """Write the answer into ``part``: appended to it (206 of the same version), or from the
    start (200: the whole file, a new version or no resume)."""
    have = part.stat().st_size if resume else 0
    if resp.status_code == 416 and resume:
        total = resp.headers.get("Content-Range", "").rpartition("/")[2]
        if total == str(have):  # nothing left to send: the part is complete
            return
    try:
        resp.raise_for_status()
    except requests.HTTPError as exc:
        raise _failed(url, part, exc) from exc
    if resp.status_code == 206:
        start = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
        if not resume or not start or int(start.group(1)) != have:
            raise _failed(url, part, ValueError("the server resumed at another byte"))
    else:  # the whole file: first say which version the part holds
        have = 0
        write_json(_beside(part, ".json"), _version(resp, url))
    _stream(resp, url, part, append=bool(have))


def _stream(resp: requests.Response, url: str, part: Path, *, append: bool) -> None:
    try:
        with open(part, "ab" if append else "wb") as fh:
            for n, block in enumerate(resp.iter_content(BLOCK)):
                fh.write(block)
                if n == 0:
                    fh.flush()
                    crashpoints.file_written(part)
    except requests.RequestException as exc:
        raise _failed(url, part, exc) from exc
    expected = read_json(_beside(part, ".json")).get("length")
    if expected is not None and part.stat().st_size != expected:
        raise _failed(url, part, ValueError(f"{part.stat().st_size} of {expected} bytes came"))


def _failed(url: str, part: Path, exc: Exception) -> DownloadError:
    have = part.stat().st_size if part.exists() else 0
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else None
        return DownloadError(
            f"download of {url} failed ({exc})", transient=status in TRANSIENT_STATUSES
        )
    return DownloadError(
        f"download of {url} failed ({exc}); run the same command again to resume from {have} bytes",
        transient=True,
    )
