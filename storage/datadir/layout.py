"""The data directory: where every stage keeps its files, and atomic writes into it."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class DataDir:
    """Paths of one promptlake data directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"DataDir({str(self.root)!r})"

    def relative(self, path: Path) -> str:
        """``path`` (absolute) as recorded in the data dir's state: relative to the root when
        it lies under it (the data dir may move), else as it is."""
        return (
            path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)
        )

    def moved_path(self, text: str, was: str | None = None) -> str:
        """A path recorded by :meth:`relative` (or, in older records, an absolute path under
        the data dir's former place ``was``) as a path under this data dir. Anything else — a
        URL, ``kaggle:…``, a path elsewhere — is returned as it is."""
        if "://" in text or text.startswith("kaggle:"):
            return text
        path = Path(text)
        if not path.is_absolute():
            return str(self.root / path)
        if was and path.is_relative_to(was):
            return str(self.root / path.relative_to(was))
        return text

    @property
    def source_dir(self) -> Path:
        return self.root / "source"

    @property
    def source_info(self) -> Path:
        return self.source_dir / "source.json"

    @property
    def plan_dir(self) -> Path:
        return self.root / "plan"

    @property
    def manifest(self) -> Path:
        return self.plan_dir / "manifest.json"

    @property
    def rejects(self) -> Path:
        return self.plan_dir / "rejects.parquet"

    def shard_file(self, shard: str) -> Path:
        return self.plan_dir / "shards" / f"{shard}.parquet"

    @property
    def row_index(self) -> Path:
        """Every live row's id, fingerprint and shard: what the next plan compares against."""
        return self.plan_dir / "index.parquet"

    @property
    def retired_rows(self) -> Path:
        return self.plan_dir / "retired.parquet"

    @property
    def staging(self) -> Path:
        """The source's valid rows while a plan is being made."""
        return self.plan_dir / ".staging.parquet"

    def fetch_status(self, shard: str) -> Path:
        return self.root / "fetch" / f"{shard}.parquet"

    def embed_dir(self, namespace: str) -> Path:
        return self.root / "embed" / namespace

    def vectors(self, namespace: str, kind: str, shard: str) -> Path:
        return self.embed_dir(namespace) / kind / f"{shard}.parquet"

    @property
    def image_cache(self) -> Path:
        return self.root / "cache" / "images.lmdb"

    def state_dir(self, stage: str) -> Path:
        return self.root / "state" / stage

    def shard_work(self) -> list[Path]:
        """What the stages made from the plan on (a forced ingest redoes all of it)."""
        stages = [self.state_dir(s) for s in ("fetch", "embed", "load", "index")]
        return [self.plan_dir, self.root / "fetch", self.root / "embed", *stages]

    @property
    def ingest_record(self) -> Path:
        """The parameters of the last ingest, for ``resume``."""
        return self.root / "state" / "ingest.json"

    @property
    def reconciled(self) -> Path:
        """How many retired rows the store and the cache have already let go of."""
        return self.root / "state" / "reconciled.json"

    @property
    def index_marker(self) -> Path:
        return self.state_dir("index") / "store.json"

    @property
    def scanned_images(self) -> Path:
        """A folder source, scanned into a dataset of its images' metadata."""
        return self.source_dir / "images.parquet"

    @property
    def feedback_images(self) -> Path:
        return self.root / "feedback" / "images"


@contextlib.contextmanager
def atomic_path(target: Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place only on success (synced
    to disk first unless ``durable`` is false: for files that mean nothing after a reboot)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if durable:
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(target: Path, data: Any, *, durable: bool = True) -> None:
    """Write ``data`` as JSON to ``target`` atomically."""
    with atomic_path(target, durable=durable) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


def read_json(target: Path) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(target.read_bytes())  # UTF-8 found by json itself: no text decoding pass
