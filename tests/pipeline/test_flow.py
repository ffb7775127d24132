"""The ingest flow on a real Prefect server (the test harness)."""

import json
import os
import subprocess
import sys
import time

import pytest
from PIL import Image
from prefect.client.orchestration import get_client

from promptlake.cli import main
from promptlake.flows.ingest import ingest
from promptlake.flows.params import IngestParams
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.markers import Markers
from tests.conftest import artifacts_of, write_csv

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(autouse=True)
def _fast(monkeypatch, tiny_clip):
    monkeypatch.setenv("PROMPTLAKE_CLIP_MODEL", tiny_clip)
    monkeypatch.setenv("PROMPTLAKE_DEVICE", "cpu")
    for k, v in {
        "READ_TIMEOUT": "0.5",
        "BACKOFF_BASE": "0.01",
        "FETCH_RETRIES": "1",
        "TASK_RETRIES": "1",
        "TASK_RETRY_DELAY": "0",
    }.items():
        monkeypatch.setenv(f"PROMPTLAKE_{k}", v)


def _csv(tmp_path, server, n=12):
    kinds = ["img", "img", "404", "img", "html", "img"]
    rows = [
        [f"r{i}", f"prompt {i}", server.url(kinds[i % 6], f"n{i}"), 64, 64, "s"] for i in range(n)
    ]
    rows.append(["r0", "duplicate", server.url("img", "dup"), 64, 64, "s"])
    return write_csv(tmp_path / "p.csv", rows)


@pytest.mark.parametrize("runner", ["thread", "process"])
def test_ingest_flow_runs_every_shard_and_publishes_artifacts(tmp_path, server, runner):
    params = IngestParams(
        source=str(_csv(tmp_path, server)),
        data_dir=str(tmp_path / "d"),
        shard_size=5,
        shard_concurrency=2,
        runner=runner,
    )
    state = ingest(**params.flow_kwargs(), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.plan.rows_total == 13 and summary.plan.rows_rejected == 1
    fetch, emb, loaded = summary.stages
    assert sorted(loaded.done) == ["00000", "00001", "00002"]
    assert sum(s.by_status["prompts"] for s in loaded.done.values()) == 12
    assert summary.index["counts"] == {"prompts": 12, "images": 8}
    assert sorted(fetch.done) == ["00000", "00001", "00002"] and not fetch.failed
    assert sum(s.ok for s in fetch.done.values()) == 8
    assert sorted(emb.done) == ["00000", "00001", "00002"] and not emb.failed
    assert sum(s.by_status["image"] for s in emb.done.values()) == 8
    assert sum(s.by_status["text"] for s in emb.done.values()) == 12
    arts = artifacts_of(state.state_details.flow_run_id)
    kinds = {a.type for a in arts}
    assert {"progress", "table", "markdown"} <= kinds
    table = next(a for a in arts if a.key == "ingest-shards")
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    totals = {r["stage"]: r for r in rows if r["row"] == "total"}
    assert list(totals) == ["fetch", "embed", "load"]
    assert (totals["fetch"]["shards"], totals["fetch"]["rows"], totals["fetch"]["ok"]) == (
        "3 done",
        12,
        8,
    )
    assert (
        "ok=8" in totals["fetch"]["detail"] and totals["load"]["detail"] == "images=8, prompts=12"
    )
    slowest = [(r["stage"], r["shards"]) for r in rows if r["row"] == "slowest"]
    assert sorted(slowest) == [
        (stage, s) for stage in ("embed", "fetch", "load") for s in ("00000", "00001", "00002")
    ]
    progress = {a.key: a for a in arts if a.type == "progress"}
    assert sorted(progress) == ["embed-progress", "fetch-progress", "load-progress"]
    assert [float(a.data) for a in progress.values()] == [100.0, 100.0, 100.0]
    assert progress["fetch-progress"].description == "fetch: 3 of 3 shards finished (100%)"
    if runner == "thread":
        _reruns_make_task_runs_only_for_what_is_missing(params)


def _reruns_make_task_runs_only_for_what_is_missing(params: IngestParams) -> None:
    """Nothing new: no task run per finished shard; one load marker gone: one load task run."""
    from prefect.client.schemas.filters import FlowRunFilter

    def sharded_task_runs(state) -> list[str]:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id={"any_": [state.state_details.flow_run_id]})
            )
        return sorted(r.name.rsplit("-", 1)[0] for r in runs if not r.name.startswith(SINGLE))

    again = ingest(**params.flow_kwargs(), return_state=True)
    assert again.is_completed() and sharded_task_runs(again) == []
    assert [st.already for st in again.result().stages] == [3, 3, 3]
    Markers(DataDir(params.data_dir), "load").path("00001").unlink()
    again = ingest(**params.flow_kwargs(), return_state=True)
    assert again.is_completed() and sharded_task_runs(again) == ["load"]
    assert set(Markers(DataDir(params.data_dir), "load").all_done()) == {"00000", "00001", "00002"}


