"""Deployments end to end: `promptlake serve` against a Prefect server, ingest triggered through
run_deployment as the UI does, a failed run retried from the API rerunning only its failed shard,
the feedback schedule, and prefect.yaml's entrypoints."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_URL
from prefect.states import AwaitingRetry

from promptlake.settings import Settings, store_url
from promptlake.storage.layout import DataDir
from promptlake.storage.markers import Markers
from promptlake.storage.status import status
from promptlake.storage.store import open_store
from tests.conftest import artifacts_of, write_csv

pytestmark = pytest.mark.usefixtures("prefect_server")
ROOT = Path(__file__).resolve().parents[1]
NAMES = {"ingest", "resume", "feedback", "search", "refine"}


@pytest.fixture
def served(tmp_path, tiny_clip):
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PROMPTLAKE_CLIP_MODEL": tiny_clip,
        "PROMPTLAKE_DEVICE": "cpu",
        "PROMPTLAKE_PRECISION": "fp32",
        "PROMPTLAKE_READ_TIMEOUT": "0.5",
        "PROMPTLAKE_BACKOFF_BASE": "0.01",
        "PROMPTLAKE_FETCH_RETRIES": "1",
        "PROMPTLAKE_TASK_RETRIES": "0",
        "PROMPTLAKE_FEEDBACK_CRON": "15 4 * * *",
        "PROMPTLAKE_DATA_DIR": str(tmp_path / "default"),
    }
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
            while len(_deployments()) < len(NAMES):
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                assert time.time() < deadline, "deployments did not appear"
                time.sleep(1)
            yield tmp_path / "serve.log"
        finally:
            proc.terminate()
            proc.wait(60)


def _deployments() -> dict:
    with get_client(sync_client=True) as client:
        return {d.name: d for d in client.read_deployments() if "promptlake" in d.tags}


def _run(params: dict, timeout: float = 300):
    return run_deployment("ingest/ingest", parameters={"params": params}, timeout=timeout)


def test_served_deployments_ingest_retry_and_schedule(tmp_path, server, served):
    deps = _deployments()
    assert set(deps) == NAMES
    (sched,) = deps["feedback"].schedules
    assert sched.schedule.cron == "15 4 * * *" and sched.active
    props = deps["ingest"].parameter_openapi_schema["definitions"]["IngestParams"]["properties"]
    assert props["shard_size"]["maximum"] == 1_000_000 and "description" in props["source"]
    assert deps["resume"].parameters["params"]["data_dir"].endswith("default")

    rows = [[f"d{i}", f"prompt {i}", server.url("img", f"d{i}"), 64, 64, "s"] for i in range(10)]
    params = {
        "source": str(write_csv(tmp_path / "p.csv", rows)),
        "data_dir": str(tmp_path / "d"),
        "shard_size": 5,
        "runner": "thread",
    }
    run = _run({**params, "until": "plan"})
    assert run.state.is_completed(), run.state.message
    shard = tmp_path / "d" / "plan" / "shards" / "00001.parquet"
    good = shard.read_bytes()
    shard.write_bytes(b"broken")  # an infrastructure fault in one shard
    run = _run(params)
    assert run.state.is_failed() and "fetch: 00001" in run.state.message
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
            parameters={"params": {"text": p, "data_dir": str(data.root), "k": 3}},
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


def test_prefect_yaml_declares_the_same_deployments():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == NAMES
    for d in deps.values():
        flow = load_flow_from_entrypoint(d["entrypoint"])  # a module: no checkout needed
        assert flow.name == d["name"] and d["work_pool"]["name"] == "promptlake"
    assert deps["feedback"]["schedules"][0]["cron"] == Settings().feedback_cron
