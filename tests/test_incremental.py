"""A source that grows and changes, ingested again without --force: only the difference is
fetched and embedded, and the store then equals the source, nothing duplicated."""

from collections import Counter

import pytest

from promptlake.cli import main
from promptlake.settings import Settings, store_url
from promptlake.storage.image_cache import ImageCache
from promptlake.storage.layout import DataDir
from promptlake.storage.markers import Markers
from promptlake.storage.store import open_store
from promptlake.tasks.encoder import get_encoder
from tests.conftest import write_csv

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(autouse=True)
def _env(monkeypatch, tiny_clip):
    monkeypatch.setenv("PROMPTLAKE_CLIP_MODEL", tiny_clip)
    monkeypatch.setenv("PROMPTLAKE_DEVICE", "cpu")
    monkeypatch.setenv("PROMPTLAKE_RUNNER", "thread")


def _rows(server, ids, tag=""):
    return [
        [f"r{i}", f"prompt {i}{tag}, oil", server.url("img", f"r{i}"), 64, 64, "s"] for i in ids
    ]


def _store_rows(data_dir):
    store = open_store(store_url(Settings(data_dir=data_dir)))
    q = "SELECT id, prompt FROM promptlake.{} WHERE origin = 'dataset'"
    return {t: store.client.query(q.format(t)).result_rows for t in ("prompts", "images")}


def test_grown_csv_ingests_only_the_difference(tmp_path, server, tiny_clip, capsys):
    data_dir = str(tmp_path / "d")
    src = tmp_path / "p.csv"
    argv = ["ingest", str(src), "--data-dir", data_dir, "--shard-size", "10"]
    write_csv(src, _rows(server, range(40)))
    assert main(argv) == 0
    requests_before = sum(server.requests.values())
    ns = get_encoder(tiny_clip, "cpu").info.namespace
    embedded = Markers(DataDir(data_dir), f"embed/{ns}")
    stamps = {s: embedded.path(s).stat().st_mtime_ns for s in embedded.all_done()}

    rows = _rows(server, range(40))
    rows[3] = _rows(server, [3], tag=" (changed)")[0]  # 5% changed: a new prompt, same image
    rows[17] = _rows(server, [17], tag=" (changed)")[0]
    rows[5][2] = server.url("img", "r5-new")  # a new image for the same id: fetched again
    del rows[38:]  # 5% removed
    rows += _rows(server, range(40, 52))  # 30% added
    write_csv(src, rows)
    assert main(argv) == 0
    assert sum(server.requests.values()) - requests_before == 13  # the added and the new image
    assert {s: embedded.path(s).stat().st_mtime_ns for s in stamps} == stamps  # old work stays
    new = {s: st for s, st in embedded.all_done().items() if s not in stamps}
    assert sorted(new) == ["00004", "00005"]
    assert sum(st.by_status["text"] for st in new.values()) == 15  # 12 added + 3 changed
    held = _store_rows(data_dir)
    for table in ("prompts", "images"):
        assert Counter(i for i, _ in held[table]) == Counter(r[0] for r in rows), table
        assert sorted(held[table]) == sorted((r[0], r[1]) for r in rows)
    cache = ImageCache.open(DataDir(data_dir).image_cache)
    assert not cache.records(["r38", "r39"])  # removed rows left the cache index too
    out = capsys.readouterr().out
    assert "plan generation 2:" in out and "+12 added, 3 changed, -2 removed" in out

    before = sum(server.requests.values())
    assert main(argv) == 0  # nothing new: no request, no model work
    assert sum(server.requests.values()) == before
    assert set(embedded.all_done()) == set(stamps) | set(new)
