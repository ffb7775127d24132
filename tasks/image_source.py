"""A folder of a user's own generated images as a dataset: the prompt from each file's metadata,
the image from the file itself (a ``file://`` URL the fetch stage reads)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from promptlake.storage.layout import atomic_path, write_json
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
        ("generation", pa.string()),  # sampler settings as JSON
        ("tool", pa.string()),
    ]
)


def image_row(path: Path) -> dict:
    """One dataset row for an image file. No metadata (or an unreadable file) → an empty prompt,
    which the plan stage records as an ``empty_prompt`` reject with the file's URL; the ``tool``
    column says which (``none`` or ``unreadable``). The id is the file's content hash."""
    body = path.read_bytes()
    row = {
        "id": hashlib.sha256(body).hexdigest()[:24],
        "prompt": "",
        "url": path.resolve().as_uri(),
        "width": 0,
        "height": 0,
        "source_site": "local",
        "negative_prompt": "",
        "generation": "{}",
        "tool": "unreadable",
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
            generation=json.dumps(meta.settings, sort_keys=True),
            tool=meta.tool,
        )
    return row


def scan_directory(folder: Path, out: Path) -> dict:
    """Write a parquet dataset of every image under ``folder`` (sorted: the same folder gives the
    same file) and a summary beside it (``<name>.scan.json``): per tool that wrote the metadata
    (and ``none``, ``unreadable``) its file count under ``counts`` and its files' URLs under the
    tool's name. Return that summary."""
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise FileNotFoundError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}: nothing to ingest"
        )
    rows = [image_row(p) for p in files]
    with atomic_path(out) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp)
    summary: dict = {"folder": str(folder), "files": len(rows), "counts": {}}
    for tool in (*TOOLS, "none", "unreadable"):
        summary[tool] = [r["url"] for r in rows if r["tool"] == tool]
        summary["counts"][tool] = len(summary[tool])
    write_json(out.with_suffix(".scan.json"), summary)
    return summary
