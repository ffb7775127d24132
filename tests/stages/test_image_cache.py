"""The LMDB image cache shared by processes: a map another process grows is adopted safely."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from promptlake.storage.datadir.image_cache import ImageCache
from promptlake.storage.datadir.records import FetchRecord
from tests.helpers import ROOT

SMALL_MAP = 128 * 1024

WRITER = """
import faulthandler, os, sys
faulthandler.dump_traceback_later(150, exit=True)  # a hang fails the test with this stack
from pathlib import Path
from promptlake.storage.datadir.image_cache import ImageCache
from promptlake.storage.datadir.records import FetchRecord

path, small, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cache = ImageCache(path, small)
i = 0
while cache.map_size < 8 * small or i < n:  # grow the map at least three doublings
    rid = f"child{i}"
    cache.put(FetchRecord(rid, f"http://x.test/{rid}", "ok"), (rid * 700).encode())
    i += 1
ids = [f"main{j}" for j in range(int(sys.argv[4]))]
seen = cache.images(ids)
assert all(seen[r] == (r * 700).encode() for r in ids), "the parent's images are not readable"
print(f"done {i} {cache.map_size}", flush=True)
"""


def _image(rid: str) -> bytes:
    return (rid * 700).encode()


def _put(cache: ImageCache, rids: list[str]) -> None:
    cache.put_many((FetchRecord(r, f"http://x.test/{r}", "ok"), _image(r)) for r in rids)


@pytest.mark.timeout(600)  # the child's own stack dump (150 s) comes first
def test_map_grown_by_another_process_while_threads_read(tmp_path):
    """Another process doubles the map several times while this process's threads read and
    write: no thread sees an error, and every record is readable in both processes after."""
    path = tmp_path / "images.lmdb"
    cache = ImageCache(path, SMALL_MAP)
    mine = [f"main{j}" for j in range(40)]
    _put(cache, mine)
    errors: list[BaseException] = []
    reads = [0]
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                got = cache.images(mine)
                assert got == {r: _image(r) for r in mine}, "an image changed under a reader"
                assert set(cache.records(mine)) == set(mine)
                reads[0] += 1
                time.sleep(0)  # let the other threads have the GIL between passes
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    def writer() -> None:
        try:
            j = 0
            while not stop.wait(0.01):  # paced: its write lock would hold the other process up
                _put(cache, [f"late{j}"])
                j += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    try:
        child = subprocess.run(
            [sys.executable, "-c", WRITER, str(path), str(SMALL_MAP), "300", str(len(mine))],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert child.returncode == 0, child.stderr[-3000:]
    assert not errors, repr(errors[:3])
    written = int(child.stdout.split()[1])
    assert reads[0] > 0 and cache.map_size >= 8 * SMALL_MAP  # this process adopted the growth
    theirs = [f"child{i}" for i in range(written)]
    assert cache.images(theirs) == {r: _image(r) for r in theirs}
    assert cache.images(mine) == {r: _image(r) for r in mine}
    counts = cache.count()
    assert counts["records"] == counts["images"] >= len(mine) + written
