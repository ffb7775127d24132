import gzip
import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from promptlake.storage.datadir.layout import read_json
from promptlake.tasks.download import DownloadError, detect_format, download
from tests.conftest import write_csv

ROWS = [["a", "a cat", "http://x.test/a.jpg", 512, 512, "lexica"]]


def test_local_csv_records_size_and_hash(tmp_path, data):
    src = write_csv(tmp_path / "p.csv", ROWS)
    info = download(str(src), data)
    assert info.fmt == "csv"
    assert info.size == src.stat().st_size
    assert info.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert read_json(data.source_info)["sha256"] == info.sha256


@pytest.mark.parametrize("name,fmt", [("x.csv.gz", "csv.gz"), ("x.parquet", "parquet")])
def test_other_local_formats(tmp_path, data, name, fmt):
    path = tmp_path / name
    if fmt == "csv.gz":
        path.write_bytes(gzip.compress(write_csv(tmp_path / "p.csv", ROWS).read_bytes()))
    else:
        pq.write_table(pa.table({"id": ["a"], "prompt": ["p"]}), path)
    assert download(str(path), data).fmt == fmt


def test_unknown_format_and_missing_file_are_clear(tmp_path, data):
    with pytest.raises(DownloadError, match="unsupported source format"):
        detect_format("prompts.xlsx")
    with pytest.raises(DownloadError, match="source file not found"):
        download(str(tmp_path / "nope.csv"), data)


def test_http_download_resumes_with_range(server, data):
    body = b"id,prompt,url,width,height,source_site\n" + b"x" * 200_000
    server.files["d.csv"] = body
    server.drop_first.add("d.csv")
    url = f"{server.base}/file/d.csv"
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download(url, data)
    part = data.source_dir / "d.csv.part"
    have = part.stat().st_size
    assert 0 < have < len(body)
    info = download(url, data)
    assert server.range_requests == [f"bytes={have}-"]
    assert (data.source_dir / "d.csv").read_bytes() == body
    assert info.sha256 == hashlib.sha256(body).hexdigest()
    assert not part.exists()
    before = sum(server.requests.values())
    download(url, data)  # already complete: no request at all
    assert sum(server.requests.values()) == before


def test_http_error_is_clear(server, data):
    with pytest.raises(DownloadError, match="404"):
        download(f"{server.base}/file/missing.csv", data)
