"""Crash test: the ingest of a changed source, killed at each write of download, plan, fetch,
embed, load, reconcile and index (the moment a file appears or changes, a cache commit lands, a
store statement returns), then run again — until the store equals the source: every id once,
every prompt current, changed rows showing their new image, retired rows never fetched again;
then ``--retry-failed`` and ``--force``, killed the same way.

The kills are real: ``python -m promptlake.cli`` in its own session SIGKILLs its whole process
group at the named point (``storage/datadir/crashpoints.py``). To stay within minutes, each
rerun is itself killed at the next point (a chain), the plan's invariants are checked after
every kill and the store after each chain's last, complete run, and two chains run at once (on
copies of one base). The test fails when a run passed a write point that no run was killed at:
a new write needs a kill point here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from promptlake.settings import Settings, store_url
from promptlake.storage.datadir.image_cache import ImageCache
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.datadir.planfiles import committed, read_index, read_retired
from promptlake.storage.store import open_store
from promptlake.tasks.clip.encoder import get_encoder
from promptlake.tasks.images.imaging import process_image
from tests.helpers.crash_runs import (
    CrashRunner,
    Run,
    ingest_env,
    killed_patterns,
    write_patterns,
)
from tests.helpers.fault_server import FaultServer

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.timeout(900)]
SHARD = "30"  # the base: 2 shards; the change: 1 more
REVISED, NEW_URL, ONLY_URL = (1, 5, 9, 13, 17, 21, 25, 29), (1, 5, 17, 29), (33, 37)
DELETED, MISSING, FLAKY = (2, 10, 20, 30, 40), "r43", "r44"
# the change ingest, killed at each of its writes in the order they come: up to its plan's
# commit (one chain) ...
CHANGE_PLAN = [
    "state/ingest.json",
    "source/p.csv.part.json",
    "source/p.csv.part",  # the rerun resumes it (If-Range)
    "source/p.csv",
    "source/p.csv.http.json",
    "rm:source/p.csv.part.json",
    "source/source.json",
    "plan/.staging.parquet",
    "plan/generations/*/rejects.parquet",
    "plan/shards/*.parquet",  # the new shard
    "rm:plan/shards/*.parquet",  # the rerun clears what the dead attempt wrote
    "plan/generations/*/retired.parquet",
    "plan/generations/*/index.parquet",
]
# ... and from the commit on (another chain, on another copy)
CHANGE_STAGES = [
    "plan/manifest.json",  # the commit
    "rm:plan/generations/*",
    "rm:plan/.staging.parquet",
    "cache:put",
    "fetch/*.parquet",
    "state/fetch/*.json",
    "embed/*/text/*.parquet",
    "embed/*/image/*.parquet",
    "state/embed/*/*.json",
    "store:prompts:insert",
    "store:images:insert",
    "state/load/*.json",
    "store:prompts:drop",
    "store:images:drop",
    "cache:delete",
    "state/reconciled.json",
    "store:prompts:index",
    "store:images:index",
    "state/index/store.json",
]
# --retry-failed once the flaky image is there: the finished shard's later stages are undone
RETRY = ["rm:state/load/*.json", "rm:state/embed/*/*.json", "rm:state/fetch/*.json"]
# the base ingest's writes that only a store's first index build makes
FIRST = ["store:prompts:optimize", "store:images:optimize"]
# --force --shard-size 45 (2 shards become 1): the intent, the clearing (its first and last
# removal: after the intent every removal is the same step, redone whole by the next run), the
# new plan, the intent's end, the model record written again, the old shard's rows replaced.
# Each run after a kill is `ingest` without --force or `resume`: both finish the force.
FORCE = [
    ("state/force.json", "ingest"),
    ("rm:state/reconciled.json", "resume"),
    ("rm:plan", "ingest"),
    ("plan/manifest.json", "resume"),
    ("rm:state/force.json", "ingest"),
    ("embed/*/model.json", "resume"),
    ("store:prompts:delete", "ingest"),
    ("store:images:delete", "resume"),
]
# removals inside the force's clearing, each the same step as the two killed above
SAME_STEP = {"rm:state/index", "rm:state/load", "rm:state/embed", "rm:state/fetch"}
SAME_STEP |= {"rm:embed", "rm:fetch"}
ONE_STORE = threading.Lock()


def _row(server: FaultServer, i: int, *, revised: bool = False, new_url: bool = False) -> list:
    rid = f"r{i:02d}"
    url = server.url("img", f"{rid}-v2" if new_url else rid)
    if rid in (MISSING, FLAKY):  # 404 now; the flaky one appears later
        url = server.url("file", f"{rid}.jpg")
    prompt = f"prompt {i}{', revised' if revised else ''}, a lighthouse, oil painting"
    return [rid, prompt, url, 512, 512, "s"]


def version_a(server: FaultServer) -> list[list]:
    return [_row(server, i) for i in range(45)]


def version_b(server: FaultServer) -> list[list]:
    rows = [
        _row(server, i, revised=i in REVISED, new_url=i in NEW_URL + ONLY_URL)
        for i in range(45)
        if i not in DELETED
    ]
    for n in range(20):
        url = server.url("file" if n == 7 else "img", f"n{n:02d}")  # n07: a 404
        rows.append([f"n{n:02d}", f"an added prompt {n}, watercolor", url, 640, 512, "s"])
    return rows


def as_csv(rows: list[list]) -> bytes:
    """The rows, a duplicate id and a row without an id (rejects), as a CSV file's bytes."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "prompt", "url", "width", "height", "source_site"])
    writer.writerows([*rows, ["r00", "a duplicate", "http://x.test/d.jpg", 1, 1, "s"]])
    writer.writerow(["", "no id", "http://x.test/e.jpg", 1, 1, "s"])
    return out.getvalue().encode()


