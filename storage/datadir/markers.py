"""Completion markers (``state/<stage>/<shard>.json``) and failure records beside them.

Markers are the durable record of progress: a shard with a marker is done, whatever Prefect's
database says — as long as what the marker vouches for is still there. A marker records its
stage's outputs and the inputs it consumed (paths relative to the data dir; size, mtime and
sha256 of each). A marker whose output is missing, truncated or changed is *damaged*, and one
whose input changed since (a fetch redone, a status rewritten by ``--retry-failed``) is
*stale*: either way the shard is not done, and its stage runs again — and so, through their own
inputs, the stages after it. Checking costs a ``stat`` per file; a file is hashed again only
when its mtime moved (a copy of the data dir, a rewrite with the same bytes), and then the
marker learns the new mtime. Markers written before outputs were recorded are trusted as they
are.

A shard whose run raised gets ``<shard>.error.json`` instead, cleared on success. A full disk
does not lose it: the run's ballast (``storage.datadir.diskspace``) is released to let it in.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from promptlake.storage.datadir import diskspace
from promptlake.storage.datadir.layout import DataDir, read_json, write_json
from promptlake.storage.datadir.records import ShardStats


def file_facts(path: Path) -> dict[str, Any]:
    """What a marker keeps of a file: size, mtime_ns and sha256."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_of(path)}


def sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _differs(path: Path, facts: dict[str, Any]) -> str | None:
    """Why ``path`` is no longer the file ``facts`` describe, or None (its mtime is updated in
    ``facts`` when only that moved)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    if st.st_size != facts.get("size"):
        return f"{st.st_size:,} bytes instead of {facts.get('size', 0):,}"
    if st.st_mtime_ns != facts.get("mtime_ns"):
        if sha256_of(path) != facts.get("sha256"):
            return "changed (another sha256)"
        facts["mtime_ns"] = st.st_mtime_ns
    return None


class Markers:
    """Markers of one stage in one data directory."""

    def __init__(self, data: DataDir, stage: str) -> None:
        self.stage = stage
        self.data = data
        self.dir = data.state_dir(stage)

    def path(self, shard: str) -> Path:
        return self.dir / f"{shard}.json"

    def error_path(self, shard: str) -> Path:
        return self.dir / f"{shard}.error.json"

    def done(self, shard: str) -> bool:
        """Whether ``shard`` has a marker whose files check out (see the module docstring)."""
        return self.valid(shard) is not None

    def read(self, shard: str) -> ShardStats | None:
        """The marker as written, checked or not."""
        path = self.path(shard)
        return ShardStats.from_dict(read_json(path)) if path.exists() else None

    def valid(self, shard: str) -> ShardStats | None:
        """The marker of ``shard`` when its outputs and inputs are as it recorded them; None
        when there is none, or when it is damaged or stale (the shard must run again)."""
        stats = self.read(shard)
        return stats if stats is not None and self.problem(stats) is None else None

    def problem(self, stats: ShardStats) -> str | None:
        """Why ``stats``' shard is not done after all, or None."""
        moved = False
        for kind, files in (("output", stats.outputs), ("input", stats.inputs)):
            for rel, facts in files.items():
                mtime = facts.get("mtime_ns")
                why = _differs(self.data.root / rel, facts)
                if why:
                    return f"its {kind} {rel} is {why}"
                moved |= facts.get("mtime_ns") != mtime
        if moved:  # same bytes, new mtime: remembered, so the next check is a stat again
            with contextlib.suppress(OSError):
                path = self.path(stats.shard)
                update = {"outputs": stats.outputs, "inputs": stats.inputs}
                write_json(path, {**read_json(path), **update}, durable=False)
        return None

    def write(
        self, stats: ShardStats, *, outputs: Iterable[Path] = (), inputs: Iterable[Path] = ()
    ) -> None:
        """Mark ``stats.shard`` done, recording ``outputs`` (the files the stage wrote) and
        ``inputs`` (those it read); called only after the outputs are in place."""
        stats.outputs = {self._rel(p): file_facts(p) for p in outputs}
        stats.inputs = {self._rel(p): file_facts(p) for p in inputs}
        write_json(self.path(stats.shard), {**stats.to_dict(), "finished_at": time.time()})
        self.error_path(stats.shard).unlink(missing_ok=True)

    def _rel(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.data.root).as_posix()

    def record_failure(self, shard: str, exc: BaseException) -> None:
        """Remember why a shard failed, so ``status`` and ``resume`` can say it. Never raises:
        on a full disk the ballast makes room; failing that, the record goes to stderr."""
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        record = {"shard": shard, "error": detail, "at": time.time()}
        for _ in range(2):
            try:
                write_json(self.error_path(shard), record)
                return
            except OSError as err:
                if not (diskspace.is_full_disk(err, self.dir) and self._release_reserve()):
                    break
        print(f"promptlake: {self.stage} {shard} failed: {detail}", file=sys.stderr, flush=True)

    def _release_reserve(self) -> bool:
        return diskspace.release_reserve(self.data.root / "state")

    @contextmanager
    def recording(self, shard: str) -> Iterator[None]:
        """Record an exception raised inside as the shard's failure, then re-raise it (a full
        disk's error as :class:`diskspace.DiskFull`, which says what to do)."""
        try:
            yield
        except Exception as exc:
            if isinstance(exc, diskspace.DiskFull) or not diskspace.is_full_disk(
                exc, self.data.root
            ):
                self.record_failure(shard, exc)
                raise
            full = diskspace.as_disk_full(
                exc, self.data.root, what=f"{self.stage} shard {shard}", data_root=self.data.root
            )
            self.record_failure(shard, full)
            raise full from exc

    def all_done(self) -> dict[str, ShardStats]:
        """Every marked shard's stats, by shard name (one read of each marker file), checked
        or not."""
        return {name: ShardStats.from_dict(read_json(path)) for name, path in self._files(".json")}

    def checked(self) -> tuple[dict[str, ShardStats], dict[str, str]]:
        """The shards whose markers check out, and the damaged or stale ones with why."""
        good, bad = {}, {}
        for name, stats in self.all_done().items():
            why = self.problem(stats)
            if why is None:
                good[name] = stats
            else:
                bad[name] = why
        return good, bad

    def failures(self) -> dict[str, str]:
        """Why each failed shard failed, by shard name."""
        return {name: read_json(path).get("error", "") for name, path in self._files(".error.json")}

    def _files(self, suffix: str) -> list[tuple[str, Path]]:
        """(shard, path) of this stage's files ending in ``suffix``, in shard order: one listing
        of the folder (status reads thousands of markers; pathlib's glob costs more than the
        reads)."""
        try:
            entries = os.scandir(self.dir)
        except FileNotFoundError:
            return []
        with entries:
            found = [(e.name, Path(e.path)) for e in entries if e.name.endswith(suffix)]
        if suffix == ".json":  # a failure record is not a marker
            found = [(n, p) for n, p in found if not n.endswith(".error.json")]
        return sorted((n.removesuffix(suffix), p) for n, p in found)
