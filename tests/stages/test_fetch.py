import io

import pytest
from PIL import Image

from promptlake.storage.datadir.image_cache import ImageCache
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.datadir.status import format_status, status
from promptlake.tasks.download import download
from promptlake.tasks.fetch import read_status, run_shard
from promptlake.tasks.net.backoff import retry_after_seconds
from promptlake.tasks.plan import plan
from tests.conftest import write_csv
from tests.helpers.fault_server import FaultServer, make_image

EXPECTED = {
    "img": ("ok", 1),
    "png": ("ok", 1),
    "404": ("http_404", 1),
    "500": ("ok", 3),
    "429": ("ok", 2),
    "trunc": ("decode_error", 1),
    "cut": ("connection_error", 3),
    "html": ("not_image", 1),
    "slow": ("timeout", 3),
    "redirect": ("ok", 1),
    "loop": ("too_many_redirects", 1),
    "big": ("too_large", 1),
    "bomb": ("too_large", 1),
    "dead": ("http_error", 3),
}


def _setup(tmp_path, data, urls, shard_size=100):
    rows = [[f"r{i}", f"prompt {i}", u, 512, 512, "s"] for i, u in enumerate(urls)]
    src = write_csv(tmp_path / "p.csv", rows)
    return plan(download(str(src), data), data, shard_size=shard_size)


def test_every_fault_gets_its_status(tmp_path, data, server, fast_settings):
    kinds = list(EXPECTED)
    _setup(tmp_path, data, [server.url(k, f"n{i}") for i, k in enumerate(kinds)])
    # a read timeout well under /slow/'s 2 s, yet one a busy machine's server always meets
    stats = run_shard("00000", data, fast_settings.model_copy(update={"read_timeout": 1.0}))
    rows = read_status(data, "00000").to_pylist()
    assert [(r["status"], r["attempts"]) for r in rows] == [EXPECTED[k] for k in kinds]
    assert stats.rows == len(kinds) and stats.ok == 5 and stats.failed == len(kinds) - 5
    assert rows[kinds.index("429")]["http_status"] == 200
    assert rows[kinds.index("dead")]["http_status"] == 503
    cache = ImageCache.open(data.image_cache)
    images = cache.images(r["id"] for r in rows)
    assert set(images) == {r["id"] for r in rows if r["status"] == "ok"}
    for r in rows:
        if r["status"] == "ok":
            img = Image.open(io.BytesIO(images[r["id"]]))
            assert img.format == "JPEG" and min(img.size) == 256 and img.size == (256, 341)
            assert (r["orig_width"], r["orig_height"]) == (384, 512)
            assert len(r["sha256"]) == 64 and r["bytes"] > 0
        else:
            assert r["error"], r


def test_stored_image_is_the_served_image(tmp_path, data, server, fast_settings):
    _setup(tmp_path, data, [server.url("img", "same")])
    run_shard("00000", data, fast_settings)
    stored = Image.open(io.BytesIO(ImageCache.open(data.image_cache).images(["r0"])["r0"]))
    served = Image.open(io.BytesIO(make_image("same"))).resize(stored.size, Image.BICUBIC)
    diff = sum(abs(a - b) for a, b in zip(stored.tobytes(), served.tobytes(), strict=True))
    assert diff / len(stored.tobytes()) < 6  # same picture, up to JPEG noise


def test_rerun_sends_no_request_and_retry_failed_only_failed_rows(
    tmp_path, data, server, fast_settings
):
    urls = [server.url("img", "a"), server.url("500", "b"), server.url("404", "c"), "file:///x.png"]
    _setup(tmp_path, data, urls)
    no_retry = fast_settings.model_copy(update={"fetch_retries": 0})
    first = run_shard("00000", data, no_retry)
    assert first.by_status == {"ok": 1, "http_error": 1, "http_404": 1, "blocked_scheme": 1}
    seen = dict(server.requests)
    assert run_shard("00000", data, fast_settings) == first
    assert dict(server.requests) == seen
    again = run_shard("00000", data, fast_settings, retry_failed=True)
    assert again.by_status == {"ok": 2, "http_404": 1, "blocked_scheme": 1}
    assert server.requests["/img/a"] == 1  # the finished row was not fetched again
    assert server.requests["/500/b"] == 3 and server.requests["/404/c"] == 2
    assert Markers(data, "fetch").read("00000").ok == 2


