"""What a source file must be before its rows are read: a supported format, and for a CSV not
empty and text — checked on its first bytes, so a wrong file fails at once with its name, not
with a parser's error full of binary junk. No Prefect here: the CLI checks before any work."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from promptlake.storage.datadir.records import REQUIRED_COLUMNS

FORMATS = {".csv": "csv", ".gz": "csv.gz", ".parquet": "parquet", ".pq": "parquet"}
HEAD_BYTES = 1 << 16


class DownloadError(RuntimeError):
    """The source could not be resolved to a readable local file. ``transient`` errors (the
    network) are worth retrying; a missing file or a bad name is not."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class SourceFileError(ValueError):
    """A source file that cannot be a dataset (empty, binary, not Parquet); the message names
    the file and says what is expected."""


def detect_format(name: str) -> str:
    """The file format of ``name`` from its suffix; an error lists the supported ones."""
    lower = name.lower()
    if lower.endswith(".csv.gz"):
        return "csv.gz"
    fmt = FORMATS.get(Path(lower).suffix)
    if fmt is None or fmt == "csv.gz":
        raise DownloadError(f"unsupported source format {name!r}: use .csv, .csv.gz or .parquet")
    return fmt


def check_file(path: Path, fmt: str) -> None:
    """Raise :class:`SourceFileError` when ``path`` is empty, or binary where a CSV is expected,
    or not Parquet where Parquet is."""
    if fmt == "parquet":
        with open(path, "rb") as fh:
            if fh.read(4) != b"PAR1":
                raise SourceFileError(
                    f"{path} is not a Parquet file (it does not start with PAR1): give a "
                    ".csv, .csv.gz or .parquet file of prompts"
                )
        return
    head = _head(path, fmt)
    if not head.strip():
        raise SourceFileError(
            f"{path} is empty: a CSV needs a header line ({', '.join(REQUIRED_COLUMNS)}) and "
            "one row per prompt"
        )
    where = _binary_at(head)
    if where is not None:
        raise SourceFileError(
            f"{path} is not a text CSV (binary or non-UTF-8 data at byte {where:,}): give a "
            "UTF-8 .csv, a .csv.gz or a .parquet file of prompts"
        )


def _head(path: Path, fmt: str) -> bytes:
    if fmt != "csv.gz":
        with open(path, "rb") as fh:
            return fh.read(HEAD_BYTES)
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read(HEAD_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceFileError(f"{path} is not a gzip-compressed CSV ({exc})") from exc


def _binary_at(head: bytes) -> int | None:
    """The offset of the first byte that cannot be in a UTF-8 text file, or None. A few bytes
    that are not UTF-8 are the rows' problem (each such row becomes a ``bad_encoding``
    reject); many (over 1% of the head) mean binary data or another encoding."""
    if b"\x00" in head:
        return head.index(b"\x00")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        invalid = len(head) - len(head.decode("utf-8", errors="ignore").encode("utf-8"))
        if exc.start < len(head) - 4 and invalid > max(8, len(head) // 100):
            return exc.start
    return None
