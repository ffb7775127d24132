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

import pytest

from promptlake.settings import Settings
from storage.layout import DataDir
from storage.records import REQUIRED_COLUMNS
from tests.fault_server import FaultServer

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
        read_timeout=0.5,
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
