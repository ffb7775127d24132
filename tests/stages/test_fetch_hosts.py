"""Dead hosts cost a round of failures, not one per row; bugs fail the shard, not its rows."""

import pytest

from promptlake.storage.datadir.markers import Markers
from promptlake.storage.datadir.status import format_status, status
from promptlake.tasks.fetch import fetch_task, read_status, run_shard
from promptlake.tasks.net.hosts import CLOSED, HALF_OPEN, OPEN, HostBreaker, breaker
from tests.helpers.fault_server import FaultServer, SilentServer, free_port
from tests.stages.test_fetch import _setup

ROWS = 40  # per host


def _hosts_settings(fast_settings):
    return fast_settings.model_copy(
        update={
            "host_failure_threshold": 3,
            "host_probe_seconds": 3600.0,
            "host_quiet_seconds": 0.0,  # no patience: the silent host is dead from the start
            "read_timeout": 0.5,
        }
    )


def test_dead_hosts_are_cut_off_and_retried_later(tmp_path, data, server, fast_settings):
    s = _hosts_settings(fast_settings)
    refused = free_port()
    with SilentServer() as silent:
        urls = []
        for i in range(ROWS):  # the three hosts interleaved in one shard
            urls += [
                server.url("img", f"h{i}"),
                silent.url("img", f"s{i}"),
                f"http://127.0.0.1:{refused}/img/r{i}",
            ]
        _setup(tmp_path, data, urls, shard_size=len(urls))
        stats = run_shard("00000", data, s)
        swallowed = silent.connections
    rows = read_status(data, "00000").to_pylist()
    # the healthy host's rows were each fetched once, at the first try
    assert [(r["status"], r["attempts"]) for r in rows[::3]] == [("ok", 1)] * ROWS
    assert all(server.requests[f"/img/h{i}"] == 1 for i in range(ROWS))
    # each dead host cost about one round of requests (threshold + the threads in flight), not
    # ROWS x (1 + retries); its breaker is open and the rest of its rows were never requested
    bound = s.host_failure_threshold + s.fetch_workers
    silent_host, refused_host = f"127.0.0.1:{silent.port}", f"127.0.0.1:{refused}"
    assert swallowed <= bound
    assert sum(r["attempts"] for r in rows[1::3]) <= bound
    assert sum(r["attempts"] for r in rows[2::3]) <= bound
    for host in (silent_host, refused_host):
        assert breaker(host, s).state().state == OPEN
    dead = rows[1::3] + rows[2::3]
    assert {r["status"] for r in dead} <= {"timeout", "connection_error", "host_down"}
    down = [r for r in dead if r["status"] == "host_down"]  # retries were not sent either
    assert len(down) >= 2 * ROWS - 2 * bound
    assert sum(r["attempts"] == 0 for r in down) >= 2 * ROWS - 2 * bound
    assert all("not requested" in r["error"] for r in down)
    assert set(stats.extra["hosts_down"]) == {silent_host, refused_host}
    assert sum(stats.extra["hosts_down"].values()) == len(down)
    # status names the hosts and counts their rows as retryable
    report = status(data)
    assert report["resume"]["retry_failed_rows"] == 2 * ROWS
    assert silent_host in format_status(report) and refused_host in format_status(report)

    # later the hosts are back: --retry-failed fetches every failed row, each once more
    with FaultServer(port=silent.port) as back1, FaultServer(port=refused) as back2:
        again = run_shard("00000", data, s, retry_failed=True)
        assert again.by_status == {"ok": 3 * ROWS}
        assert "hosts_down" not in again.extra
        for srv, name in ((back1, "s"), (back2, "r")):
            assert all(srv.requests[f"/img/{name}{i}"] == 1 for i in range(ROWS))
    assert all(server.requests[f"/img/h{i}"] == 1 for i in range(ROWS))
    assert breaker(silent_host, s).state().state == CLOSED


def test_a_host_answering_403_everywhere_is_up_and_costs_no_retries(
    tmp_path, data, server, fast_settings
):
    s = _hosts_settings(fast_settings)
    _setup(tmp_path, data, [server.url("403", f"f{i}") for i in range(20)])
    stats = run_shard("00000", data, s)
    assert stats.by_status == {"http_error": 20}
    assert sum(server.requests.values()) == 20  # one request per row, no retries
    host = server.base.removeprefix("http://")
    assert breaker(host, s).state().state == CLOSED
    assert "hosts_down" not in stats.extra


def test_breaker_opens_on_distinct_urls_of_a_quiet_host_and_probes_once_per_cooldown():
    now = [0.0]
    b = HostBreaker("h:80", threshold=3, cooldown=10.0, quiet=5.0, clock=lambda: now[0])
    for _ in range(5):  # one broken URL retried: still one URL
        b.failed("http://h/a", "timed out")
    b.failed("http://h/b", "refused")
    assert b.state().state == CLOSED and b.admit()
    b.answered()  # any reply resets the run
    for url in "cde":
        b.failed(f"http://h/{url}", "timed out")
    assert b.state().state == CLOSED  # it answered 0 s ago: a stall, not a dead host
    now[0] = 5.0
    b.failed("http://h/f", "timed out")
    assert b.state().state == OPEN and b.state().reason == "timed out"
    assert not b.admit()
    now[0] = 15.0
    assert b.admit() and b.state().state == HALF_OPEN  # one trial...
    assert not b.admit()  # ...and only one
    b.failed("http://h/g", "refused", refused=True)  # the trial failed: open until next cooldown
    assert b.state().state == OPEN and not b.admit()
    now[0] = 25.0
    assert b.admit()
    b.answered()
    assert b.state().state == CLOSED and b.admit() and b.admit()
    for url in "xyz":  # refused connections: nothing listens, no patience needed
        b.failed(f"http://h/{url}", "refused", refused=True)
    assert b.state().state == OPEN


