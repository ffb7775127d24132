"""Bytes that are not UTF-8 are one row's fault, not the file's.

The source is read as bytes; each batch is cast to text in one go (Arrow validates UTF-8 in C:
no cost when every byte is fine). Only a batch whose cast fails is looked at row by row: each row
holding bytes that are not UTF-8 leaves the batch and is reported — its column, the bad bytes,
and the line of the file where they are — so the plan can keep it as a ``bad_encoding`` reject,
and the other rows go on.

Rejected, not repaired: replacing the bytes (U+FFFD) would silently change an id or a URL (two
ids could become one, a URL another) and a prompt for good; the reject keeps the row's values
(undecodable bytes written as ``\\xe9``) and where it is, so it can be fixed at the source and
ingested again — a plan of the fixed file adds it as a new row.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

# (line of the file or None, detail, the row's values as text) for each rejected row
OnBadEncoding = Callable[[int | None, str, dict[str, str | None]], None]
CHUNK = 1 << 20


class LineFinder:
    """The line of a CSV (``.csv.gz`` decompressed) where given bytes are, searching forward
    from the last find: rejects come in file order, so the file is read at most once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stream: pa.NativeFile | None = None
        self.window = b""  # what was read and not yet passed
        self.lines = 1  # the line the window starts on

    def line_of(self, needle: bytes) -> int | None:
        if not needle:
            return None
        if self.stream is None:
            self.stream = pa.input_stream(str(self.path), compression="detect")
        while True:
            at = self.window.find(needle)
            if at >= 0:
                line = self.lines + self.window.count(b"\n", 0, at)
                end = at + len(needle)  # the next find starts after this one
                self.lines += self.window.count(b"\n", 0, end)
                self.window = self.window[end:]
                return line
            block = self.stream.read(CHUNK)
            if not block:
                return None
            keep = len(needle) - 1  # a match may straddle two blocks
            passed = self.window[: len(self.window) - keep] if keep else self.window
            self.lines += passed.count(b"\n")
            self.window = self.window[len(passed) :] + block

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def _needle(value: bytes, start: int) -> bytes:
    """The bytes around ``value[start]`` exactly as the file holds them: a CSV doubles quotes
    inside a field, so the run between quotes (and line ends) is cut out."""
    parts = re.split(rb'["\r\n]', value)
    pos = 0
    for part in parts:
        if pos <= start < pos + len(part):
            lo = max(0, start - pos - 24)
            return part[lo : start - pos + 24]
        pos += len(part) + 1
    return b""


def decoded(
    batch: pa.RecordBatch, on_bad: OnBadEncoding, lines: LineFinder | None
) -> pa.RecordBatch:
    """``batch`` (binary columns) as text columns, without the rows that are not UTF-8, each
    of which goes to ``on_bad``."""
    names = batch.schema.names
    try:
        return pa.RecordBatch.from_arrays([c.cast(pa.string()) for c in batch.columns], names)
    except pa.ArrowInvalid:
        pass
    bad: dict[int, tuple[str, bytes, UnicodeDecodeError]] = {}
    for name, column in zip(names, batch.columns, strict=True):
        for i, value in enumerate(column.to_pylist()):
            if value is None or i in bad:
                continue
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad[i] = (name, value, exc)
    for i in sorted(bad):
        name, value, err = bad[i]
        line = lines.line_of(_needle(value, err.start)) if lines else None
        near = value[max(0, err.start - 12) : err.end + 12]
        where = f"line {line:,}, column {name}" if line else f"column {name}"
        detail = f"{where}: not UTF-8 at byte {err.start:,} ({near!r})"
        row = {n: _text(batch.column(k)[i].as_py()) for k, n in enumerate(names)}
        on_bad(line, detail, row)
    keep = pa.array([i not in bad for i in range(batch.num_rows)])
    kept = batch.filter(keep)
    return pa.RecordBatch.from_arrays([c.cast(pa.string()) for c in kept.columns], names)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", errors="backslashreplace")