def test_a_refused_scheme_is_retried_once_allowed(tmp_path, data, fast_settings):
    pic = tmp_path / "pic.png"
    pic.write_bytes(make_image("local", fmt="PNG"))
    _setup(tmp_path, data, [pic.as_uri(), (tmp_path / "gone.png").as_uri()])
    refused = run_shard("00000", data, fast_settings)
    assert refused.by_status == {"blocked_scheme": 2}
    assert "--allow-file-urls" in read_status(data, "00000")["error"][0].as_py()
    # the shard says loudly that nothing was fetched, and how to fix it
    assert "every row failed with blocked_scheme" in refused.extra["warning"]
    assert "--allow-file-urls --retry-failed" in refused.extra["warning"]
    report = status(data)
    assert report["resume"]["retry_failed_rows"] == 2
    text = format_status(report)
    assert "--allow-file-urls" in text and "no image fetched" in text
    allowed = fast_settings.model_copy(update={"allow_file_urls": True})
    assert run_shard("00000", data, allowed) == refused  # a plain rerun skips the shard
    stats = run_shard("00000", data, allowed, retry_failed=True)
    assert stats.by_status == {"ok": 1, "not_found": 1}
    assert "warning" not in stats.extra


def test_cache_map_grows_when_full(tmp_path, data, server, fast_settings):
    _setup(tmp_path, data, [server.url("img", f"g{i}") for i in range(40)])
    tiny = fast_settings.model_copy(update={"lmdb_map_size": 64 * 1024})
    stats = run_shard("00000", data, tiny)
    cache = ImageCache.open(data.image_cache)
    assert stats.ok == 40 and cache.count() == {"records": 40, "images": 40}
    assert cache.map_size > 64 * 1024


def test_per_host_cap_is_respected(tmp_path, data, fast_settings):
    with FaultServer(slow_seconds=0.2) as srv:
        _setup(tmp_path, data, [srv.url("slow", f"s{i}") for i in range(8)])
        capped = fast_settings.model_copy(update={"fetch_per_host": 2, "read_timeout": 2.0})
        stats = run_shard("00000", data, capped)
        assert stats.ok == 8
        assert srv.max_inflight == 2


def test_shards_of_a_plan_are_fetched_independently(tmp_path, data, server, fast_settings):
    _setup(tmp_path, data, [server.url("img", f"i{i}") for i in range(5)], shard_size=2)
    assert run_shard("00001", data, fast_settings).rows == 2
    assert set(Markers(data, "fetch").all_done()) == {"00001"}
    assert sorted(server.requests) == ["/img/i2", "/img/i3"]


@pytest.mark.parametrize(
    "value,expected",
    [("3", 3.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0)],
)
def test_retry_after(value, expected):
    from email.utils import parsedate_to_datetime

    now = parsedate_to_datetime("Wed, 21 Oct 2015 07:28:00 GMT").timestamp()
    assert retry_after_seconds(value, now=now) == expected


@pytest.mark.parametrize(
    "url",
    ["http://" + "a" * 70 + ".com/x.jpg", "http://exa mple.com/x", "http://[::1/x", "gopher://x/y"],
)
def test_unusable_urls_are_a_row_status_not_a_crash(url, fast_settings):
    from promptlake.tasks.net.fetcher import Fetcher

    got = Fetcher(fast_settings).attempt(url)
    assert got.status == "invalid_url" and got.error and got.retry_in is None
