"""Faults that real disks and files make, met through the CLI as a person meets them: a disk that
fills up (a 40 MB tmpfs; skipped without root), outputs truncated behind the markers' back, a
data dir moved elsewhere, a cached image that no longer decodes. Each ends with a clear line or
is redone by a plain ``resume``, and the store ends with every row once.

One data dir of 3 shards × 25 rows, fetched and embedded by the stages' plain functions, is
built once for the module; each test works on a copy of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests

from promptlake.cli import main
from promptlake.flows.params import IngestParams
from promptlake.settings import Settings, store_url
from promptlake.storage.datadir.image_cache import ImageCache
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.datadir.vectors import current_namespace
from promptlake.storage.store import open_store
from tests.conftest import write_csv
from tests.helpers.cli_proc import Cli
from tests.helpers.disk import small_disk
from tests.helpers.fault_server import FaultServer
from tests.helpers.ui_server import PageServer, page_service

SHARDS, PER_SHARD = 3, 25
SHARDS_NAMED = ("00000", "00001", "00002")
ROWS = SHARDS * PER_SHARD


@pytest.fixture(scope="module")
def images():
    with FaultServer() as srv:
        yield srv


def _settings(data_dir: Path, tiny_clip: str) -> Settings:
    return Settings(data_dir=data_dir, clip_model=tiny_clip, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, images, tiny_clip) -> Path:
    """A data dir fetched and embedded, its ingest recorded as a whole one (until index, the
    CSV inside the data dir): ``resume`` loads and indexes it."""
    from promptlake.tasks import embed, fetch
    from promptlake.tasks.download import download
    from promptlake.tasks.plan import plan

    root = tmp_path_factory.mktemp("faults") / "d"
    (root / "input").mkdir(parents=True)
    prompt = "prompt {}, a lighthouse, oil painting"
    rows = [
        [f"r{i:03d}", prompt.format(i), images.url("img", f"r{i}"), 512, 512, "s"]
        for i in range(ROWS)
    ]
    src = write_csv(root / "input" / "p.csv", rows)
    data, settings = DataDir(root), _settings(root, tiny_clip)
    for shard in plan(download(str(src), data), data, shard_size=PER_SHARD).shards:
        fetch.run_shard(shard.name, data, settings)
        embed.run_shard(shard.name, data, settings)
    params = IngestParams(source=str(src), shard_size=PER_SHARD, clip_model=tiny_clip)
    params.model_copy(update={"device": "cpu"}).record(data)
    return root


@pytest.fixture
def cli(tmp_path) -> Cli:
    return Cli(tmp_path, PROMPTLAKE_PRECISION="fp32", PROMPTLAKE_READ_TIMEOUT="5")


def _copy(embedded: Path, target: Path, tiny_clip: str, *, load: bool = False) -> Path:
    shutil.copytree(embedded, target, symlinks=True)
    if load:
        from promptlake.tasks import load as load_stage

        settings = _settings(target, tiny_clip)
        for shard in SHARDS_NAMED:
            load_stage.run_shard(shard, DataDir(target), settings)
        open_store(store_url(settings)).close()  # the CLI's turn next
    return target


def _status(data_dir: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["status", "--data-dir", str(data_dir), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _each_row_once(data_dir: Path) -> None:
    store = open_store(f"chdb://{data_dir / 'store'}")
    with store.turn("test"):
        for table in ("prompts", "images"):
            count, unique = store.client.query(
                f"SELECT count(), uniqExact(id) FROM promptlake.{table}"
            ).result_rows[0]
            assert count == unique == ROWS, table
    store.close()


def _finished(shard: str, *stages: Markers) -> tuple[float, ...]:
    """When each stage last did ``shard`` (a marker's check may refresh it, not this)."""
    return tuple(json.loads(m.path(shard).read_text())["finished_at"] for m in stages)


@pytest.fixture
def disk(tmp_path):
    yield from small_disk(tmp_path / "disk")


def test_a_full_disk_ends_the_run_with_one_line_then_resume_finishes(
    disk, embedded, tiny_clip, tmp_path, capsys
):
    d = disk.copy_in(embedded, "d")
    # a floor that fits a 40 MB disk (the default, 64 MB, is for real ones)
    cli = Cli(tmp_path, PROMPTLAKE_PRECISION="fp32", PROMPTLAKE_MIN_FREE_MB="8")
    for left_kb in (16, 32, 64):  # refused before anything starts: no log, no server
        disk.fill(left_kb)
        ended = cli.run("resume", "--data-dir", str(d), timeout=120)
        assert ended.code == 2 and ended.out == "", ended.err
        assert ended.seconds < 20, f"took {ended.seconds:.0f} s"
        assert len(ended.err_lines) == 1 and "Traceback" not in ended.err
        assert ended.err_lines[0].startswith("promptlake: error: 0.0") and (
            f" MB free on {disk.path} (the data dir {d}), need about 8.00 MB" in ended.err
        ), ended.err
        assert "move the data dir to a bigger disk" in ended.err

    # a floor that lets the run start: every write stage refuses before writing, or fails on
    # ENOSPC, and every failed shard is recorded
    (tmp_path / "low").mkdir()
    low = Cli(tmp_path / "low", PROMPTLAKE_PRECISION="fp32", PROMPTLAKE_MIN_FREE_MB="0.001")
    disk.fill(32)
    ended = low.run("resume", "--data-dir", str(d), timeout=300)
    assert ended.code == 2, ended.err
    assert len(ended.err_lines) == 1 and "Traceback" not in ended.err, ended.err
    line = ended.err_lines[0]
    assert " MB free on " in line and "Failed shards: load 00000-00002" in line, line
    assert f"`promptlake resume --data-dir {d}` carries on" in line
    load = _status(d, capsys)["stages"]["load"]
    assert sorted(load["failed"]) == ["00000", "00001", "00002"]
    assert all("DiskFull" in why for why in load["failed"].values())

    disk.unfill()  # space back: the same command finishes, every row once
    done = cli.run("resume", "--data-dir", str(d), timeout=300)
    assert done.code == 0, done.err[-3000:]
    assert "resume:   nothing to rerun" in done.out
    _each_row_once(d)


def test_truncated_outputs_of_a_moved_data_dir_are_redone_by_a_plain_resume(
    tmp_path, embedded, images, tiny_clip, cli, capsys
):
    a = _copy(embedded, tmp_path / "a", tiny_clip, load=True)
    ns = current_namespace(DataDir(a))[0]
    fetched = a / "fetch" / "00001.parquet"
    fetched.write_bytes(fetched.read_bytes()[: fetched.stat().st_size // 2])
    text = a / "embed" / ns / "text" / "00002.parquet"
    text.write_bytes(text.read_bytes()[:100])
    report = _status(a, capsys)
    assert list(report["stages"]["fetch"]["damaged"]) == ["00001"]
    assert "fetch/00001.parquet is" in report["stages"]["fetch"]["damaged"]["00001"]
    assert "00002" in report["stages"]["embed"]["damaged"]
    assert {"00001", "00002"} <= set(report["resume"]["stages"]["load"]["redo_damaged"])
    assert not report["resume"]["nothing_to_do"]

    stages = ("fetch", f"embed/{ns}", "load")
    before = {s: _finished(s, *(Markers(DataDir(a), st) for st in stages)) for s in SHARDS_NAMED}
    b = tmp_path / "b"
    a.rename(b)  # a bigger disk, say
    asked = sum(images.requests.values())
    done = cli.run("resume", "--data-dir", str(b), timeout=300)
    assert done.code == 0, done.err[-3000:]
    assert not a.exists(), "the resume went back to where the data dir was"
    assert f"data dir: {b}" in done.out and "resume:   nothing to rerun" in done.out
    assert sum(images.requests.values()) == asked  # the status file was made from the cache
    data = DataDir(b)
    for stage in stages:
        good, bad = Markers(data, stage).checked()
        assert sorted(good) == list(SHARDS_NAMED) and not bad, stage
    after = {s: _finished(s, *(Markers(data, st) for st in stages)) for s in SHARDS_NAMED}
    assert after["00000"] == before["00000"]  # untouched: nothing of it was damaged
    assert after["00001"][0] != before["00001"][0]  # its fetch status made again
    redone = [b != a for b, a in zip(before["00002"], after["00002"], strict=True)]
    # its embed again; the load stands because the new vectors are byte for byte the ones it
    # loaded (CPU, fp32): its marker checked out above by their sha256
    assert redone[:2] == [False, True]
    _each_row_once(b)


def test_a_damaged_cached_image_is_410_and_retry_failed_fetches_it(
    tmp_path, embedded, images, tiny_clip, cli, capsys
):
    d = _copy(embedded, tmp_path / "d", tiny_clip, load=True)
    cache = ImageCache.open(DataDir(d).image_cache)
    rid = "r040"
    record = cache.records([rid])[rid]
    body = cache.images([rid])[rid]
    cache.put(record, body[: len(body) // 3])  # a truncated JPEG, still starting ff d8
    asked = images.requests["/img/r40"]
    ns = current_namespace(DataDir(d))[0]
    embeds, loads = Markers(DataDir(d), f"embed/{ns}"), Markers(DataDir(d), "load")
    before = {s: _finished(s, embeds, loads) for s in SHARDS_NAMED}
    with PageServer(page_service(_settings(d, tiny_clip))) as page:
        broken = requests.get(f"{page.url}/img/{rid}", timeout=30)
        assert broken.status_code == 410, broken.text
        assert "promptlake resume --retry-failed" in broken.json()["error"]
        assert requests.get(f"{page.url}/img/r041", timeout=30).status_code == 200
        done = cli.run("resume", "--retry-failed", "--data-dir", str(d), timeout=300)
        assert done.code == 0, done.err[-3000:]
        assert images.requests["/img/r40"] == asked + 1  # that one image, fetched once more
        again = requests.get(f"{page.url}/img/{rid}", timeout=30)
        assert again.status_code == 200 and again.content[:2] == b"\xff\xd8"
    after = {s: _finished(s, embeds, loads) for s in SHARDS_NAMED}
    # r040's shard got a new fetch status: embedded and loaded again; the others were left alone
    assert [s for s in SHARDS_NAMED if before[s] != after[s]] == ["00001"]
    assert all(a != b for a, b in zip(before["00001"], after["00001"], strict=True))
    assert embeds.read("00001").by_status["image"] == PER_SHARD  # type: ignore[union-attr]
    _each_row_once(d)