@pytest.fixture(scope="module")
def server():
    with FaultServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def crash_env(tiny_clip, tmp_path_factory) -> dict[str, str]:
    return ingest_env(tiny_clip, tmp_path_factory.mktemp("gpu-locks"))


@pytest.fixture(scope="module")
def base(tmp_path_factory, server, crash_env) -> tuple[Path, list[Run]]:
    """Version A ingested into a data dir, killed at the writes only a first ingest makes."""
    server.files["p.csv"] = as_csv(version_a(server))
    work = tmp_path_factory.mktemp("base")
    runner = CrashRunner(work / "data", work, crash_env)
    src = server.url("file", "p.csv")
    for at in FIRST:
        runner.crash("ingest", src, "--shard-size", SHARD, at=at)
    runner.complete("ingest", src, "--shard-size", SHARD)
    return work / "data", runner.runs


def test_a_kill_at_every_write_loses_nothing(base, server, crash_env, tmp_path, tiny_clip):
    """Three chains on copies of the base, two at a time: the change up to its plan's commit;
    the change from the commit on, then --retry-failed; --force (from another server, so its
    fetches do not count as requests of retired URLs)."""
    server.files["p.csv"] = as_csv(version_b(server))
    chains = Chains(base[0], server, crash_env, tmp_path, tiny_clip)
    with FaultServer() as other, ThreadPoolExecutor(2) as pool:
        longest = pool.submit(chains.stages_then_retry)
        others = pool.submit(lambda: chains.plan() + chains.force(other))
        runs = longest.result() + others.result()
    everything = base[1] + runs
    _report(everything)
    missing = write_patterns(everything) - killed_patterns(everything) - SAME_STEP
    assert not missing, f"write points without a kill point: {sorted(missing)}"


class Chains:
    """The chains of runs, each on its own copy of the base data dir."""

    def __init__(self, base_dir, server, env, tmp_path, tiny_clip) -> None:
        self.base_dir, self.server, self.env = base_dir, server, env
        self.tmp, self.clip = tmp_path, tiny_clip

    def _runner(self, name: str) -> CrashRunner:
        work = self.tmp / name
        shutil.copytree(self.base_dir, work / "data", symlinks=True)
        return CrashRunner(work / "data", work, self.env, name=name)

    def plan(self) -> list[Run]:
        runner, src = self._runner("change-plan"), self.server.url("file", "p.csv")
        for at in CHANGE_PLAN:
            runner.crash("ingest", src, "--shard-size", SHARD, at=at)
            check_plan(DataDir(runner.data_dir))
        runner.complete("ingest", src, "--shard-size", SHARD)
        no_image = {MISSING, FLAKY, "n07"}
        check_store(
            runner.data_dir, version_b(self.server), self.server, self.clip, no_image=no_image
        )
        return runner.runs

    def stages_then_retry(self) -> list[Run]:
        runner, src = self._runner("change-stages"), self.server.url("file", "p.csv")
        before = Counter(self.server.requests)
        for at in CHANGE_STAGES:
            runner.crash("ingest", src, "--shard-size", SHARD, at=at)
            check_plan(DataDir(runner.data_dir))
        runner.complete("ingest", src, "--shard-size", SHARD)
        expect = version_b(self.server)
        no_image = {MISSING, FLAKY, "n07"}
        check_store(runner.data_dir, expect, self.server, self.clip, no_image=no_image)
        self.server.files[f"{FLAKY}.jpg"] = self.server.image("flaky")  # there now
        for at in RETRY:
            runner.crash("ingest", src, "--retry-failed", at=at)
        runner.complete("ingest", src, "--retry-failed")
        check_store(runner.data_dir, expect, self.server, self.clip, no_image={MISSING, "n07"})
        _assert_retired_never_requested(self.server, before)
        return runner.runs

    def force(self, other: FaultServer) -> list[Run]:
        """--force with a new shard size (and every URL on another server); the runs after a
        kill are plain `ingest` (no --force) and `resume`: both finish the force."""
        other.files["p.csv"] = as_csv(version_a(other))
        runner, src = self._runner("force"), other.url("file", "p.csv")
        runner.crash("ingest", src, "--force", "--shard-size", "45", at=FORCE[0][0])
        for (at, _), (_, then) in zip(FORCE[1:], FORCE[:-1], strict=True):
            runner.crash(*_again(then, src), at=at)
            check_plan(DataDir(runner.data_dir))
        runner.complete(*_again(FORCE[-1][1], src))
        data = DataDir(runner.data_dir)
        plan = committed(data)
        assert plan and (plan.shard_size, len(plan.shards)) == (45, 1)
        assert not data.force_intent.exists()
        check_store(runner.data_dir, version_a(other), other, self.clip, no_image={MISSING, FLAKY})
        return runner.runs