def test_a_name_that_does_not_resolve_is_not_a_refused_connection(tmp_path, data, fast_settings):
    """A resolver's blip fails every host at once: its rows get ``dns_error`` (retryable, with
    its own fix), and the breaker waits out the quiet period as for timeouts, instead of
    marking the host down at the first failures as nothing-listens-there would. (RFC 6761:
    ``.invalid`` never resolves.)"""
    s = fast_settings.model_copy(
        update={"host_failure_threshold": 3, "host_quiet_seconds": 3600.0, "fetch_retries": 0}
    )
    urls = [f"http://dns-blip.invalid/img/d{i}" for i in range(8)]
    _setup(tmp_path, data, urls, shard_size=len(urls))
    stats = run_shard("00000", data, s)
    assert stats.by_status == {"dns_error": 8}  # all requested: none cut off as host_down
    assert breaker("dns-blip.invalid:80", s).state().state == CLOSED
    assert "check this machine's DNS" in format_status(status(data))
    refused = f"http://127.0.0.1:{free_port()}/img/r"
    changed = _setup(tmp_path, data, [f"{refused}{i}" for i in range(8)], shard_size=8)
    one_by_one = s.model_copy(update={"fetch_workers": 1})
    again = run_shard(changed.shards[-1].name, data, one_by_one)
    assert again.by_status == {"connection_error": 3, "host_down": 5}  # refused: down at once


def test_a_new_process_that_never_heard_the_host_waits_out_the_quiet_period():
    """Its first requests time out because the machine is busy: that is not a dead host until
    the silence has lasted ``quiet`` seconds since the breaker's first use."""
    now = [100.0]
    b = HostBreaker("h:80", threshold=3, cooldown=10.0, quiet=30.0, clock=lambda: now[0])
    for url in "abcdef":
        b.failed(f"http://h/{url}", "timed out")
    assert b.state().state == CLOSED
    now[0] = 131.0
    b.failed("http://h/g", "timed out")
    assert b.state().state == OPEN


def test_a_bug_fails_the_shard_instead_of_its_rows(tmp_path, data, server, fast_settings):
    _setup(tmp_path, data, [server.url("img", f"b{i}") for i in range(6)])
    # a setting that skipped validation: the encoder has no such format (a bug, not bad data)
    broken = fast_settings.model_copy(update={"image_format": "bmp", "data_dir": data.root})
    with pytest.raises(KeyError, match="bmp"):
        fetch_task.fn("00000", str(data.root), broken)
    markers = Markers(data, "fetch")
    assert not markers.done("00000")
    assert "KeyError" in markers.failures()["00000"]
    # nothing was recorded as a bad row: a fixed rerun fetches every row
    assert run_shard("00000", data, fast_settings).by_status == {"ok": 6}


def test_a_broken_cache_fails_the_shard(tmp_path, data, server, fast_settings, monkeypatch):
    from promptlake.storage.datadir.image_cache import ImageCache

    _setup(tmp_path, data, [server.url("img", f"c{i}") for i in range(4)])

    def broken_put_many(self, items):
        raise TypeError("put_many() broke")

    monkeypatch.setattr(ImageCache, "put_many", broken_put_many)
    with pytest.raises(TypeError, match="broke"):
        fetch_task.fn("00000", str(data.root), fast_settings)
    assert "TypeError" in Markers(data, "fetch").failures()["00000"]


@pytest.mark.usefixtures("prefect_server")
def test_the_run_report_says_loudly_when_a_shard_fetched_nothing(tmp_path, monkeypatch):
    from promptlake.flows.ingest import ingest
    from promptlake.flows.params import IngestParams
    from tests.conftest import artifacts_of, write_csv
    from tests.helpers.fault_server import make_image

    monkeypatch.setenv("PROMPTLAKE_TASK_RETRIES", "0")
    rows = []
    for i in range(3):
        pic = tmp_path / f"p{i}.png"
        pic.write_bytes(make_image(f"p{i}", fmt="PNG"))
        rows.append([f"p{i}", f"prompt {i}", pic.as_uri(), 64, 64, "s"])
    params = IngestParams(
        source=str(write_csv(tmp_path / "p.csv", rows)),
        data_dir=str(tmp_path / "d"),
        until="fetch",
        runner="thread",
    )
    state = ingest(**params.flow_kwargs(), return_state=True)
    assert state.is_completed(), state.message  # green, but not silent:
    arts = artifacts_of(state.state_details.flow_run_id)
    report = next(a for a in arts if a.key == "ingest-report")
    assert "every row failed with blocked_scheme" in report.data
    assert "--allow-file-urls --retry-failed" in report.data
    # rerunning as the warning says fetches them
    again = ingest(
        **params.model_copy(update={"allow_file_urls": True, "retry_failed": True}).flow_kwargs()
    )
    assert sum(s.ok for s in again.stages[0].done.values()) == 3
