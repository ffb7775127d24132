"""Store contract: run on embedded chDB always, and on a ClickHouse server when
PROMPTLAKE_TEST_CLICKHOUSE_URL is set (clickhouse://user:pass@host:port/db)."""

import os
import shutil
import subprocess
import sys
import uuid
from subprocess import PIPE

import numpy as np
import pyarrow as pa
import pytest

from promptlake.storage.datadir.vectors import ModelMismatch
from promptlake.storage.store import Filters, StoreError, knn, open_store
from promptlake.storage.store.dialects import ClickHouseDialect, IndexParams, MyScaleDialect
from promptlake.storage.store.hits import StoreUnavailable
from promptlake.storage.store.knn import KnnTuning
from promptlake.storage.store.urls import parse_store_url
from tests.helpers import ROOT

DIM = 16
SERVER = os.environ.get("PROMPTLAKE_TEST_CLICKHOUSE_URL")


@pytest.fixture(params=["chdb", "clickhouse"])
def store(request, tmp_path):
    if request.param == "chdb":
        s = open_store(f"chdb://{tmp_path / 'store'}")
    elif not SERVER:
        pytest.skip("set PROMPTLAKE_TEST_CLICKHOUSE_URL to run the contract on a server")
    else:
        s = open_store(SERVER.rstrip("/") + f"/pl_test_{uuid.uuid4().hex[:8]}")
    s.ensure_schema("test-model@1", DIM)
    yield s
    s.close()


def _rows(n, shard, seed=0, sites=("lexica", "civitai")):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(8, DIM))
    vecs = centers[rng.integers(0, 8, n)] + 0.3 * rng.normal(size=(n, DIM))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"{shard}-{i}" for i in range(n)]
    table = pa.table(
        {
            "id": ids,
            "prompt": [f"prompt {i}" for i in ids],
            "url": [f"http://x/{i}" for i in ids],
            "width": pa.array([256 + 128 * (i % 4) for i in range(n)], pa.uint32()),
            "height": pa.array([512] * n, pa.uint32()),
            "source_site": [sites[i % len(sites)] for i in range(n)],
            "shard": [shard] * n,
            "model": ["test-model@1"] * n,
            "prompt_vector": pa.array(list(vecs), pa.list_(pa.float32())),
        }
    )
    return table, vecs


def test_loading_a_shard_twice_adds_nothing(store):
    table, _ = _rows(50, "00000")
    assert store.load_shard("prompts", "00000", table) == 50
    store.load_shard("prompts", "00000", table)
    store.load_shard("prompts", "00001", _rows(30, "00001", seed=1)[0])
    assert store.count("prompts") == 80


def test_self_retrieval_before_and_after_the_index(store):
    table, vecs = _rows(300, "00000")
    store.load_shard("prompts", "00000", table)
    for i in (0, 17, 299):
        assert store.search("prompts", vecs[i].tolist(), k=5)[0].id == f"00000-{i}"
    status = store.build_index("prompts", DIM, IndexParams(quantization="f32", m=16))
    assert status and status[0][1] == "vector_similarity"
    for i in (0, 17, 299):
        hits = store.search("prompts", vecs[i].tolist(), k=5)
        assert hits[0].id == f"00000-{i}" and hits[0].distance < 1e-5
        assert [h.distance for h in hits] == sorted(h.distance for h in hits)


def test_filters_still_return_k_hits(store):
    table, vecs = _rows(200, "00000")
    store.load_shard("prompts", "00000", table)
    store.build_index("prompts", DIM, IndexParams(quantization="f32"))
    f = Filters(source_site="civitai", min_width=512)
    hits = store.search("prompts", vecs[0].tolist(), k=20, filters=f)
    assert len(hits) == 20
    assert all(h.source_site == "civitai" and h.width >= 512 for h in hits)
    nothing = store.search("prompts", vecs[0].tolist(), k=5, filters=Filters(origin="feedback"))
    assert nothing == []


