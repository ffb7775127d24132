"""Deployments end to end: `promptlake serve` against a Prefect server, ingest triggered through
run_deployment, a failed run retried from the API rerunning only its failed shard, the feedback
schedule, the watched folder's schedule (and a run that skips while the data dir is held), and
prefect.yaml's entrypoints. The UI's own run forms: tests/operations/test_triggers.py."""

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_URL
from prefect.states import AwaitingRetry

from promptlake.sample_data import sample_image
from promptlake.settings import Settings, store_url
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.datadir.status import status
from promptlake.storage.store import open_store
from tests.conftest import artifacts_of, write_csv
from tests.helpers import ROOT
from tests.helpers.prefect_ui import api_of

pytestmark = pytest.mark.usefixtures("prefect_server")
NAMES = {"ingest", "resume", "feedback", "search", "refine"}


@contextmanager
def serving(tmp_path, tiny_clip, names=NAMES, **extra):
    """`promptlake serve` in a subprocess until its deployments are registered; yields its log.

    Deployments an earlier test's server registered on the shared test server are deleted first,
    or the wait below would end on them (with that test's data dir in their schema)."""
    env = {
        **os.environ,
        "PREFECT_API_URL": extra.pop("PREFECT_API_URL", None) or PREFECT_API_URL.value(),
        "PROMPTLAKE_CLIP_MODEL": tiny_clip,
        "PROMPTLAKE_DEVICE": "cpu",
        "PROMPTLAKE_PRECISION": "fp32",
        "PROMPTLAKE_READ_TIMEOUT": "0.5",
        "PROMPTLAKE_BACKOFF_BASE": "0.01",
        "PROMPTLAKE_FETCH_RETRIES": "1",
        "PROMPTLAKE_TASK_RETRIES": "0",
        "PROMPTLAKE_FEEDBACK_CRON": "15 4 * * *",
        "PROMPTLAKE_DATA_DIR": str(tmp_path / "default"),
        "PROMPTLAKE_ALLOW_FILE_URLS": "1",
        "PROMPTLAKE_SHARD_SIZE": "4",
        **extra,
    }
    _delete_deployments()
    with open(tmp_path / "serve.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "promptlake.cli", "serve"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.time() + 120
            while not set(names) <= set(_deployments()):
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                assert time.time() < deadline, "deployments did not appear"
                time.sleep(1)
            yield tmp_path / "serve.log"
        finally:
            proc.terminate()
            proc.wait(60)


@pytest.fixture
def served(tmp_path, tiny_clip):
    with serving(tmp_path, tiny_clip) as log:
        yield log


def _deployments() -> dict:
    with get_client(sync_client=True) as client:
        return {d.name: d for d in client.read_deployments() if "promptlake" in d.tags}


def _delete_deployments() -> None:
    with get_client(sync_client=True) as client:
        for dep in client.read_deployments():
            if "promptlake" in dep.tags:
                client.delete_deployment(dep.id)


def _run(params: dict, timeout: float = 300):
    return run_deployment("ingest/ingest", parameters=params, timeout=timeout)


def test_served_deployments_ingest_retry_and_schedule(tmp_path, server, served):
    deps = _deployments()
    assert set(deps) == NAMES
    (sched,) = deps["feedback"].schedules
    assert sched.schedule.cron == "15 4 * * *" and sched.active
    props = deps["ingest"].parameter_openapi_schema["properties"]
    assert props["shard_size"]["maximum"] == 1_000_000 and "description" in props["source"]
    data_dir = deps["resume"].parameter_openapi_schema["properties"]["data_dir"]
    assert "default" not in data_dir and "anyOf" not in data_dir  # blank: the server's own

    rows = [[f"d{i}", f"prompt {i}", server.url("img", f"d{i}"), 64, 64, "s"] for i in range(10)]
    params = {
        "source": str(write_csv(tmp_path / "p.csv", rows)),
        "data_dir": str(tmp_path / "d"),
        "shard_size": 5,  # given: wins over the server's PROMPTLAKE_SHARD_SIZE
        "runner": "thread",
    }
    run = _run({**params, "until": "plan"})
    assert run.state.is_completed(), run.state.message
    shard = tmp_path / "d" / "plan" / "shards" / "00001.parquet"
    good = shard.read_bytes()
    shard.write_bytes(b"broken")  # an infrastructure fault in one shard
    run = _run(params)
    assert run.state.is_failed() and "failed shards: fetch 00001 (ArrowInvalid" in run.state.message
    before = dict(server.requests)
    shard.write_bytes(good)
    with get_client(sync_client=True) as client:  # the UI's "Retry" button
        client.set_flow_run_state(run.id, AwaitingRetry(), force=True)
        deadline = time.time() + 300
        while not (state := client.read_flow_run(run.id).state).is_final():
            assert time.time() < deadline, served.read_text()[-3000:]
            time.sleep(1)
    assert state.is_completed(), served.read_text()[-3000:]
    assert {p for p in server.requests if server.requests[p] != before.get(p)} == {
        f"/img/d{i}" for i in range(5, 10)
    }
    data = DataDir(tmp_path / "d")
    assert set(Markers(data, "load").all_done()) == {"00000", "00001"}
    report = status(data)
    assert report["store"] == {"prompts": 10, "images": 10}
    assert report["resume"]["nothing_to_do"]
    store = open_store(store_url(Settings(data_dir=data.root)))
    with store.turn("test check", wait=120):  # the run's process may not have exited yet
        assert (store.count("prompts"), store.count("images")) == (10, 10)  # no duplicates

    # three searches started from the UI at once: each waits for its turn, none fails
    prompts = ["prompt 1", "prompt 4", "prompt 7"]
    runs = [
        run_deployment(
            "search/search",
            parameters={"text": p, "data_dir": str(data.root), "k": 3},
            timeout=0,
        )
        for p in prompts
    ]
    with get_client(sync_client=True) as client:
        for run in runs:
            deadline = time.time() + 300
            while not (state := client.read_flow_run(run.id).state).is_final():
                assert time.time() < deadline, served.read_text()[-3000:]
                time.sleep(1)
            assert state.is_completed(), (state.message, served.read_text()[-3000:])
    for p, run in zip(prompts, runs, strict=True):
        (table,) = [a.data for a in artifacts_of(run.id) if a.key == "search-results-table"]
        assert (json.loads(table) if isinstance(table, str) else table)[0]["prompt"] == p


@pytest.mark.timeout(900)
def test_the_watched_folder_is_ingested_on_its_schedule(tmp_path, tiny_clip, prefect_ui):
    """ingest-folder (PROMPTLAKE_WATCH_FOLDER, every few seconds) on a server with a scheduler:
    an image added after the server started is in the store after the next run. While another
    ingest holds the data dir, a scheduled run skips (Completed, named Skipped, saying who)
    instead of piling up; overlapping scheduled runs are cancelled by Prefect (CANCEL_NEW)."""
    from prefect.client.schemas.filters import DeploymentFilter, FlowRunFilter
    from prefect.client.schemas.sorting import FlowRunSort

    from promptlake.storage.datadir.ingest_lock import ingest_lock

    folder = tmp_path / "watched"
    folder.mkdir()
    for i in range(2):
        _draw(folder / f"{i}.png", f"a watched picture {i}")
    data = DataDir(tmp_path / "default")
    env = {"PROMPTLAKE_WATCH_FOLDER": str(folder), "PROMPTLAKE_WATCH_INTERVAL": "10"}
    url = f"{prefect_ui}/api"
    with (
        api_of(url),
        serving(tmp_path, tiny_clip, {"ingest-folder"}, PREFECT_API_URL=url, **env) as log,
    ):
        dep = _deployments()["ingest-folder"]
        assert dep.global_concurrency_limit.limit == 1  # one run at a time
        assert dep.concurrency_options.collision_strategy == "CANCEL_NEW"
        assert dep.schedules[0].schedule.interval.total_seconds() == 10

        def ended_since(when: float, name: str = "Completed") -> bool:
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id={"any_": [dep.id]}),
                    flow_run_filter=FlowRunFilter(state={"name": {"any_": [name]}}),
                    sort=FlowRunSort.START_TIME_DESC,
                    limit=1,
                )
            return bool(runs) and runs[0].start_time.timestamp() > when

        _wait(lambda: ended_since(0), 400, log)
        assert status(data)["rows"]["valid"] == 2
        held = time.time()
        with ingest_lock(data, who="the test", what="ingest by hand", wait=0, say=print):
            _wait(lambda: ended_since(held, "Skipped"), 300, log)
        with get_client(sync_client=True) as client:
            (skipped,) = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id={"any_": [dep.id]}),
                flow_run_filter=FlowRunFilter(state={"name": {"any_": ["Skipped"]}}),
                limit=1,
            )
        assert (
            skipped.state.is_completed() and "ingest by hand by the test" in skipped.state.message
        )
        (note,) = [a for a in artifacts_of(skipped.id) if a.key == "ingest-skipped"]
        assert f"pid {os.getpid()}" in note.data
        added = time.time()
        _draw(folder / "new.png", "a picture added later")
        _wait(lambda: ended_since(added), 300, log)
        assert status(data)["rows"]["valid"] == 3
        assert status(data)["stages"]["load"]["shards_pending"] == 0


def _wait(ready, seconds, log):
    deadline = time.time() + seconds
    while not ready():
        if time.time() > deadline:
            with get_client(sync_client=True) as client:
                runs = [
                    (r.name, r.state_name, r.expected_start_time) for r in client.read_flow_runs()
                ]
            raise AssertionError(f"{runs[-10:]}\n{log.read_text()[-3000:]}")
        time.sleep(2)


def _draw(path, prompt):
    from promptlake.tasks.metadata import ImageMeta, save_with_metadata

    path.write_bytes(save_with_metadata(sample_image(prompt, size=64), ImageMeta(prompt)))


def test_prefect_yaml_declares_the_same_deployments():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == NAMES
    for d in deps.values():
        flow = load_flow_from_entrypoint(d["entrypoint"])  # a module: no checkout needed
        assert flow.name == d["name"] and d["work_pool"]["name"] == "promptlake"
    assert deps["feedback"]["schedules"][0]["cron"] == Settings().feedback_cron
