"""kaggle: sources through the real kagglehub: a versioned dataset from its pre-filled cache
(no network), and Kaggle's API answered by a loopback server that kagglehub reaches as its HTTP
proxy (``KAGGLE_API_ENVIRONMENT=LOCALHOST`` makes it call ``http://localhost/api/v1/…``)."""

from __future__ import annotations

import gzip
import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from promptlake.storage.datadir.records import REQUIRED_COLUMNS
from promptlake.tasks.download import DownloadError, download, download_task
from tests.conftest import HEADER

ROW = "a,a cat on a sofa,http://x.test/a.jpg,512,512,lexica\n"


class KaggleApi:
    """Answers every request with ``status`` and Kaggle's JSON error body; records the paths."""

    def __init__(self) -> None:
        self.status = 500
        self.paths: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                api.paths.append(self.path)
                body = json.dumps({"code": api.status, "message": f"test {api.status}"}).encode()
                self.send_response(api.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proxy(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Send http://localhost (Kaggle's API here) through ``url``; 127.0.0.1 (the Prefect test
    server) goes direct."""
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, url)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1")


@pytest.fixture
def kaggle(monkeypatch, tmp_path) -> Iterator[tuple[KaggleApi, Path]]:
    """kagglehub with its cache in tmp_path, no credentials, and Kaggle's API on loopback."""
    api = KaggleApi()
    threading.Thread(target=api.httpd.serve_forever, daemon=True).start()
    cache = tmp_path / "kagglehub"
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    _proxy(monkeypatch, api.url)
    yield api, cache
    api.httpd.shutdown()


def _csv(header: list[str], rows: int) -> bytes:
    return (",".join(header) + "\n" + ROW * rows).encode()


def _parquet(columns: list[str]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({c: ["1"] for c in columns}), sink)
    return sink.getvalue()


def _lay_out(cache: Path, handle: str, version: int, files: dict[str, bytes]) -> Path:
    """A dataset version as kagglehub leaves it: the files under versions/<n>, and its
    completion marker ``<n>.complete`` beside the versions folder."""
    base = cache / "datasets" / handle
    for rel, body in files.items():
        (base / "versions" / str(version) / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / "versions" / str(version) / rel).write_bytes(body)
    (base / f"{version}.complete").touch()
    return base / "versions" / str(version)


def test_cached_version_resolves_offline_and_the_file_with_the_columns_wins(kaggle, data):
    api, cache = kaggle
    _lay_out(cache, "own/prompts", 1, {"old.csv": _csv(HEADER, 5000)})  # another version
    folder = _lay_out(
        cache,
        "own/prompts",
        2,
        {
            "prompts/prompts.csv": _csv(HEADER, 300),
            "prompts/stats/site_counts.csv": _csv(["site", "count", "note"], 3000),  # largest
            "sample.parquet": _parquet(list(reversed(REQUIRED_COLUMNS))),  # fits, smaller
            "README.md": b"# prompts\n" * 10_000,
        },
    )
    info = download("kaggle:own/prompts/versions/2", data)
    assert info.path == str(folder / "prompts" / "prompts.csv") and info.fmt == "csv"
    assert api.paths == []  # not one request: kagglehub answered from its cache


def test_no_file_with_the_columns_lists_every_candidate(kaggle, data):
    _api, cache = kaggle
    _lay_out(
        cache,
        "own/other",
        7,
        {
            "a.csv": _csv(["id", "prompt"], 10),
            "deep/er/b.parquet": _parquet(["id", "url", "width"]),
            "c.csv.gz": b"not gzip at all",
            "d.csv.gz": gzip.compress(_csv(["id", "prompt", "url"], 2)),
        },
    )
    with pytest.raises(DownloadError) as refused:
        download("kaggle:own/other/versions/7", data)
    text, exc = str(refused.value), refused.value
    assert "a.csv: lacks url, width, height, source_site" in text
    assert "deep/er/b.parquet: lacks prompt, height, source_site" in text
    assert "c.csv.gz: unreadable header" in text
    assert "d.csv.gz: lacks width, height, source_site" in text
    assert not exc.transient and not data.source_info.exists()


@pytest.mark.parametrize(
    "status,says,transient",
    [
        (401, "Kaggle refused kaggle:own/prompts (401)", False),
        (403, "Kaggle refused kaggle:own/prompts (403)", False),
        (404, "kaggle:own/prompts was not found on Kaggle (404)", False),
        (429, "could not download kaggle:own/prompts", True),
        (503, "could not download kaggle:own/prompts", True),
    ],
)
def test_kaggle_answers_sorted_into_retry_or_not(kaggle, data, status, says, transient):
    api, _cache = kaggle
    api.status = status
    with pytest.raises(DownloadError) as failed:
        download("kaggle:own/prompts", data)
    assert str(failed.value).startswith(says) and failed.value.transient is transient
    assert api.paths == ["http://localhost/api/v1/datasets.DatasetApiService/GetDataset"]


def test_unreachable_kaggle_is_transient_and_says_what_to_do(kaggle, data, monkeypatch):
    _proxy(monkeypatch, f"http://127.0.0.1:{_closed_port()}")  # refused at once
    with pytest.raises(DownloadError, match="download the CSV elsewhere") as failed:
        download("kaggle:tanreinama/900k-diffusion-prompts-dataset", data)
    assert failed.value.transient
    for bad in ("nodataset", "a/b/c", "a/b/versions/x", "a/b/versions/1/more"):
        with pytest.raises(DownloadError, match="expected kaggle:<owner>/<dataset>"):
            download(f"kaggle:{bad}", data)


def test_prefect_retries_an_outage_but_not_a_refusal(kaggle, data, prefect_server):
    api, _cache = kaggle
    task = download_task.with_options(retries=2, retry_delay_seconds=0)
    for status, calls in ((401, 1), (503, 3)):
        api.status, api.paths = status, []
        with pytest.raises(DownloadError):
            task("kaggle:own/prompts", str(data.root))
        assert len(api.paths) == calls, (status, api.paths)
