"""plan: stream the source, normalise rows, reject bad ones with a reason, write numbered shards."""

from __future__ import annotations

import math
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from prefect import task

from promptlake.storage.layout import DataDir, atomic_path, read_json, write_json
from promptlake.storage.records import (
    REQUIRED_COLUMNS,
    PlanManifest,
    ShardRef,
    SourceInfo,
    shard_name,
)

SHARD_SCHEMA = pa.schema(
    [
        ("row_number", pa.int64()),
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("url", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("source_site", pa.string()),
    ]
)
REJECT_SCHEMA = pa.schema(
    [("row_number", pa.int64()), ("reason", pa.string()), ("detail", pa.string())]
    + [(c, pa.string()) for c in REQUIRED_COLUMNS]
)
_SPACE = re.compile(r"\s+")
MAX_SIDE = 1 << 20


class PlanError(ValueError):
    """The source cannot be planned (missing columns, or a data dir planned differently)."""


def read_batches(
    path: Path, fmt: str, on_malformed: Callable[[int | None, str], None], batch_rows: int = 65536
) -> Iterator[pa.RecordBatch]:
    """Stream the required columns as strings, ``batch_rows`` at a time."""
    if fmt == "parquet":
        pf = pq.ParquetFile(path)
        _check_columns(pf.schema_arrow.names, path)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=list(REQUIRED_COLUMNS)):
            yield pa.RecordBatch.from_arrays(
                [batch.column(c).cast(pa.string()) for c in REQUIRED_COLUMNS],
                names=list(REQUIRED_COLUMNS),
            )
        return
    _check_columns(column_names(path, fmt), path)

    def handler(row: pacsv.InvalidRow) -> str:
        on_malformed(row.number, row.text or "")
        return "skip"

    stream = pa.input_stream(str(path), compression="detect")
    reader = pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(block_size=1 << 22),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=handler),
        convert_options=pacsv.ConvertOptions(
            include_columns=list(REQUIRED_COLUMNS),
            column_types={c: pa.string() for c in REQUIRED_COLUMNS},
        ),
    )
    with stream:
        yield from reader


def column_names(path: Path, fmt: str) -> list[str]:
    """The column names of a source file, from its header (a CSV's first block) alone."""
    if fmt == "parquet":
        return pq.read_schema(path).names
    with pa.input_stream(str(path), compression="detect") as head:
        return pacsv.open_csv(
            head,
            parse_options=pacsv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=lambda _row: "skip"
            ),
        ).schema.names


def missing_columns(names: list[str]) -> list[str]:
    """The required columns that ``names`` lacks."""
    return [c for c in REQUIRED_COLUMNS if c not in names]


def _check_columns(names: list[str], path: Path) -> None:
    missing = missing_columns(names)
    if missing:
        raise PlanError(
            f"{path.name} lacks required column(s) {', '.join(missing)}; it has {names}. "
            f"Required: {', '.join(REQUIRED_COLUMNS)} (any order, extra columns are fine)."
        )


def url_problem(url: str) -> str | None:
    """Why ``url`` is unusable, or None when it is a plausible http(s) or file URL."""
    if not url:
        return "missing_url"
    if any(ch.isspace() for ch in url):
        return "invalid_url"
    try:
        parts = urlparse(url)
    except ValueError:
        return "invalid_url"
    if parts.scheme in ("http", "https") and parts.hostname:
        return None
    if parts.scheme == "file" and parts.path:
        return None
    return "invalid_url"


def parse_side(text: str) -> tuple[int | None, str | None]:
    """An image side from its text: (value, None) or (None, reject reason)."""
    try:
        value = float(text)
    except ValueError:
        return None, "bad_size"
    if not math.isfinite(value) or value != int(value) or value == 0 or abs(value) > MAX_SIDE:
        return None, "bad_size"
    if value < 0:
        return None, "negative_size"
    return int(value), None


def check_row(rec: dict[str, str | None], seen: set[str]) -> tuple[dict | None, str, str]:
    """Normalise one row; returns (row, "", "") or (None, reason, detail)."""
    rid = (rec["id"] or "").strip()
    prompt = _SPACE.sub(" ", rec["prompt"] or "").strip()
    url = (rec["url"] or "").strip()
    if not rid:
        return None, "missing_id", "id is empty"
    if not prompt:
        return None, "empty_prompt", "prompt is empty"
    if reason := url_problem(url):
        return None, reason, f"url {url[:200]!r}"
    sides = {}
    for side in ("width", "height"):
        sides[side], reason = parse_side((rec[side] or "").strip())
        if reason:
            return None, reason, f"{side} {rec[side]!r}"
    if rid in seen:
        return None, "duplicate_id", f"id {rid!r} appeared earlier; the first one is kept"
    seen.add(rid)
    row = {"id": rid, "prompt": prompt, "url": url, **sides}
    return {**row, "source_site": (rec["source_site"] or "").strip()}, "", ""


