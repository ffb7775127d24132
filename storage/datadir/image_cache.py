"""LMDB image cache: resized, re-encoded images and each row's fetch record, keyed by row id.
An entry belongs to the live version of its row: only live rows are fetched, a changed row's new
URL replaces its old image, and readers check the record's URL against the row's
(``images_for``).

One ``lmdb.Environment`` per path per process (LMDB forbids opening a path twice in a process),
one writer at a time, and a map that doubles when full. Changing the map size invalidates every
open transaction of the process (py-lmdb aborts them), so it happens only under the gate's
exclusive hold: when this process's map is full, and when another process grew the map past
this process's view (``MapResizedError``), which this process then adopts.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import mmap
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lmdb

from promptlake.storage.datadir import crashpoints
from promptlake.storage.datadir.records import FetchRecord

_OPEN: dict[Path, ImageCache] = {}
_OPEN_LOCK = threading.Lock()
# unmapping a read-only shared file mapping loses nothing: the pages are the file's
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)
_LIBC = ctypes.CDLL(None, use_errno=True) if _DONTNEED is not None else None


class _Gate:
    """Many readers or one exclusive holder (the map resize needs no open transactions). A
    waiting exclusive holder goes first: readers in a loop would otherwise starve it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._exclusive = False
        self._waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._exclusive and self._readers == 0)
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


@dataclass(frozen=True)
class CachedImage:
    """A cached image with the fetch record it was stored with."""

    body: bytes
    record: FetchRecord

    @property
    def version(self) -> str:
        """The record's version, or the stored bytes' hash for a record without one."""
        return self.record.version or hashlib.blake2b(self.body, digest_size=8).hexdigest()