def _again(how: str, src: str) -> list[str]:
    return ["resume"] if how == "resume" else ["ingest", src]


def check_plan(data: DataDir) -> None:
    """The committed plan is whole: its index names only its own shards, each id once, and no
    retired row twice (after a kill anywhere)."""
    plan = committed(data)
    if plan is None:  # a force cleared it: its intent says so
        assert data.force_intent.exists()
        return
    index, retired = read_index(data, plan), read_retired(data, manifest=plan)
    names = {s.name for s in plan.shards}
    assert set(index["shard"].to_pylist()) <= names
    assert index.num_rows == len(set(index["id"].to_pylist())) == plan.rows_valid
    pairs = list(zip(retired["shard"].to_pylist(), retired["id"].to_pylist(), strict=True))
    assert len(pairs) == len(set(pairs))


def _served(server: FaultServer, url: str) -> bytes | None:
    kind, name = url.rsplit("/", 2)[-2:]
    return server.image(name) if kind == "img" else server.files.get(name)


def check_store(data_dir: Path, rows: list[list], server, tiny_clip, *, no_image: set[str]) -> None:
    """The store equals ``rows``: every id once, every prompt and URL current; an image row
    for each row whose image the server has, made from that very image."""
    expect = {r[0]: (r[1], r[2]) for r in rows}
    with ONE_STORE:  # chDB opens one path at a time in a process: the chains take turns here
        store = open_store(store_url(Settings(data_dir=data_dir)))
        with store.turn("check"):
            prompts = store.client.query(
                "SELECT id, prompt, url FROM promptlake.prompts WHERE origin = 'dataset'"
            ).result_rows
            images = store.client.query(
                "SELECT id, url, image_vector FROM promptlake.images WHERE origin = 'dataset'"
            ).result_rows
        store.close()
    assert Counter(i for i, _, _ in prompts) == Counter(list(expect))  # every id, once
    assert {i: (p, u) for i, p, u in prompts} == expect  # every prompt and URL current
    with_image = {i for i in expect if i not in no_image}
    assert Counter(i for i, _, _ in images) == Counter(with_image)
    assert all(u == expect[i][1] for i, u, _ in images)
    cache = ImageCache.open(DataDir(data_dir).image_cache)
    records = cache.records(expect)
    for rid, (_, url) in expect.items():
        assert records[rid].url == url, rid
        body = _served(server, url)
        if rid in with_image:
            assert body and records[rid].sha256 == hashlib.sha256(body).hexdigest(), rid
    gone = {f"r{i:02d}" for i in DELETED} - set(expect)
    assert not cache.records(gone)  # removed rows left the cache
    enc = get_encoder(tiny_clip, "cpu", "fp32")
    stored = {i: np.asarray(v, np.float32) for i, _, v in images}
    pics = cache.images_for([(i, expect[i][1]) for i in stored])
    for rid in stored:  # each image vector is the one of the live version's image
        made = enc.encode_pixels(np.stack([enc.prepare_image(pics[rid].body)]))[0]
        assert float(stored[rid] @ made) > 0.999, rid
    for i in NEW_URL + ONLY_URL:  # and not the old one's (it differs enough to tell)
        rid = f"r{i:02d}"
        if rid in stored and expect[rid][1].endswith("-v2"):
            old = process_image(server.image(rid), size=256).data
            made = enc.encode_pixels(np.stack([enc.prepare_image(old)]))[0]
            assert float(stored[rid] @ made) < float(stored[rid] @ stored[rid]) - 1e-4, rid


def _assert_retired_never_requested(server: FaultServer, before: Counter) -> None:
    """Old URLs of changed rows and removed rows were not asked for again."""
    old = [f"/img/r{i:02d}" for i in NEW_URL + ONLY_URL + DELETED]
    assert {p: server.requests[p] - before[p] for p in old} == dict.fromkeys(old, 0)


def _report(runs: list[Run]) -> None:
    """Per run: its chain, where it was to die and did, how long it took (printed; and kept as
    JSON lines in $PROMPTLAKE_CRASH_REPORT when set)."""
    lines = [
        {
            "chain": r.chain,
            "kill_at": r.kill_at,
            "died_at": r.points[-1] if r.killed and r.points else None,
            "argv": " ".join(r.argv[:2]),
            "seconds": round(r.seconds, 1),
            "code": r.code,
        }
        for r in runs
    ]
    for line in lines:
        print(json.dumps(line))
    if path := os.environ.get("PROMPTLAKE_CRASH_REPORT"):
        with open(path, "a") as fh:
            fh.writelines(json.dumps(line) + "\n" for line in lines)
