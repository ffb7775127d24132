"""The source's rows: streamed in Arrow batches, their columns mapped onto promptlake's, each row
normalised and checked (a bad row gets a reason, never an exception), and fingerprinted so that
the next plan can tell new, changed and removed rows apart."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from promptlake.storage.datadir.records import REQUIRED_COLUMNS
from promptlake.tasks.source.encoding import LineFinder, OnBadEncoding, decoded
from promptlake.tasks.source.sourcefile import check_file

MAX_SIDE = 1 << 20
_SPACE = re.compile(r"\s+")
# columns beyond the six, by the names datasets give them (compared in lower case)
ALIASES = {
    "negative_prompt": ("negative_prompt", "negative", "neg_prompt", "negativeprompt"),
    "model_name": ("model_name", "model", "checkpoint", "ckpt", "sd_model"),
    "tool": ("tool", "generator", "software"),
    "settings": ("settings", "generation"),  # a JSON object of generation settings
}
SETTING_COLUMNS = (  # single settings, gathered into the settings object under their own names
    "seed",
    "steps",
    "sampler",
    "sampler_name",
    "scheduler",
    "cfg",
    "cfg_scale",
    "guidance_scale",
    "denoise",
    "clip_skip",
)


class PlanError(ValueError):
    """The source cannot be planned (missing columns, or a data dir planned differently)."""


@dataclass(frozen=True)
class Columns:
    """How a source's header maps onto promptlake's row: the six required columns by name, the
    known optional ones by alias, and every other column kept as ``extra``."""

    names: tuple[str, ...]
    roles: dict[str, str] = field(default_factory=dict)  # optional role → source column
    settings: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    @classmethod
    def of(cls, names: list[str], path: Path) -> Columns:
        missing = missing_columns(names)
        if missing:
            raise PlanError(
                f"{path.name} lacks required column(s) {', '.join(missing)}; it has {names}. "
                f"Required: {', '.join(REQUIRED_COLUMNS)} (any order, extra columns are kept)."
            )
        rest = [n for n in names if n not in REQUIRED_COLUMNS]
        roles = {}
        for role, aliases in ALIASES.items():
            found = next((n for a in aliases for n in rest if n.strip().lower() == a), None)
            if found is not None:
                roles[role] = found
        taken = set(roles.values())
        settings = tuple(n for n in rest if n not in taken and n.strip().lower() in SETTING_COLUMNS)
        extra = tuple(n for n in rest if n not in taken and n not in settings)
        return cls(tuple(names), roles, settings, extra)


def missing_columns(names: list[str]) -> list[str]:
    """The required columns that ``names`` lacks."""
    return [c for c in REQUIRED_COLUMNS if c not in names]


def column_names(path: Path, fmt: str) -> list[str]:
    """The column names of a source file, from its header (a CSV's first block) alone."""
    check_file(path, fmt)
    if fmt == "parquet":
        return pq.read_schema(path).names
    with pa.input_stream(str(path), compression="detect") as head:
        return pacsv.open_csv(
            head,
            parse_options=pacsv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=lambda _row: "skip"
            ),
        ).schema.names


def has_rows(path: Path, fmt: str) -> bool:
    """Whether a source file holds a row past its header, reading no more than it takes to see
    one (a Parquet file's footer; a CSV's first block that parses). A file it cannot read here
    counts as having rows: the plan stage reads it and says what is wrong."""
    try:
        if fmt == "parquet":
            return pq.ParquetFile(path).metadata.num_rows > 0
        with pa.input_stream(str(path), compression="detect") as head:
            names = column_names(path, fmt)
            reader = pacsv.open_csv(
                head,
                parse_options=pacsv.ParseOptions(
                    newlines_in_values=True, invalid_row_handler=lambda _row: "skip"
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.binary())
                ),
            )
            return any(batch.num_rows for batch in reader)
    except (pa.ArrowException, OSError):
        return True


