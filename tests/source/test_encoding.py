"""Bytes that are not UTF-8 are one row's fault: that row becomes a ``bad_encoding`` reject with
the line and column of the bytes, and every other row is planned (CSV, gzipped CSV, Parquet)."""

from __future__ import annotations

import csv
import gzip
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from promptlake.cli import main
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.planfiles import rejects_path
from promptlake.tasks.download import download
from promptlake.tasks.plan import plan
from promptlake.tasks.source.sourcefile import SourceFileError, check_file
from tests.conftest import HEADER

N = 200


def _csv_bytes() -> bytes:
    """200 rows; row 149's prompt spans three lines (quoted, with quotes inside); Latin-1 bytes
    in row 3 (within the first 64 KiB) and row 150 (after the multi-line one)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    for i in range(N):
        prompt = 'a "quoted"\nthree\nline prompt' if i == 149 else f"prompt {i}"
        writer.writerow([f"r{i}", prompt, f"http://x/{i}.jpg", 512, 512, "s"])
    raw = out.getvalue().encode()
    raw = raw.replace(b"r150,prompt 150,", b"r150,caf\xe9 prompt 150,")
    return raw.replace(b"r3,prompt 3,", b"r3,na\xefve prompt 3,")


def _line_of(raw: bytes, needle: bytes) -> int:
    return raw[: raw.index(needle)].count(b"\n") + 1


@pytest.mark.parametrize("name", ["p.csv", "p.csv.gz"])
def test_a_row_that_is_not_utf8_is_a_reject_with_its_line(tmp_path, name, capsys):
    raw = _csv_bytes()
    src = tmp_path / name
    src.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    data = DataDir(tmp_path / "d")
    manifest = plan(download(str(src), data), data, shard_size=50)
    assert (manifest.rows_total, manifest.rows_valid) == (N, N - 2)
    assert manifest.rejects_by_reason == {"bad_encoding": 2}
    rejects = pq.read_table(rejects_path(data)).to_pylist()
    assert [r["id"] for r in rejects] == ["r3", "r150"]
    lines = (_line_of(raw, b"na\xefve"), _line_of(raw, b"caf\xe9"))
    assert lines == (5, 154)  # the quoted prompt's two extra lines counted
    for reject, line in zip(rejects, lines, strict=True):
        assert reject["reason"] == "bad_encoding"
        assert reject["detail"].startswith(f"line {line}, column prompt: not UTF-8 at byte ")
    assert rejects[1]["prompt"] == "caf\\xe9 prompt 150"  # kept, the bad byte written out
    planned = [i for s in manifest.shards for i in pq.read_table(data.shard_file(s.name))["id"]]
    assert len(planned) == N - 2 and "r149" in [str(i) for i in planned]
    assert main(["status", "--data-dir", str(data.root)]) == 0
    assert "rejected bad_encoding: 2" in capsys.readouterr().out


def test_a_parquet_row_that_is_not_utf8_is_a_reject(tmp_path):
    rows = {c: [f"{c}{i}" for i in range(10)] for c in HEADER}
    rows["url"] = [f"http://x/{i}.jpg" for i in range(10)]
    rows["width"] = rows["height"] = ["512"] * 10
    table = pa.table(
        {c: pa.array([v.encode() for v in vals], pa.binary()) for c, vals in rows.items()}
    )
    prompt = table["prompt"].to_pylist()
    prompt[4] = b"\xff\xfe broken"
    table = table.set_column(1, "prompt", pa.array(prompt, pa.binary()))
    pq.write_table(table, tmp_path / "p.parquet")
    data = DataDir(tmp_path / "d")
    manifest = plan(download(str(tmp_path / "p.parquet"), data), data, shard_size=50)
    assert (manifest.rows_valid, manifest.rejects_by_reason) == (9, {"bad_encoding": 1})
    (reject,) = pq.read_table(rejects_path(data)).to_pylist()
    assert reject["id"] == "id4" and reject["detail"].startswith("column prompt: not UTF-8")


def test_a_file_of_another_encoding_is_still_refused_at_once(tmp_path):
    text = "".join(f"r{i},café crème {i},http://x/{i}.jpg,512,512,s\n" for i in range(2000))
    src = tmp_path / "latin1.csv"
    src.write_bytes((",".join(HEADER) + "\n" + text).encode("latin-1"))
    with pytest.raises(SourceFileError, match="not a text CSV"):
        check_file(src, "csv")
    few = tmp_path / "few.csv"
    few.write_bytes(_csv_bytes())
    check_file(few, "csv")  # two bad bytes are the rows' problem, not the file's