def _meta_rows(n: int, seed: int = 0, vecs: np.ndarray | None = None):
    """Rows whose metadata gives every filter kind a broad and a narrow value, none of it tied
    to the vectors; returns the table, the vectors and the metadata for the ground truth."""
    rng = np.random.default_rng(seed)
    if vecs is None:
        centers = rng.normal(size=(8, DIM))
        vecs = centers[rng.integers(0, 8, n)] + 0.5 * rng.normal(size=(n, DIM))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    meta = {
        "source_site": rng.choice(["lexica", "civitai", "rare"], n, p=[0.49, 0.49, 0.02]),
        "origin": np.where(rng.random(n) < 0.02, "feedback", "dataset"),
        "width": rng.choice([512, 768, 1024, 2048], n, p=[0.5, 0.25, 0.23, 0.02]),
        "height": rng.choice([512, 768, 1024, 2048], n, p=[0.5, 0.25, 0.23, 0.02]),
    }
    ids = [f"m{i:05d}" for i in range(n)]
    table = pa.table(
        {
            "id": ids,
            "prompt": ids,
            "url": ids,
            "width": pa.array(meta["width"], pa.uint32()),
            "height": pa.array(meta["height"], pa.uint32()),
            "source_site": meta["source_site"],
            "origin": meta["origin"],
            "shard": ["00000"] * n,
            "model": ["test-model@1"] * n,
            "prompt_vector": pa.array(list(vecs), pa.list_(pa.float32())),
        }
    )
    return table, vecs, meta


# each filter kind, broad and narrow: the filter, and the rows it keeps
FILTER_KINDS = [
    (Filters(source_site="lexica"), lambda m: m["source_site"] == "lexica"),
    (Filters(source_site="rare"), lambda m: m["source_site"] == "rare"),
    (Filters(origin="dataset"), lambda m: m["origin"] == "dataset"),
    (Filters(origin="feedback"), lambda m: m["origin"] == "feedback"),
    (Filters(min_width=768), lambda m: m["width"] >= 768),
    (Filters(min_width=2048), lambda m: m["width"] >= 2048),
    (Filters(min_height=1024), lambda m: m["height"] >= 1024),
    (Filters(min_height=2048), lambda m: m["height"] >= 2048),
    (Filters(source_site="civitai", min_width=1024), lambda m: (m["source_site"] == "civitai")
     & (m["width"] >= 1024)),
]  # fmt: skip


@pytest.mark.parametrize("path", ["planned", "index", "exact"])
def test_filtered_knn_contract(store, path):
    """Every filter kind, broad and narrow, through each way a filtered search can run (as
    planned; forced through the index's post-filter; forced exact): k rows whenever k rows
    match (all of them when fewer do), each matching, nearest first, the true neighbours."""
    table, vecs, meta = _meta_rows(4000)
    store.load_shard("prompts", "00000", table)
    store.build_index("prompts", DIM, IndexParams(quantization="f32"))
    forced = {
        "index": KnnTuning(index_values=0, candidate_values=0),
        "exact": KnnTuning(safety=1e9),
    }
    store.knn_tuning = forced.get(path, KnnTuning())
    queries = np.random.default_rng(7).normal(size=(5, DIM))
    for filters, keep in FILTER_KINDS:
        mask = keep(meta)
        for k in (10, int(mask.sum()) + 5):
            found = 0.0
            for q in queries:
                hits = store.search("prompts", q.tolist(), k=k, filters=filters)
                assert len(hits) == min(k, mask.sum()), (filters, k)
                rows = [int(h.id[1:]) for h in hits]
                assert mask[rows].all(), filters
                assert [h.distance for h in hits] == sorted(h.distance for h in hits)
                sims = np.where(mask, vecs @ (q / np.linalg.norm(q)), -2.0)
                found += len(set(rows) & set(np.argsort(-sims)[:k].tolist())) / len(rows)
            assert found / len(queries) >= (1.0 if path == "exact" else 0.9), (filters, k)