def read_batches(
    path: Path,
    fmt: str,
    on_malformed: Callable[[int | None, str], None],
    on_bad_encoding: OnBadEncoding,
    batch_rows: int = 65536,
) -> tuple[Columns, Iterator[pa.RecordBatch]]:
    """The source's column map, and its rows as batches of string columns. A row holding bytes
    that are not UTF-8 goes to ``on_bad_encoding`` instead (``tasks.source.encoding``)."""
    if fmt == "parquet":
        pf = pq.ParquetFile(path)
        columns = Columns.of(pf.schema_arrow.names, path)
        parts = (_as_binary(b) for b in pf.iter_batches(batch_size=batch_rows))
        return columns, (decoded(b, on_bad_encoding, None) for b in parts)
    names = column_names(path, fmt)
    columns = Columns.of(names, path)

    def handler(row: pacsv.InvalidRow) -> str:
        on_malformed(row.number, row.text or "")
        return "skip"

    as_bytes = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.binary()))

    def batches() -> Iterator[pa.RecordBatch]:
        lines = LineFinder(path)
        with pa.input_stream(str(path), compression="detect") as stream:
            try:
                for batch in pacsv.open_csv(
                    stream,
                    read_options=pacsv.ReadOptions(block_size=1 << 22),
                    parse_options=pacsv.ParseOptions(
                        newlines_in_values=True, invalid_row_handler=handler
                    ),
                    convert_options=as_bytes,
                ):
                    yield decoded(batch, on_bad_encoding, lines)
            finally:
                lines.close()

    return columns, batches()


def _as_binary(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Every column of a Parquet batch as bytes (text is validated by ``decoded``)."""
    arrays = []
    for col in batch.columns:
        if pa.types.is_nested(col.type):  # lists, structs: their JSON text
            col = pa.array([None if v is None else json.dumps(v) for v in col.to_pylist()])
        elif not pa.types.is_binary(col.type):  # numbers, dates, text: as text
            col = col.cast(pa.string())
        arrays.append(col.cast(pa.binary()))
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


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


def check_row(rec: dict[str, str | None], columns: Columns) -> tuple[dict | None, str, str]:
    """Normalise one row; returns (row, "", "") or (None, reason, detail). Duplicate ids are
    the plan's concern (it sees all rows)."""
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
    row = {"id": rid, "prompt": prompt, "url": url, **sides}
    row["source_site"] = (rec["source_site"] or "").strip()
    return row | generation_fields(rec, columns), "", ""


def generation_fields(rec: dict[str, str | None], columns: Columns) -> dict[str, str]:
    """The row's generation columns: negative prompt, model, tool, settings and the rest."""

    def text(column: str | None) -> str:
        return (rec.get(column) or "").strip() if column else ""

    settings = _json_object(text(columns.roles.get("settings")))
    settings |= {c.strip(): text(c) for c in columns.settings if text(c)}
    extra = {c: rec[c] for c in columns.extra if rec.get(c) not in (None, "")}
    return {
        "negative_prompt": _SPACE.sub(" ", text(columns.roles.get("negative_prompt"))),
        "model_name": text(columns.roles.get("model_name")),
        "tool": text(columns.roles.get("tool")).lower(),
        "settings": json.dumps(settings, sort_keys=True, ensure_ascii=False),
        "extra": json.dumps(extra, sort_keys=True, ensure_ascii=False),
    }


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {"settings": text}  # not JSON: kept as written
    return value if isinstance(value, dict) else {"settings": value}


FINGERPRINTED = (
    "id",
    "prompt",
    "url",
    "width",
    "height",
    "source_site",
    "negative_prompt",
    "model_name",
    "tool",
    "settings",
    "extra",
)


def fingerprint(row: dict) -> bytes:
    """16 bytes that change when anything the stages use from the row changes."""
    text = "\x1f".join(str(row[k]) for k in FINGERPRINTED)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()