class _ShardWriter:
    """Buffers valid rows and writes each full shard atomically."""

    def __init__(self, data: DataDir, shard_size: int) -> None:
        self.data, self.shard_size = data, shard_size
        self.rows: list[dict] = []
        self.shards: list[ShardRef] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        name = shard_name(len(self.shards))
        table = pa.Table.from_pylist(self.rows, schema=SHARD_SCHEMA)
        with atomic_path(self.data.shard_file(name)) as tmp:
            pq.write_table(table, tmp)
        self.shards.append(ShardRef(name, len(self.rows)))
        self.rows = []


def plan(
    info: SourceInfo,
    data: DataDir,
    *,
    shard_size: int,
    limit: int | None = None,
    force: bool = False,
) -> PlanManifest:
    """Split ``info``'s valid rows into shards of ``shard_size``; the same input gives the same
    shards. An existing plan of the same source and settings is reused."""
    if shard_size < 1:
        raise PlanError(f"shard size must be >= 1, got {shard_size}")
    if limit is not None and limit < 1:
        raise PlanError(f"limit must be >= 1, got {limit}")
    if data.manifest.exists() and not force:
        old = PlanManifest.from_dict(read_json(data.manifest))
        if (old.source_sha256, old.shard_size, old.limit) == (info.sha256, shard_size, limit):
            return old
        raise PlanError(
            f"{data.root} was planned from another source or settings (sha256 "
            f"{old.source_sha256[:12]}, shard size {old.shard_size}, limit {old.limit}); "
            "use a new --data-dir, or --force to re-plan (later stages will redo every shard)"
        )
    if force:
        shutil.rmtree(data.plan_dir, ignore_errors=True)
        shutil.rmtree(data.root / "state", ignore_errors=True)
    return _write_plan(info, data, shard_size=shard_size, limit=limit)


def _write_plan(info: SourceInfo, data: DataDir, *, shard_size: int, limit: int | None):
    shards = _ShardWriter(data, shard_size)
    rejects: list[dict] = []
    reasons: Counter[str] = Counter()
    seen: set[str] = set()
    total = 0

    def malformed(line: int | None, text: str) -> None:
        reasons["malformed_row"] += 1
        detail = f"line {line}: {text[:300]}" if line else text[:300]
        rejects.append({"row_number": None, "reason": "malformed_row", "detail": detail})

    with atomic_path(data.rejects) as tmp, pq.ParquetWriter(tmp, REJECT_SCHEMA) as out:
        for batch in read_batches(Path(info.path), info.fmt, malformed):
            for rec in batch.to_pylist():
                if limit is not None and total >= limit:
                    break
                row, reason, detail = check_row(rec, seen)
                if row is None:
                    reasons[reason] += 1
                    rejects.append({"row_number": total, "reason": reason, "detail": detail, **rec})
                else:
                    shards.add({"row_number": total, **row})
                total += 1
            out.write_table(pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA))
            rejects.clear()
            if limit is not None and total >= limit:
                break
        shards.flush()
    rejected = sum(reasons.values())
    manifest = PlanManifest(
        source_sha256=info.sha256,
        shard_size=shard_size,
        limit=limit,
        rows_total=total + reasons["malformed_row"],
        rows_valid=sum(s.rows for s in shards.shards),
        rows_rejected=rejected,
        rejects_by_reason=dict(reasons),
        shards=shards.shards,
    )
    write_json(data.manifest, manifest.to_dict())
    return manifest


def load_manifest(data: DataDir) -> PlanManifest:
    """The plan of ``data``; a clear error when it was never planned."""
    if not data.manifest.exists():
        raise PlanError(f"{data.root} has no plan yet: run `promptlake ingest SOURCE` first")
    return PlanManifest.from_dict(read_json(data.manifest))


def read_shard(data: DataDir, shard: str) -> pa.Table:
    """The planned rows of one shard."""
    return pq.read_table(data.shard_file(shard), schema=SHARD_SCHEMA)


@task(name="plan")
def plan_task(
    info: SourceInfo, data_dir: str, shard_size: int, limit: int | None, force: bool = False
) -> PlanManifest:
    """Prefect task: plan shards (reused when already planned the same way)."""
    return plan(info, DataDir(data_dir), shard_size=shard_size, limit=limit, force=force)
