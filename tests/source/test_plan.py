import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from promptlake.storage.datadir.planfiles import rejects_path
from promptlake.storage.datadir.records import REQUIRED_COLUMNS
from promptlake.tasks.download import download
from promptlake.tasks.plan import PlanError, plan, read_shard
from promptlake.tasks.source.rows import Columns, check_row, url_problem
from tests.conftest import write_csv

GOOD = [
    [f"g{i}", f"prompt {i}, oil painting", f"http://x.test/{i}.jpg", 512, 768, "lexica"]
    for i in range(10)
]
BAD = [
    ["", "no id", "http://x.test/a.jpg", 1, 1, "s"],
    ["b1", "   ", "http://x.test/b.jpg", 1, 1, "s"],
    ["b2", "no url", "", 1, 1, "s"],
    ["b3", "bad url", "ftp://x.test/c.jpg", 1, 1, "s"],
    ["b4", "bad url", "not a url", 1, 1, "s"],
    ["b5", "text size", "http://x.test/d.jpg", "wide", 1, "s"],
    ["b6", "negative", "http://x.test/e.jpg", 512, -1, "s"],
    ["b7", "zero", "http://x.test/e.jpg", 0, 512, "s"],
    ["g3", "dup", "http://x.test/f.jpg", 1, 1, "s"],
]
REASONS = [
    "missing_id",
    "empty_prompt",
    "missing_url",
    "invalid_url",
    "invalid_url",
    "bad_size",
    "negative_size",
    "bad_size",
    "duplicate_id",
]


def _plan(tmp_path, data, rows, shard_size=4, **kw):
    src = write_csv(tmp_path / "p.csv", rows)
    return plan(download(str(src), data), data, shard_size=shard_size, **kw)


def test_every_row_is_a_shard_row_or_a_reject_with_reason(tmp_path, data):
    m = _plan(tmp_path, data, GOOD + BAD)
    assert (m.rows_total, m.rows_valid, m.rows_rejected) == (19, 10, 9)
    assert [s.rows for s in m.shards] == [4, 4, 2]
    rejects = pq.read_table(rejects_path(data)).to_pylist()
    assert [r["reason"] for r in rejects] == REASONS
    assert [r["row_number"] for r in rejects] == list(range(10, 19))
    assert rejects[-1]["detail"].startswith("id 'g3' appeared earlier")
    ids = [r for s in m.shards for r in read_shard(data, s.name)["id"].to_pylist()]
    assert ids == [f"g{i}" for i in range(10)]


def test_malformed_csv_line_is_rejected_not_fatal(tmp_path, data):
    src = tmp_path / "p.csv"
    write_csv(src, GOOD[:2])
    with open(src, "a") as fh:
        fh.write('m1,"too few fields",http://x.test/m.jpg\n')
        fh.write('g9,"multi\nline prompt",http://x.test/9.jpg,5,5,s\n')
    m = plan(download(str(src), data), data, shard_size=10)
    assert m.rows_valid == 3 and m.rejects_by_reason == {"malformed_row": 1}
    assert "too few fields" in pq.read_table(rejects_path(data))["detail"][0].as_py()
    assert read_shard(data, "00000")["prompt"][2].as_py() == "multi line prompt"


def test_same_input_gives_same_shards(tmp_path, data):
    from promptlake.storage.datadir.layout import DataDir

    a = _plan(tmp_path, data, GOOD + BAD)
    other = DataDir(tmp_path / "other")
    b = plan(download(str(tmp_path / "p.csv"), other), other, shard_size=4)
    assert (a.shards, a.rows_valid, a.rejects_by_reason) == (
        b.shards,
        b.rows_valid,
        b.rejects_by_reason,
    )
    for s in a.shards:
        assert read_shard(data, s.name).equals(read_shard(other, s.name))


def test_columns_in_any_order_with_extras(tmp_path, data):
    header = ["extra", *reversed(REQUIRED_COLUMNS)]
    rows = [["z", *reversed(r)] for r in GOOD]
    src = write_csv(tmp_path / "p.csv", rows, header=header)
    m = plan(download(str(src), data), data, shard_size=100)
    t = read_shard(data, m.shards[0].name)
    assert t["id"].to_pylist()[0] == "g0" and t["width"].to_pylist()[0] == 512


