"""A folder of a user's own generated images as a dataset: the prompt and generation settings from
each file's metadata, the image from the file itself (a ``file://`` URL the fetch stage reads).

A folder is scanned again on every ingest; a file whose size and modification time did not change
is not read again (its row comes from the last scan), so rescanning a large, mostly unchanged
folder costs a ``stat`` per file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from pathlib import Path
from urllib.parse import quote_from_bytes

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from promptlake.storage.datadir.layout import atomic_path, write_json
from promptlake.tasks.metadata import TOOLS, read_metadata

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("url", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("source_site", pa.string()),
        ("negative_prompt", pa.string()),
        ("model_name", pa.string()),
        ("tool", pa.string()),  # the generator, or none / unreadable
        ("settings", pa.string()),  # the generator's settings as JSON, as it wrote them
    ]
)
FILES_SCHEMA = SCHEMA.append(pa.field("size", pa.int64())).append(pa.field("mtime_ns", pa.int64()))


def file_url(path: str) -> str:
    """A ``file://`` URL, as ``Path.as_uri`` makes it for an absolute path, without a Path."""
    return "file://" + quote_from_bytes(os.fsencode(path))


def image_row(path: Path, url: str | None = None) -> dict:
    """One dataset row for an image file. No metadata (or an unreadable file) → an empty prompt,
    which the plan stage records as an ``empty_prompt`` reject with the file's URL; the ``tool``
    column says which (``none`` or ``unreadable``). The id is the file's content hash."""
    body = path.read_bytes()
    row = {
        "id": hashlib.sha256(body).hexdigest()[:24],
        "prompt": "",
        "url": url or path.resolve().as_uri(),
        "width": 0,
        "height": 0,
        "source_site": "local",
        "negative_prompt": "",
        "model_name": "",
        "tool": "unreadable",
        "settings": "{}",
    }
    try:
        row["width"], row["height"] = Image.open(io.BytesIO(body)).size
    except (UnidentifiedImageError, OSError):
        return row
    row["tool"] = "none"
    meta = read_metadata(body)
    if meta is not None:
        row.update(
            prompt=meta.prompt,
            negative_prompt=meta.negative_prompt,
            model_name=meta.model_name,
            tool=meta.tool,
            settings=json.dumps(meta.settings, sort_keys=True, ensure_ascii=False),
        )
    return row


def image_files(folder: Path) -> list[tuple[str, os.stat_result]]:
    """Every image under ``folder`` (absolute paths, as text) with its ``stat``, sorted."""
    found, todo = [], [str(folder)]
    while todo:
        with os.scandir(todo.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    todo.append(entry.path)
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    try:
                        found.append((entry.path, entry.stat()))
                    except FileNotFoundError:  # deleted while we looked
                        continue
    return sorted(found)


def scan_directory(folder: Path, out: Path) -> dict:
    """Write a parquet dataset of every image under ``folder`` (sorted: the same folder gives the
    same file, which is left untouched when nothing changed) and a summary beside it
    (``<name>.scan.json``): per tool that wrote the metadata (and ``none``, ``unreadable``) its
    file count under ``counts``, and the URLs of the files without a prompt under ``none`` and
    ``unreadable``; ``read`` is how many files had to be read (the rest were unchanged since the
    last scan). Return that summary."""
    folder = folder.resolve()  # once: every file's URL is then made without a syscall
    files = image_files(folder)
    if not files:
        raise FileNotFoundError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}: nothing to ingest"
        )
    cache_path = out.with_suffix(".files.parquet")
    known = _known(cache_path)
    rows, read = [], 0
    for path, st in files:
        url = file_url(path)
        row = known.get(url)
        if row is None or (row["size"], row["mtime_ns"]) != (st.st_size, st.st_mtime_ns):
            row = {**image_row(Path(path), url), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
            read += 1
        rows.append(row)
    table = pa.Table.from_pylist(rows, schema=FILES_SCHEMA)
    if read or len(rows) != len(known) or not out.exists():  # else: unchanged, keep its hash
        with atomic_path(cache_path) as tmp:
            pq.write_table(table, tmp)
        with atomic_path(out) as tmp:
            pq.write_table(table.select(SCHEMA.names), tmp)
    summary: dict = {"folder": str(folder), "files": len(rows), "read": read, "counts": {}}
    counts = Counter(r["tool"] for r in rows)
    summary["counts"] = {tool: counts[tool] for tool in (*TOOLS, "none", "unreadable")}
    for missing in ("none", "unreadable"):  # the files a person will want to look at
        summary[missing] = [r["url"] for r in rows if r["tool"] == missing]
    write_json(out.with_suffix(".scan.json"), summary)
    return summary


def _known(cache_path: Path) -> dict[str, dict]:
    """The last scan's rows by URL (none when there was no scan, or an older format)."""
    if not cache_path.exists():
        return {}
    table = pq.read_table(cache_path)
    if table.schema != FILES_SCHEMA:
        return {}
    return {row["url"]: row for row in table.to_pylist()}