def test_a_broad_filter_on_the_sort_key_is_answered_by_the_index(store):
    """A filter on the sort key makes the engine scan the rows it keeps rather than use the
    vector index, whatever the filter strategy asks; a broad filter (half of the rows) must be
    answered by the index: the search reads a fraction of those rows' vectors, if any."""
    n = 20_000
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(20, DIM))  # 20 clusters of 1000 consecutive ids
    vecs = centers[np.arange(n) // 1000] + 0.05 * rng.normal(size=(n, DIM))
    table, vecs, meta = _meta_rows(n, vecs=vecs)
    for size in ("width", "height"):  # one size: a site's rows lie in id order, a cluster's
        table = table.set_column(  # in one or two granules
            table.schema.get_field_index(size), size, pa.array([512] * n, pa.uint32())
        )
    store.load_shard("prompts", "00000", table)
    store.build_index("prompts", DIM, IndexParams(quantization="f32"))
    store.knn_tuning = KnnTuning(index_values=DIM * 6_000, candidate_values=DIM * 9)  # at 512-d
    before = _selected_bytes(store)
    hits = store.search("prompts", centers[7].tolist(), k=10, filters=Filters(source_site="lexica"))
    read = _selected_bytes(store) - before
    assert len(hits) == 10 and all(h.source_site == "lexica" for h in hits)
    assert {int(h.id[1:]) // 1000 for h in hits} == {7}
    vectors = int((meta["source_site"] == "lexica").sum()) * DIM * 4
    assert read < vectors / 2, f"{read} bytes read: the filter's {vectors} bytes of vectors"


def _selected_bytes(store) -> int:
    sql = "SELECT value FROM system.events WHERE event = 'SelectedBytes'"
    return int(store.client.query(sql).result_rows[0][0])


def test_the_plan_of_each_filter_shape():
    """The cheaper of an exact scan (the sort key's rows, or a granule per match at most) and
    the index with candidates for the filter's share (the engine's cap raised to match); no
    query when no row matches. ``count`` is asked only when the estimate does not decide."""
    asked = []

    def shape(rows, marks, total, matches, k=10):
        def count():
            asked.append((total, matches))
            return total, matches

        return knn.plan(knn.FilterShape(rows, marks), k, 512, count)

    tiny_range = shape(4_096, 4, 900_000, 4_000)
    assert tiny_range.exact and tiny_range.settings == knn.EXACT and not asked
    narrow_key = shape(9_216, 9, 900_000, 9_000)  # 1% on the sort key: 9 granules to scan
    assert narrow_key.exact and asked == [(900_000, 9_000)]
    broad_key = shape(225_280, 220, 900_000, 225_000)  # 25% on the sort key
    assert not broad_key.exact and broad_key.settings == {
        "use_primary_key": 0,
        "vector_search_filter_strategy": "postfilter",
        "vector_search_index_fetch_multiplier": 8,
        "max_limit_for_vector_search_queries": 1000,
    }
    most = shape(893_856, 873, 900_000, 890_905)
    assert most.settings["vector_search_index_fetch_multiplier"] == 3
    scattered = shape(900_000, 879, 900_000, 9_000)  # 1%, spread over every granule
    assert scattered.settings["vector_search_index_fetch_multiplier"] == 200
    assert scattered.settings["max_limit_for_vector_search_queries"] == 2000
    assert shape(900_000, 879, 900_000, 12).exact  # 12 granules at most
    assert shape(900_000, 879, 900_000, 0).empty
    assert shape(900_000, 879, 900_000, 9_000, k=1000).exact  # 200,000 candidates per part


def test_values_are_bound_not_pasted(store):
    table, vecs = _rows(20, "00000")
    store.load_shard("prompts", "00000", table)
    evil = Filters(source_site="x' OR 1=1 --")
    assert store.search("prompts", vecs[0].tolist(), k=5, filters=evil) == []
    with pytest.raises(StoreError, match="min_width must be a whole number"):
        store.search("prompts", vecs[0].tolist(), filters=Filters(min_width=-3))
    with pytest.raises(StoreError, match="unknown table"):
        store.search("prompts; DROP TABLE x", vecs[0].tolist())
    with pytest.raises(StoreError, match="k must be"):
        store.search("prompts", vecs[0].tolist(), k=0)


def test_empty_store_and_wrong_vectors(store):
    assert store.search("images", [1.0] + [0.0] * (DIM - 1), k=3) == []
    bad, _ = _rows(3, "00009")
    bad = bad.set_column(
        bad.schema.get_field_index("prompt_vector"),
        "prompt_vector",
        pa.array([[1.0, 0.0]] * 3, pa.list_(pa.float32())),
    )
    with pytest.raises(Exception, match="prompt_vector_len"):
        store.load_shard("prompts", "00009", bad)
    with pytest.raises(ModelMismatch, match="not of other-model"):
        store.ensure_schema("other-model@2", DIM)


def test_store_urls():
    assert parse_store_url("chdb:///var/pl").path == "/var/pl"
    u = parse_store_url("clickhouse://bob:s%40cret@db.example:9000/prompts")
    assert (u.host, u.port, u.database, u.user, u.password) == (
        "db.example",
        9000,
        "prompts",
        "bob",
        "s@cret",
    )
    for bad in ("chdb://", "postgres://x/y", "clickhouse:///nohost"):
        with pytest.raises(StoreError):
            parse_store_url(bad)


def test_myscale_sql_text():
    d = MyScaleDialect()
    assert (
        d.distance("prompt_vector", "{q:Array(Float32)}")
        == "distance(prompt_vector, {q:Array(Float32)})"
    )
    (ddl,) = d.add_index("pl.prompts", "prompt_vector", 512, IndexParams())
    assert ddl == (
        "ALTER TABLE pl.prompts ADD VECTOR INDEX IF NOT EXISTS prompt_vector_idx "
        "prompt_vector TYPE MSTG('metric_type=Cosine')"
    )
    assert "system.vector_indices" in d.index_status()
    assert not d.plans_filters  # MyScale pre-filters; ClickHouse's HNSW post-filters
    assert ClickHouseDialect().plans_filters
    assert "SCANN" in MyScaleDialect("SCANN").add_index("t", "v", 4, IndexParams())[0]
    with pytest.raises(ValueError, match="MSTG or SCANN"):
        MyScaleDialect("HNSWFLAT")


def _open_error(url: str) -> str:
    store = open_store(url)
    with pytest.raises(StoreUnavailable) as err, store.turn("open", wait=0):
        pytest.fail("opened a store that cannot be opened")
    return str(err.value)


def test_a_store_held_outside_the_turns_names_its_holder(tmp_path):
    """A chDB program that does not take promptlake's turns (or an older promptlake)."""
    path = tmp_path / "held"
    code = f"import chdb, time; c = chdb.connect({str(path)!r}); print('held', flush=True); "
    holder = subprocess.Popen([sys.executable, "-c", code + "time.sleep(120)"], stdout=PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        text = _open_error(f"chdb://{path}")
        assert f"is held by pid {holder.pid} ({sys.executable} -c import chdb" in text
        assert "does not take promptlake's turns" in text and "clickhouse://" in text
    finally:
        holder.kill()
        holder.wait()


def test_a_store_path_that_is_a_file(tmp_path):
    (tmp_path / "store").write_text("not a store")
    assert "is a file, not a directory" in _open_error(f"chdb://{tmp_path / 'store'}")


def test_a_store_from_another_chdb_version(tmp_path):
    path = tmp_path / "store"
    store = open_store(f"chdb://{path}")
    store.ensure_schema("test-model@1", DIM)
    store.close()
    # what a newer chDB leaves behind: a table setting this one does not know
    (meta,) = path.glob("store/*/*/meta.sql")
    meta.write_text(meta.read_text().replace("SETTINGS ", "SETTINGS a_setting_of_chdb_99 = 1, "))
    text = _open_error(f"chdb://{path}")
    assert "cannot read the store" in text and "a_setting_of_chdb_99" in text
    assert "written by another chDB version" in text


@pytest.mark.skipif(
    os.geteuid() == 0 and not shutil.which("unshare"), reason="root ignores permissions"
)
def test_a_store_this_user_may_not_write(tmp_path):
    path = tmp_path / "store"
    store = open_store(f"chdb://{path}")
    store.ensure_schema("test-model@1", DIM)
    store.close()
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    code = (
        "from promptlake.storage.store import open_store\n"
        f"with open_store({f'chdb://{path}'!r}).turn('x', wait=0): pass"
    )
    # root ignores permissions; in a user namespace of its own it is an ordinary user
    prefix = ["unshare", "--user"] if os.geteuid() == 0 else []
    done = subprocess.run(
        [*prefix, sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True
    )
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    assert done.returncode == 1
    assert "StoreUnavailable: permission denied for the store" in done.stderr
    assert "Permission denied" in done.stderr