SINGLE = ("download", "plan", "load-reconcile", "index")


def test_failed_shard_fails_the_flow_and_resume_runs_only_it(tmp_path, server, capsys):
    data_dir = tmp_path / "d"
    params = IngestParams(source=str(_csv(tmp_path, server)), data_dir=str(data_dir), shard_size=5)
    ingest(**params.model_copy(update={"until": "plan"}).flow_kwargs())
    shard = data_dir / "plan" / "shards" / "00001.parquet"
    good = shard.read_bytes()
    shard.write_bytes(b"not parquet")  # an infrastructure fault, not a bad row
    state = ingest(**params.flow_kwargs(), return_state=True)
    assert state.is_failed()
    assert "failed shards: fetch 00001 (ArrowInvalid" in state.message
    assert set(Markers(DataDir(data_dir), "fetch").all_done()) == {"00000", "00002"}
    assert main(["status", "--data-dir", str(data_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    fetch = report["stages"]["fetch"]
    assert (fetch["shards_done"], fetch["shards_failed"], fetch["shards_pending"]) == (2, 1, 0)
    assert "00001" in fetch["failed"] and "Parquet" in fetch["failed"]["00001"]
    emb = report["stages"]["embed"]
    assert (emb["shards_done"], emb["shards_failed"], emb["shards_pending"]) == (2, 0, 1)
    plan = report["resume"]["stages"]
    assert plan["fetch"] == {"rerun_failed": ["00001"], "redo_damaged": [], "run_missing": []}
    assert (
        plan["embed"]
        == plan["load"]
        == {
            "rerun_failed": [],
            "redo_damaged": [],
            "run_missing": ["00001"],
        }
    )
    assert main(["status", "--data-dir", str(data_dir)]) == 0
    text = capsys.readouterr().out
    assert "resume would" in text and "fetch: rerun failed 00001; run missing none" in text
    before = dict(server.requests)
    shard.write_bytes(good)
    assert main(["resume", "--data-dir", str(data_dir)]) == 0  # the recorded ingest, resumed
    assert "resume:   nothing to rerun" in capsys.readouterr().out
    new = {p for p in server.requests if server.requests[p] != before.get(p)}
    assert new == {"/img/n5", "/img/n6", "/img/n7", "/404/n8", "/img/n9"}  # only shard 00001's rows
    assert main(["status", "--data-dir", str(data_dir), "--json"]) == 0
    stages = json.loads(capsys.readouterr().out)["stages"]
    fetch, emb = stages["fetch"], stages["embed"]
    assert (fetch["shards_done"], fetch["shards_failed"], fetch["rows_ok"]) == (3, 0, 8)
    assert (emb["shards_done"], emb["rows_ok"], emb["by_status"]["image"]) == (3, 12, 8)
    assert stages["load"]["shards_done"] == 3 and "tables" in stages["index"]
    (tmp_path / "never-ingested").mkdir()
    assert main(["resume", "--data-dir", str(tmp_path / "never-ingested")]) == 2
    assert "no ingest was started" in capsys.readouterr().err


def test_status_json_shape(tmp_path, server, capsys):
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    assert main(["status", "--data-dir", str(data_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == {"total": 0, "valid": 0, "rejected": 0}
    ingest(source=str(_csv(tmp_path, server)), data_dir=str(data_dir), shard_size=5)
    main(["status", "--data-dir", str(data_dir), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["rows"]["total"] == 13 and report["rows"]["valid"] == 12
    assert report["rows"]["rejected"] == 1
    assert set(report["stages"]["fetch"]) >= {
        "shards_done",
        "shards_failed",
        "shards_pending",
        "rows_ok",
        "rows_failed",
    }
    main(["status", "--data-dir", str(data_dir)])
    assert "3 done, 0 failed, 0 pending" in capsys.readouterr().out


def test_dask_runner_on_a_local_two_worker_cluster(tmp_path, server):
    params = IngestParams(
        source=str(_csv(tmp_path, server)),
        data_dir=str(tmp_path / "d"),
        shard_size=5,
        shard_concurrency=2,
        runner="dask",
    )
    state = ingest(**params.flow_kwargs(), return_state=True)
    assert state.is_completed(), state.message
    fetch, emb, loaded = state.result().stages
    assert len(fetch.done) == len(emb.done) == len(loaded.done) == 3
    assert {s.extra["namespace"] for s in emb.done.values()} == {
        next(iter(emb.done.values())).extra["namespace"]
    }


def test_embed_tasks_hold_the_gpu_limit(tmp_path, server, tiny_clip):
    """Two embed tasks submitted at once never overlap: the Prefect limit holds them apart."""
    from prefect import flow
    from prefect.task_runners import ThreadPoolTaskRunner

    from promptlake.flows.ingest import ensure_gpu_limit
    from promptlake.settings import Settings
    from promptlake.tasks.clip.encoder import get_encoder
    from promptlake.tasks.embed import embed_markers, embed_task
    from tests.conftest import make_shards

    data = DataDir(tmp_path / "d")
    shards = make_shards(tmp_path, data, server, 40, shard_size=20)
    settings = Settings(data_dir=data.root, clip_model=tiny_clip, device="cpu")
    from promptlake.tasks.fetch import run_shard

    for s in shards:
        run_shard(s, data, settings)

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def two_at_once():
        ensure_gpu_limit(1)
        futs = [embed_task.submit(s, str(data.root), settings) for s in shards]
        return [f.result() for f in futs]

    two_at_once()
    ns = get_encoder(tiny_clip, "cpu").info.namespace
    spans = []
    for s in shards:
        raw = json.loads(embed_markers(data, ns).path(s).read_text())
        spans.append((raw["finished_at"] - raw["seconds"], raw["finished_at"]))
    (_a0, a1), (b0, _b1) = sorted(spans)
    assert a1 <= b0 + 0.05, spans


def test_a_missing_source_fails_at_once_without_retries(tmp_path):
    from prefect.client.schemas.filters import FlowRunFilter as F

    params = IngestParams(source=str(tmp_path / "nope.csv"), data_dir=str(tmp_path / "d"))
    state = ingest(**params.flow_kwargs(), return_state=True)
    assert state.is_failed() and "source file not found" in state.message
    # task runs reach the server as events, recorded a moment later: wait for the final one
    deadline, runs = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=F(id={"any_": [state.state_details.flow_run_id]})
            )
        if runs and all(r.state and r.state.is_final() for r in runs):
            break
        time.sleep(0.5)
    (run,) = runs
    assert run.name.startswith("download") and run.run_count == 1  # not retried


def test_force_replan_keeps_the_record_and_each_row_once_in_the_store(tmp_path, server, capsys):
    """--force with another shard size: the store ends with each valid row once (counted in the
    store), rows of shard names the new plan lacks are gone, and resume still knows the ingest."""
    from promptlake.settings import Settings, store_url
    from promptlake.storage.store import open_store

    data_dir = str(tmp_path / "d")
    source = str(_csv(tmp_path, server))
    common = ["ingest", source, "--data-dir", data_dir, "--runner", "thread"]
    assert main([*common, "--shard-size", "3"]) == 0  # 4 shards
    assert main([*common, "--shard-size", "5", "--force"]) == 0  # 3 shards: 00003 is gone
    store = open_store(store_url(Settings(data_dir=data_dir)))
    assert (store.count("prompts"), store.count("images")) == (12, 8)
    shards = store.client.query("SELECT DISTINCT shard FROM promptlake.prompts").result_rows
    assert sorted(s for (s,) in shards) == ["00000", "00001", "00002"]
    assert DataDir(data_dir).ingest_record.exists()
    capsys.readouterr()
    assert main(["resume", "--data-dir", data_dir]) == 0
    assert "resume:   nothing to rerun" in capsys.readouterr().out


def test_the_run_log_says_one_line_per_shard(tmp_path, tiny_clip):
    """The log of a CLI ingest (at INFO, with worker processes): each shard's counts, not
    Prefect's "Finished in state Completed()" per task run."""
    rows = []
    for i in range(12):
        pic = tmp_path / f"i{i}.png"
        if i % 4:  # every fourth image is missing: not_found
            Image.new("RGB", (64, 64), (20 * i, 0, 0)).save(pic)
        rows.append([f"r{i}", f"prompt number {i}", pic.as_uri(), 64, 64, "s"])
    src = write_csv(tmp_path / "p.csv", rows)
    data_dir = tmp_path / "d"
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "INFO", "PROMPTLAKE_CLIP_MODEL": tiny_clip}
    argv = ["ingest", str(src), "--data-dir", str(data_dir), "--shard-size", "5"]
    argv += ["--allow-file-urls", "--runner", "process"]
    done = subprocess.run(
        [sys.executable, "-m", "promptlake.cli", *argv], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (log,) = (data_dir / "logs").glob("ingest-*.log")
    text = log.read_text()
    assert "fetch 00000: 5 rows, 3 ok, 2 failed (not_found=2) in" in text
    assert "embed 00001: 5 rows, 5 ok (image=4, no_image=1, text=5) in" in text
    assert "load 00002: 2 rows, 2 ok (images=2, prompts=2) in" in text
    for stage in ("fetch", "embed", "load"):
        assert f"Task run '{stage}-" not in text  # no per-task-run line for a finished shard
