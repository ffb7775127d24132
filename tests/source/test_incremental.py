"""A source that grows and changes, ingested again without --force: only the difference is
fetched and embedded, and the store then equals the source, nothing duplicated."""

import json
from collections import Counter

import pytest

from promptlake.cli import main
from promptlake.settings import Settings, store_url
from promptlake.storage.datadir.image_cache import ImageCache
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.store import open_store
from promptlake.tasks.clip.encoder import get_encoder
from tests.conftest import write_csv

pytestmark = pytest.mark.usefixtures("prefect_server", "tiny_cli_env")


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


def _draw(folder, name, prompt):
    from promptlake.sample_data import sample_image
    from promptlake.tasks.metadata import ImageMeta, save_with_metadata

    meta = ImageMeta(prompt, "blurry", {"Steps": "20", "Model": "sdxl-base"})
    (folder / name).write_bytes(save_with_metadata(sample_image(prompt, size=64), meta))


def test_grown_folder_ingests_only_the_difference(tmp_path, capsys):
    """Files added, replaced and deleted: only they are read, fetched and embedded; the store
    then holds exactly the folder's images; an unchanged folder is not read again."""
    folder, data_dir = tmp_path / "images", str(tmp_path / "d")
    folder.mkdir()
    for i in range(10):
        _draw(folder, f"{i}.png", f"a picture number {i}, oil painting")
    argv = ["ingest-images", str(folder), "--data-dir", data_dir]
    assert main([*argv, "--shard-size", "4"]) == 0
    data = DataDir(data_dir)
    scan = data.source_dir / "images.scan.json"
    assert json.loads(scan.read_text())["read"] == 10
    fetched = set(Markers(data, "fetch").all_done())

    for i in range(10, 13):
        _draw(folder, f"{i}.png", f"a picture number {i}, watercolor")
    _draw(folder, "4.png", "a picture number 4, redrawn in ink")
    (folder / "7.png").unlink()
    assert main(argv) == 0
    assert json.loads(scan.read_text())["read"] == 4  # 3 new, 1 replaced: the rest unread
    new = {s: st for s, st in Markers(data, "fetch").all_done().items() if s not in fetched}
    assert sum(st.extra["fetched"] for st in new.values()) == 4
    held = _store_rows(data_dir)
    prompts = sorted(p for _, p in held["prompts"])
    assert len(prompts) == 12 and "a picture number 4, redrawn in ink" in prompts
    assert "a picture number 7, oil painting" not in prompts
    assert sorted(held["images"]) == sorted(held["prompts"])

    before = data.manifest.read_text()
    assert main(argv) == 0  # unchanged: nothing read, the plan reused
    assert json.loads(scan.read_text())["read"] == 0 and data.manifest.read_text() == before


def test_a_row_removed_then_added_back_keeps_its_cached_image(
    tmp_path, data, server, embed_settings
):
    """Removed in one generation and back, same image, in the next, with no reconcile between
    (the run that would have reconciled failed): the reconcile after applies both generations
    and must not forget the image of a row that is live again (its shard's status says ok)."""
    from promptlake.storage.datadir.planfiles import read_index
    from promptlake.tasks.download import download
    from promptlake.tasks.fetch import run_shard
    from promptlake.tasks.load import reconcile
    from promptlake.tasks.plan import plan

    s = embed_settings.model_copy(update={"data_dir": data.root})
    rows = [
        [f"x{i}", f"prompt {i}, oil", server.url("img", f"x{i}"), 64, 64, "s"] for i in range(4)
    ]

    def planned(rows):
        src = write_csv(tmp_path / "p.csv", rows)
        return plan(download(str(src), data), data, shard_size=10)

    run_shard(planned(rows).shards[0].name, data, s)
    assert planned(rows[:1] + rows[2:]).generations[-1].removed == 1  # x1 gone
    back = planned(rows)  # x1 back: a new shard, its image already cached for its URL
    run_shard(back.shards[-1].name, data, s)
    assert server.requests["/img/x1"] == 1
    reconcile(data, s, [ref.name for ref in back.shards])
    cache = ImageCache.open(data.image_cache)
    assert "x1" in read_index(data)["id"].to_pylist()
    assert cache.images_for([("x1", rows[1][2])])  # still there for the live row