def test_missing_column_is_named(tmp_path, data):
    src = write_csv(tmp_path / "p.csv", [r[:5] for r in GOOD], header=list(REQUIRED_COLUMNS[:5]))
    with pytest.raises(PlanError, match=r"lacks required column.*source_site"):
        plan(download(str(src), data), data, shard_size=10)


def test_gzip_and_parquet_sources_plan_alike(tmp_path, data):
    from promptlake.storage.datadir.layout import DataDir

    csv_path = write_csv(tmp_path / "p.csv", GOOD + BAD)
    gz = tmp_path / "p.csv.gz"
    gz.write_bytes(gzip.compress(csv_path.read_bytes()))
    cols = list(zip(*(GOOD + BAD), strict=True))
    table = pa.table({c: [str(v) for v in cols[i]] for i, c in enumerate(REQUIRED_COLUMNS)})
    table = table.set_column(3, "width", pa.array([512] * 10 + [1, 1, 1, 1, 1, None, 512, 0, 1]))
    pq.write_table(table, tmp_path / "p.parquet")
    results = []
    for i, path in enumerate([gz, tmp_path / "p.parquet"]):
        d = DataDir(tmp_path / f"d{i}")
        results.append(plan(download(str(path), d), d, shard_size=4))
    assert [r.rows_valid for r in results] == [10, 10]
    assert results[0].rejects_by_reason == results[1].rejects_by_reason | {"bad_size": 2}


def test_limit_and_replanning_rules(tmp_path, data):
    m = _plan(tmp_path, data, GOOD + BAD, limit=5)
    assert m.rows_total == 5 and m.rows_valid == 5
    assert _plan(tmp_path, data, GOOD + BAD, limit=5) == m  # same settings: reused
    with pytest.raises(PlanError, match="planned with shard size 4, not 3"):
        _plan(tmp_path, data, GOOD + BAD, shard_size=3, limit=5)
    m2 = _plan(tmp_path, data, GOOD + BAD, shard_size=3, force=True)
    assert m2.rows_valid == 10 and len(m2.shards) == 4


def test_row_checks():
    seen = Columns.of(list(REQUIRED_COLUMNS), Path("p.csv"))
    row, reason, _ = check_row(
        {
            "id": " x ",
            "prompt": " a\n cat ",
            "url": "https://h/x.png",
            "width": "512.0",
            "height": "640",
            "source_site": None,
        },
        seen,
    )
    assert reason == "" and row["prompt"] == "a cat" and row["width"] == 512 and row["id"] == "x"
    assert url_problem("file:///tmp/a.png") is None
    assert url_problem("http:///nohost.png") == "invalid_url"
    assert url_problem("http://h/a b.png") == "invalid_url"


def _rows(n, start=0, tag=""):
    return [
        [f"r{i}", f"prompt {i}{tag}, oil painting", f"http://x.test/{i}.jpg", 512, 512, "s"]
        for i in range(start, start + n)
    ]


