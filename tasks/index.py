"""index: build the vector indexes of both tables once the shards are loaded."""

from __future__ import annotations

import time

from prefect import task

from promptlake.settings import Settings
from promptlake.storage.datadir.layout import DataDir, read_json, write_json
from promptlake.storage.store import TABLES, Store
from promptlake.storage.store.dialects import IndexParams
from promptlake.tasks.clip.encoder import current_namespace
from promptlake.tasks.runtime.turn import store_turn

STAGE = "index"


def run(data: DataDir, settings: Settings, *, force: bool = False) -> dict:
    """Build (or confirm) the indexes; skipped while the row counts are those last indexed and
    both indexes are declared (a store mended after a full disk may have lost one).
    Searches work before this (exact scan); the index makes them fast."""
    ns, model = current_namespace(data, settings)
    path = data.index_marker
    last = read_json(path) if path.exists() else {}
    with store_turn(settings, "index check") as store:
        store.ensure_schema(ns, int(model["dim"]))
        counts = {name: store.count(name) for name in TABLES}
        built = all(store.index_status(name) for name in TABLES)
        if not force and built and last.get("counts") == counts:
            return last
    params = IndexParams(settings.hnsw_quantization, settings.hnsw_m, settings.hnsw_ef_construction)
    with store_turn(settings, "index build", long=True) as store:  # the one long hold
        report = {"counts": {n: store.count(n) for n in TABLES}, "params": params.__dict__}
        report["tables"] = {name: _build(store, name, int(model["dim"]), params) for name in TABLES}
    write_json(path, report)
    return report


def _build(store: Store, name: str, dim: int, params: IndexParams) -> dict:
    start = time.perf_counter()
    status = store.build_index(name, dim, params)
    return {
        "seconds": round(time.perf_counter() - start, 3),
        "status": [list(map(str, row)) for row in status],
    }


@task(name=STAGE)
def index_task(data_dir: str, settings: Settings, force: bool = False) -> dict:
    """Prefect task: build the vector indexes (one long turn with the store)."""
    return run(DataDir(data_dir), settings, force=force)
