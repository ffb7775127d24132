"""The embedded store on a disk that fills up (real chDB on a 40 MB tmpfs; skipped without root):
a DELETE that cannot get space is cancelled instead of waited for, no DDL is issued to a store
whose schema matches, and a store that chDB left with empty metadata files (its ENOSPC bug)
opens again with every row. And a shard's failure is recorded on a disk with 0 bytes free."""

from __future__ import annotations

import errno
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from promptlake.storage.datadir import diskspace
from promptlake.storage.datadir.diskspace import DiskFull
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.datadir.vectors import list_column
from promptlake.storage.store import Store, open_store, schema
from tests.helpers.disk import small_disk

DIM, ROWS = 8, 2000


@pytest.fixture
def disk(tmp_path):
    yield from small_disk(tmp_path / "disk")


def _rows(shard: str, n: int = ROWS) -> pa.Table:
    vectors = np.random.default_rng(1).random((n, DIM), dtype=np.float32)
    return pa.table(
        {
            "id": [f"{shard}-{i}" for i in range(n)],
            "prompt": [f"prompt {i}, a lighthouse at dusk" for i in range(n)],
            "url": [f"http://x/{i}.jpg" for i in range(n)],
            "width": pa.array([512] * n, pa.uint32()),
            "height": pa.array([512] * n, pa.uint32()),
            "source_site": ["s"] * n,
            "origin": ["dataset"] * n,
            "shard": [shard] * n,
            "model": ["m"] * n,
            "prompt_vector": list_column(vectors),
        }
    )


def _loaded(path: Path) -> Store:
    store = open_store(f"chdb://{path}")
    with store.turn("test"):
        store.ensure_schema("m", DIM)
        store.load_shard("prompts", "00000", _rows("00000"))
    return store


def _count(store: Store) -> int:
    with store.turn("test"):
        return store.count("prompts")


def test_a_delete_on_a_full_disk_is_cancelled_not_waited_for(disk):
    store = _loaded(disk.path / "store")
    for left_kb in (0, 32):
        disk.fill(left_kb)
        start = time.monotonic()
        with pytest.raises(DiskFull, match=r"MB free on .* need about .* for delete shard 00000"):
            store.delete_shard("prompts", "00000")  # what a reload of the shard starts with
        assert time.monotonic() - start < 30, "the DELETE was waited for"
        with pytest.raises(DiskFull, match="for load shard 00000"):
            store.load_shard("prompts", "00000", _rows("00000"))  # refused before any write
        assert _count(store) == ROWS  # nothing lost
    disk.unfill()
    store.load_shard("prompts", "00000", _rows("00000"))  # space back: the reload goes through
    assert _count(store) == ROWS
    store.close()


def test_a_store_damaged_by_chdb_on_a_full_disk_opens_again(disk):
    path = disk.path / "store"
    store = _loaded(path)
    store.close()  # the next turn opens the engine again
    sql = list((path / "metadata").glob("*/*.sql"))
    before = {p: p.stat().st_mtime_ns for p in sql}
    with store.turn("test"):
        store.ensure_schema("m", DIM)  # the schema matches: no DDL, no metadata file rewritten
    assert {p: p.stat().st_mtime_ns for p in sql} == before
    store.close()

    disk.fill(4)  # what an older promptlake's schema step did at every load: an ALTER …
    with store.turn("test"):
        store.client.command(
            "ALTER TABLE promptlake.prompts ADD COLUMN IF NOT EXISTS note String AFTER tool"
        )
    store.close()
    disk.unfill()
    damaged = [p for p in sql if p.stat().st_size == 0]
    assert damaged, "chDB no longer empties a metadata file on a full disk: revisit repair.py"

    assert _count(store) == ROWS  # opened again: mended from the kept copy, parts kept
    hits = store.search("prompts", [0.5] * DIM, k=3)
    assert len(hits) == 3
    assert list((Path(f"{path}.turn") / "repaired").rglob("prompts.sql"))  # the old one kept
    store.close()

    shutil.rmtree(Path(f"{path}.turn") / "schema")  # no copy kept (a store of an older version)
    disk.fill(4)
    with store.turn("test"):
        store.client.command("ALTER TABLE promptlake.prompts ADD COLUMN IF NOT EXISTS n2 String")
    store.close()
    disk.unfill()
    assert (path / "metadata" / "promptlake" / "prompts.sql").stat().st_size == 0
    assert _count(store) == ROWS  # made as this version makes it, the dimension from images'
    with store.turn("test"):
        store.ensure_schema("m", DIM)
        assert len(store.search("prompts", [0.5] * DIM, k=3)) == 3
    store.close()


def test_a_store_made_on_a_full_disk_is_refused_then_mended(disk):
    path = disk.path / "new"
    store = open_store(f"chdb://{path}")
    disk.fill(16)
    with pytest.raises(DiskFull, match="for the store's schema"):
        store.ensure_schema("m", DIM)  # refused before any DDL
    with store.turn("test"):  # the same DDL sent anyway (an older promptlake, another tool)
        ddl = schema.missing_ddl("promptlake", {}, DIM)
        for sql in ["CREATE DATABASE IF NOT EXISTS promptlake", *ddl]:
            store.client.command(sql)  # chDB says OK and leaves empty metadata files
    store.close()
    disk.unfill()
    assert [p for p in path.rglob("*.sql") if p.stat().st_size == 0]
    with store.turn("test"):  # the empty new tables are removed, then made again
        store.ensure_schema("m", DIM)
        store.load_shard("prompts", "00000", _rows("00000"))
    assert _count(store) == ROWS
    store.close()


def test_a_shard_failure_is_recorded_on_a_full_disk(disk):
    """The run's ballast is let go so that the record fits; a full disk's error is said as one."""
    data = DataDir(disk.path / "d")
    assert diskspace.make_reserve(data.root / "state", floor=0)
    markers = Markers(data, "load")
    disk.fill(0)
    full = pytest.raises(DiskFull, match=r"MB free on .* for load shard 00000")
    with full, markers.recording("00000"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert markers.failures()["00000"].startswith("promptlake.storage.datadir.diskspace.DiskFull")
    assert not diskspace.reserve_path(data.root / "state").exists()
