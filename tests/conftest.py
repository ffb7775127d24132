"""Shared fixtures: a loopback fault server, CSV writers, fast settings, a Prefect test server."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

# Prefect reads its settings at import: point it at a private, offline home first.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="promptlake-prefect-"))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# the test server is SQLite on a small machine: under many processes at once it answers 503 for a
# moment, which Prefect's client retries (5 times by default)
os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "12")

import pytest

from promptlake.settings import Settings
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.records import REQUIRED_COLUMNS
from tests.helpers.fault_server import FaultServer

HEADER = list(REQUIRED_COLUMNS)


def write_csv(path: Path, rows: Iterable[Iterable[object]], header: list[str] = HEADER) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(slow_seconds=2.0) as srv:
        yield srv


@pytest.fixture
def data(tmp_path: Path) -> DataDir:
    return DataDir(tmp_path / "data")


@pytest.fixture
def fast_settings(tmp_path: Path) -> Settings:
    """Short timeouts and backoff so fault cases finish quickly."""
    return Settings(
        data_dir=tmp_path / "data",
        read_timeout=1.0,  # the slow route takes 2 s; a busy machine needs the margin
        connect_timeout=1.0,
        backoff_base=0.01,
        backoff_max=1.5,
        fetch_retries=2,
        fetch_workers=8,
        fetch_per_host=8,
    )


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_ui(tmp_path_factory) -> Iterator[str]:
    """A real Prefect server with its UI and a scheduler (tests/helpers/prefect_ui.py); its base
    URL. Tests point their client at it with ``temporary_settings``."""
    from tests.helpers.prefect_ui import prefect_ui_server

    with prefect_ui_server(tmp_path_factory.mktemp("prefect-ui")) as url:
        yield url


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    """A small CLIP built and saved locally; loaded through the same from_pretrained(path)."""
    from promptlake.tiny_clip import build_clip

    return str(build_clip(tmp_path_factory.mktemp("clip") / "tiny-clip", image_size=64))


@pytest.fixture
def tiny_cli_env(monkeypatch, tiny_clip) -> None:
    """The environment a CLI call in this process runs under: the tiny CLIP on the CPU, shards
    in threads (the CLI reads Settings from the environment, as a user's shell would set it)."""
    monkeypatch.setenv("PROMPTLAKE_CLIP_MODEL", tiny_clip)
    monkeypatch.setenv("PROMPTLAKE_DEVICE", "cpu")
    monkeypatch.setenv("PROMPTLAKE_RUNNER", "thread")


@pytest.fixture
def embed_settings(fast_settings, tiny_clip) -> Settings:
    return fast_settings.model_copy(
        update={
            "clip_model": tiny_clip,
            "device": "cpu",
            "precision": "fp32",
            "text_batch": 7,
            "image_batch": 5,
        }
    )


def make_shards(
    tmp_path: Path, data: DataDir, server: FaultServer, n: int, shard_size: int, bad_every: int = 0
) -> list[str]:
    """Plan ``n`` sample prompts with images on ``server`` (every ``bad_every``-th a 404)."""
    from promptlake.sample_data import sample_prompts
    from promptlake.tasks.download import download
    from promptlake.tasks.plan import plan

    rows = []
    for i, prompt in enumerate(sample_prompts(n, seed=1)):
        kind = "404" if bad_every and i % bad_every == bad_every - 1 else "img"
        rows.append([f"e{i}", prompt, server.url(kind, f"e{i}"), 512, 512, "s"])
    src = write_csv(tmp_path / "e.csv", rows)
    return [s.name for s in plan(download(str(src), data), data, shard_size=shard_size).shards]


@pytest.fixture
def built(tmp_path, data, server, embed_settings):
    """A store of 30 sample prompts (24 with images) through fetch, embed and load."""
    from promptlake.tasks import embed, load
    from promptlake.tasks.fetch import run_shard as fetch_shard

    s = embed_settings.model_copy(update={"data_dir": data.root})
    shards = make_shards(tmp_path, data, server, 30, shard_size=12, bad_every=5)
    for shard in shards:
        fetch_shard(shard, data, s)
        embed.run_shard(shard, data, s)
        load.run_shard(shard, data, s)
    return s, shards


def artifacts_of(flow_run_id) -> list:
    """The artifacts a flow run published, read back from the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    with get_client(sync_client=True) as client:
        return client.read_artifacts(flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}))
