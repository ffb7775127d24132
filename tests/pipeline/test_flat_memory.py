"""Memory that stays flat as shards go by: a process that read the image cache keeps none of its
pages mapped (they would count as its own memory: ~8 MiB per embedded shard of 1,000 images)."""

import os
import sys

import pytest

from promptlake.storage.datadir.image_cache import ImageCache
from promptlake.storage.datadir.records import FetchRecord

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/self/smaps"
)


def mapped_kib(path) -> int:
    """Resident KiB of this process's mappings of ``path`` (its Rss in /proc/self/smaps)."""
    rss, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()
            if "-" in head[0] and len(head) >= 5:  # a mapping's header line
                inside = line.rstrip("\n").endswith(" " + str(path))
            elif inside and head[0] == "Rss:":
                rss += int(head[1])
    return rss


def test_release_unmaps_what_reading_mapped_and_loses_nothing(tmp_path):
    cache = ImageCache.open(tmp_path / "c.lmdb")
    blobs = {f"r{i}": os.urandom(40_000) for i in range(200)}  # 8 MB that does not compress
    cache.put_many((FetchRecord(rid, "u", "ok"), b) for rid, b in blobs.items())
    mdb = tmp_path / "c.lmdb" / "data.mdb"
    assert cache.images(blobs) == blobs
    assert mapped_kib(mdb) > 4000
    cache.release()
    assert mapped_kib(mdb) == 0
    assert cache.images(blobs) == blobs  # read again from the OS page cache
    assert len(cache.records(blobs)) == 200


def test_fetch_and_embed_leave_no_cache_page_mapped(tmp_path, data, server, embed_settings):
    from promptlake.tasks import embed
    from promptlake.tasks.fetch import run_shard as fetch_shard
    from tests.conftest import make_shards

    s = embed_settings.model_copy(update={"data_dir": data.root})
    shards = make_shards(tmp_path, data, server, 60, shard_size=30)
    mdb = data.image_cache / "data.mdb"
    for shard in shards:
        assert fetch_shard(shard, data, s).ok == 30
        assert mapped_kib(mdb) == 0
        assert embed.run_shard(shard, data, s).by_status["image"] == 30
        assert mapped_kib(mdb) == 0