class ImageCache:
    """Images and fetch records in one LMDB environment."""

    def __init__(self, path: Path, map_size: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        # sync=False: a commit reaches the OS page cache, which survives a killed process;
        # sync() at the end of each shard makes it durable against power loss too.
        self.env = _open_env(path, map_size)
        self._meta = self._open_db(b"meta")
        self._img = self._open_db(b"img")
        self._write_lock = threading.Lock()
        self._gate = _Gate()

    def _open_db(self, name: bytes) -> lmdb._Database:
        while True:
            try:
                return self.env.open_db(name)
            except lmdb.MapResizedError:  # grown by another process since the open
                self.env.set_mapsize(0)  # nothing else uses this env yet: adopt its size

    @classmethod
    def open(cls, path: str | os.PathLike[str], map_size: int = 1 << 30) -> ImageCache:
        """The process-wide cache for ``path``, opened on first use."""
        key = Path(path).resolve()
        with _OPEN_LOCK:
            if key not in _OPEN:
                _OPEN[key] = cls(key, map_size)
            return _OPEN[key]

    def put_many(self, items: Iterable[tuple[FetchRecord, bytes | None]]) -> None:
        """Store records (and images, where fetched) in one transaction."""
        batch = [(r.id.encode(), json.dumps(r.to_dict()).encode(), img) for r, img in items]
        with self._write_lock:
            while True:
                try:
                    with self._txn(write=True) as txn:
                        for key, meta, img in batch:
                            txn.put(key, meta, db=self._meta)
                            if img is not None:
                                txn.put(key, img, db=self._img)
                            else:
                                txn.delete(key, db=self._img)
                    break
                except lmdb.MapFullError:
                    self._resize(self.env.info()["map_size"] * 2)
        crashpoints.reached("cache:put")

    def put(self, record: FetchRecord, image: bytes | None) -> None:
        self.put_many([(record, image)])

    def delete(self, ids: Iterable[str]) -> int:
        """Forget the records and images of ``ids`` (rows the source no longer has); returns how
        many records there were."""
        keys = [rid.encode() for rid in ids]
        if not keys:
            return 0
        with self._write_lock, self._txn(write=True) as txn:
            found = sum(txn.delete(key, db=self._meta) for key in keys)
            for key in keys:
                txn.delete(key, db=self._img)
        crashpoints.reached("cache:delete")
        return found

    def records(self, ids: Iterable[str]) -> dict[str, FetchRecord]:
        """Fetch records for the ids that have one."""
        out = {}
        with self._txn() as txn:
            for rid in ids:
                raw = txn.get(rid.encode(), db=self._meta)
                if raw is not None:
                    out[rid] = FetchRecord.from_dict(json.loads(bytes(raw)))
        return out

    def images(self, ids: Iterable[str]) -> dict[str, bytes]:
        """Encoded images for the ids that have one."""
        out = {}
        with self._txn() as txn:
            for rid in ids:
                raw = txn.get(rid.encode(), db=self._img)
                if raw is not None:
                    out[rid] = bytes(raw)
        return out

    def images_for(self, wanted: Iterable[tuple[str, str | None]]) -> dict[str, CachedImage]:
        """The cached images of the ``(id, url)`` pairs whose record is of that very URL (one
        read transaction): an entry of another version of the row is not its image. A URL of
        None takes whatever the id holds."""
        out = {}
        with self._txn() as txn:
            for rid, url in wanted:
                raw = txn.get(rid.encode(), db=self._meta)
                record = FetchRecord.from_dict(json.loads(bytes(raw))) if raw is not None else None
                if record is None or (url is not None and record.url != url):
                    continue
                img = txn.get(rid.encode(), db=self._img)
                if img is not None:
                    out[rid] = CachedImage(bytes(img), record)
        return out

    def count(self) -> dict[str, int]:
        with self._txn() as txn:
            return {
                "records": txn.stat(self._meta)["entries"],
                "images": txn.stat(self._img)["entries"],
            }

    def sync(self) -> None:
        self.env.sync(True)

    def release(self) -> None:
        """Let go of the cache's pages this process has mapped by reading: they stay in the
        OS page cache, and a later read maps them again (a minor fault). Without this, a
        long-lived worker holds every page it ever read as its own resident memory (~8 MiB
        more per embedded shard of 1,000 images). Linux only; elsewhere it does nothing."""
        if _LIBC is None:
            return
        with self._gate.shared():  # no resize moves the map meanwhile
            for start, length in _mapped(self.path / "data.mdb"):
                if _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), _DONTNEED):
                    err = ctypes.get_errno()
                    raise OSError(err, f"madvise of the image cache map: {os.strerror(err)}")

    @property
    def map_size(self) -> int:
        return self.env.info()["map_size"]

    @contextmanager
    def _txn(self, *, write: bool = False) -> Iterator[lmdb.Transaction]:
        """A transaction under the gate's shared hold; committed on success, aborted on error."""
        while True:
            with self._gate.shared():
                try:
                    txn = self.env.begin(write=write)
                except lmdb.MapResizedError:
                    txn = None  # another process grew the map: adopt it, outside the shared hold
                if txn is not None:
                    with txn:
                        yield txn
                    return
            self._resize(0)

    def _resize(self, size: int) -> None:
        """Set the map size (0: adopt the size another process set) with no transaction open."""
        with self._gate.exclusive():
            self.env.set_mapsize(size)


def _open_env(path: Path, map_size: int, tries: int = 20) -> lmdb.Environment:
    """``lmdb.open``, again when another process grew the map between this open's reading of
    its size and its first transaction (MDB_MAP_RESIZED; the next open reads the new size)."""
    for _ in range(tries - 1):
        try:
            return _lmdb_open(path, map_size)
        except lmdb.MapResizedError:
            continue
    return _lmdb_open(path, map_size)


def _lmdb_open(path: Path, map_size: int) -> lmdb.Environment:
    return lmdb.open(
        str(path),
        map_size=map_size,
        max_dbs=4,
        sync=False,
        metasync=False,
        readahead=False,
        max_readers=512,
    )


def _mapped(path: Path) -> list[tuple[int, int]]:
    """(address, length) of this process's mappings of ``path``, from /proc/self/maps (LMDB
    does not say where its map is); none where that file does not exist."""
    if _DONTNEED is None or not os.path.exists("/proc/self/maps"):
        return []
    found, name = [], str(path)
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].rstrip("\n") == name:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                found.append((start, end - start))
    return found
