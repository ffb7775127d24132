"""load, index and search on embedded chDB, with vectors from the tiny CLIP."""

import json
import os
import subprocess
import sys

import pytest

from promptlake.cli import main
from promptlake.settings import store_url
from promptlake.storage.datadir.vectors import ModelMismatch
from promptlake.storage.store import Filters, StoreError, open_store
from promptlake.tasks import index, load
from promptlake.tasks.clip.encoder import get_encoder
from promptlake.tasks.plan import read_shard
from promptlake.tasks.query.search import SearchRequest, search
from tests.helpers.fault_server import make_image


def test_loads_are_idempotent_and_counted(data, built):
    s, shards = built
    store = open_store(store_url(s))
    assert (store.count("prompts"), store.count("images")) == (30, 24)
    load.run_shard(shards[0], data, s, force=True)
    assert (store.count("prompts"), store.count("images")) == (30, 24)
    report = index.run(data, s)
    assert set(report["tables"]) == {"prompts", "images"}
    assert index.run(data, s) == report  # nothing new: not rebuilt


def test_self_retrieval_for_prompts_and_images(tmp_path, data, built):
    s, shards = built
    index.run(data, s)
    rows = read_shard(data, shards[1]).to_pylist()
    for row in rows[:4]:
        hits = search(SearchRequest(text=row["prompt"], k=3), data, s)
        assert hits[0].id == row["id"] and hits[0].distance < 1e-4
    pic = tmp_path / "e13.jpg"
    pic.write_bytes(make_image("e13"))  # the very image the server sent for row e13
    hits = search(SearchRequest(image=str(pic), target="images", k=3), data, s)
    assert hits[0].id == "e13" and hits[0].distance < 0.01
    reverse = search(SearchRequest(image=str(pic), target="prompts", k=5), data, s)
    assert len(reverse) == 5  # image -> prompts (a random tiny model: no rank to check)
    logged = (
        open_store(store_url(s))
        .client.query("SELECT count(), countIf(best_distance IS NOT NULL) FROM promptlake.searches")
        .result_rows[0]
    )
    assert logged == (6, 6)


def test_filters_and_bad_requests(data, built):
    s, _ = built
    hits = search(SearchRequest(text="a cat", k=50, filters=Filters(source_site="s")), data, s)
    assert len(hits) == 30
    assert search(SearchRequest(text="a cat", filters=Filters(origin="feedback")), data, s) == []
    with pytest.raises(StoreError, match="give a text"):
        search(SearchRequest(text="  "), data, s)
    with pytest.raises(StoreError, match="target must be"):
        search(SearchRequest(text="x", target="videos"), data, s)
    with pytest.raises(StoreError, match="image not found"):
        search(SearchRequest(image="/nope.png"), data, s)


def test_unknown_model_is_refused(tmp_path, data, built):
    from promptlake.tiny_clip import build_clip

    s, _ = built
    other = s.model_copy(update={"clip_model": str(build_clip(tmp_path / "o", seed=3))})
    with pytest.raises(ModelMismatch) as refused:
        search(SearchRequest(text="a cat"), data, other)
    ns = get_encoder(s.clip_model, "cpu", "fp32").info.namespace
    assert str(refused.value) == (
        f"the store holds vectors of {s.clip_model} ({ns}), not of {other.clip_model}: "
        f"search with --model {s.clip_model}"
    )


def test_cli_search_json_and_table(data, built, capsys, monkeypatch):
    _s, shards = built
    monkeypatch.delenv("PROMPTLAKE_CLIP_MODEL", raising=False)
    monkeypatch.setenv("PROMPTLAKE_PRECISION", "fp32")
    prompt = read_shard(data, shards[0])["prompt"][0].as_py()
    assert main(["search", prompt, "-k", "3", "--data-dir", str(data.root), "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["id"] == "e0" and {"id", "prompt", "url", "distance"} <= set(hits[0])
    assert (
        main(["search", prompt, "-k", "2", "--data-dir", str(data.root), "--min-width", "100"]) == 0
    )
    out = capsys.readouterr().out
    assert "1. 0.0000" in out and "e0" in out
    assert main(["search", "--data-dir", str(data.root)]) == 2


def test_a_cold_cli_search_imports_only_what_it_needs(data, built):
    """A CLI search in a new process finds its hit without importing Prefect (~1 s of a cold
    search: tasks.query imports none; the flows wrap it in tasks/search.py)."""
    _s, shards = built
    prompt = read_shard(data, shards[0])["prompt"][0].as_py()
    env = {**os.environ, "PROMPTLAKE_PRECISION": "fp32"}
    env.pop("PROMPTLAKE_CLIP_MODEL", None)  # the data dir says which model
    argv = ["-X", "importtime", "-m", "promptlake.cli", "search", prompt, "-k", "1", "--json"]
    done = subprocess.run(
        [sys.executable, *argv, "--data-dir", str(data.root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)[0]["id"] == "e0"
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "torch" in imported and "chdb" in imported  # the line parsing sees what it should
    assert not {m for m in imported if m.split(".")[0] == "prefect"}


def test_flows_get_the_prefect_tasks():
    from prefect import Task

    from promptlake.tasks.refine import refine_task
    from promptlake.tasks.search import search_task

    assert isinstance(search_task, Task) and search_task.name == "search"
    assert isinstance(refine_task, Task) and refine_task.name == "refine"
