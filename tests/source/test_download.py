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
    assert download(url, data).sha256 == info.sha256  # unchanged upstream: one question, 304
    assert sum(server.requests.values()) == before + 1 and server.served_ok["/file/d.csv"] == 1


HEAD = b"id,prompt,url,width,height,source_site\n"


def test_a_changed_upstream_file_is_downloaded_again(server, data):
    """Every run asks (a conditional GET); a new version comes whole and the plan sees a new
    sha256; a server without validators is downloaded again each time."""
    server.files["c.csv"] = HEAD + b"a,a cat,http://x/a.jpg,1,1,s\n"
    url = f"{server.base}/file/c.csv"
    first = download(url, data)
    server.files["c.csv"] = HEAD + b"b,a dog,http://x/b.jpg,1,1,s\n"
    second = download(url, data)
    assert second.sha256 == hashlib.sha256(server.files["c.csv"]).hexdigest() != first.sha256
    assert server.served_ok["/file/c.csv"] == 2
    server.no_validators.add("c.csv")
    download(url, data)
    download(url, data)
    assert server.served_ok["/file/c.csv"] == 4  # nothing to ask with: the sha256 decides


def test_a_resumed_download_never_splices_two_versions(server, data):
    """Cut off half-way, then the file changes upstream: the resume asks with If-Range, gets
    the whole new version (200) and keeps none of the old bytes."""
    old, new = HEAD + b"o" * 150_000, HEAD + b"n" * 180_000
    server.files["s.csv"] = old
    server.drop_first.add("s.csv")
    url = f"{server.base}/file/s.csv"
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download(url, data)
    assert (data.source_dir / "s.csv.part").stat().st_size > 0
    server.files["s.csv"] = new
    info = download(url, data)
    assert (data.source_dir / "s.csv").read_bytes() == new
    assert info.sha256 == hashlib.sha256(new).hexdigest()
    assert len(server.range_requests) == 1  # it asked to resume; the server said: changed


def test_a_part_without_a_strong_validator_starts_again(server, data):
    server.files["w.csv"] = HEAD + b"w" * 150_000
    server.drop_first.add("w.csv")
    server.no_validators.add("w.csv")
    url = f"{server.base}/file/w.csv"
    with pytest.raises(DownloadError):
        download(url, data)
    download(url, data)
    assert server.range_requests == []  # resuming blind could splice: it started over
    assert (data.source_dir / "w.csv").read_bytes() == server.files["w.csv"]


def test_an_unreachable_upstream_keeps_the_copy_it_has(data, caplog):
    from tests.helpers.fault_server import FaultServer

    with FaultServer() as gone:
        gone.files["g.csv"] = HEAD + b"g,a cat,http://x/g.jpg,1,1,s\n"
        url = f"{gone.base}/file/g.csv"
        first = download(url, data)
    assert download(url, data).sha256 == first.sha256  # a nightly run goes on with its copy
    assert "could not check" in caplog.text and url in caplog.text


def test_http_error_is_clear(server, data):
    with pytest.raises(DownloadError, match="404"):
        download(f"{server.base}/file/missing.csv", data)