def test_a_grown_source_is_planned_incrementally(tmp_path, data):
    """Append 30%, change 5%, delete 5%: existing shards stay as they were, only new and
    changed rows go into new shards, and the old copies are retired with a reason."""
    from promptlake.storage.datadir.planfiles import read_index, read_retired

    first = _plan(tmp_path, data, _rows(100), shard_size=10)
    before = {s.name: data.shard_file(s.name).read_bytes() for s in first.shards}
    rows = _rows(100)
    for i in range(5):  # change 5%
        rows[i * 20][1] = f"prompt {i * 20}, watercolor"
    del rows[95:]  # delete 5%
    rows += _rows(30, start=100)  # append 30%
    second = _plan(tmp_path, data, rows, shard_size=10)
    assert [s.name for s in second.shards] == [f"{i:05d}" for i in range(14)]
    assert {s.name: data.shard_file(s.name).read_bytes() for s in first.shards} == before
    gen = second.generations[-1]
    assert (gen.number, gen.added, gen.changed, gen.removed, gen.unchanged) == (2, 30, 5, 5, 90)
    assert gen.shards == ["00010", "00011", "00012", "00013"]
    assert second.rows_valid == 125 == sum(s.live for s in second.shards)
    new_ids = [i for s in gen.shards for i in read_shard(data, s)["id"].to_pylist()]
    assert new_ids == ["r0", "r20", "r40", "r60", "r80"] + [f"r{i}" for i in range(100, 130)]
    assert read_shard(data, "00010")["prompt"][1].as_py() == "prompt 20, watercolor"
    retired = read_retired(data).to_pylist()
    assert sorted((r["shard"], r["id"], r["reason"]) for r in retired) == sorted(
        [(f"{i * 2:05d}", f"r{i * 20}", "changed") for i in range(5)]
        + [("00009", f"r{i}", "removed") for i in range(95, 100)]
    )
    assert [s.retired for s in second.shards[:10]] == [1, 0, 1, 0, 1, 0, 1, 0, 1, 5]
    index = read_index(data)
    assert sorted(index["id"].to_pylist()) == sorted(r[0] for r in rows)
    assert _plan(tmp_path, data, rows, shard_size=10).generations == second.generations  # reused


def test_columns_beyond_the_six_are_kept(tmp_path, data):
    header = [*REQUIRED_COLUMNS, "Negative_Prompt", "seed", "model", "sampler_name", "foo"]
    rows = [[*r, "blurry", 42, "sdxl-base", "euler", "bar"] for r in GOOD[:2]]
    m = plan(
        download(str(write_csv(tmp_path / "p.csv", rows, header=header)), data), data, shard_size=10
    )
    row = read_shard(data, m.shards[0].name).to_pylist()[0]
    assert (row["negative_prompt"], row["model_name"]) == ("blurry", "sdxl-base")
    assert json.loads(row["settings"]) == {"sampler_name": "euler", "seed": "42"}
    assert json.loads(row["extra"]) == {"foo": "bar"}


def test_a_plan_made_before_generations_had_folders_is_read_and_repaired(tmp_path, data):
    """A data dir planned by the older code (index, retired rows and rejects directly in
    plan/), damaged as its bug left them: a change planned, and the run killed after the index
    and the retired rows were written but before the manifest (the retired rows of the dead
    attempt appended twice, the index naming shards the manifest never did). The next plan
    leaves those out, plans the change again, and writes the folder layout."""
    from promptlake.storage.datadir.layout import read_json, write_json
    from promptlake.storage.datadir.planfiles import read_index, read_retired

    first = _plan(tmp_path, data, _rows(20), shard_size=10)
    gen = data.generation_dir(1)
    for name in ("index", "retired", "rejects"):  # as the older code kept them
        (gen / f"{name}.parquet").rename(data.plan_file(0, name))
    write_json(data.manifest, {**read_json(data.manifest), "generation": 0})
    changed = _rows(20)
    changed[3][1] = "prompt 3, watercolor"
    dead = {"shard": "00000", "id": "r3", "generation": 2, "reason": "changed"}
    pq.write_table(pa.Table.from_pylist([dead, dead]), data.plan_file(0, "retired"))  # twice
    index = read_index(data).to_pylist()
    index[3]["shard"] = "00002"  # the dead attempt's new shard, which no manifest names
    pq.write_table(
        pa.Table.from_pylist(index, schema=read_index(data).schema), data.plan_file(0, "index")
    )
    assert read_retired(data).num_rows == 0  # an uncommitted generation is not the plan's
    second = _plan(tmp_path, data, changed, shard_size=10)
    assert [s.name for s in second.shards] == ["00000", "00001", "00002"]
    assert second.generation == 2 and (second.generations[-1].changed, first.rows_valid) == (1, 20)
    assert read_retired(data).to_pylist() == [
        {"shard": "00000", "id": "r3", "generation": 2, "reason": "changed"}
    ]
    assert sorted(read_index(data)["id"].to_pylist()) == sorted(r[0] for r in changed)
    assert not data.plan_file(0, "index").exists() and not data.generation_dir(1).exists()
