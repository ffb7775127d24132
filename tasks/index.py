"""index: build the vector indexes of both tables once the shards are loaded."""

from __future__ import annotations

import time

from prefect import task

from promptlake.settings import Settings, store_url
from promptlake.storage.dialects import IndexParams
from promptlake.storage.layout import DataDir, read_json, write_json
from promptlake.storage.store import TABLES, open_store
from promptlake.tasks.load import current_namespace

STAGE = "index"


def run(data: DataDir, settings: Settings, *, force: bool = False) -> dict:
    """Build (or confirm) the indexes; skipped while the row counts are those last indexed.
    Searches work before this (exact scan); the index makes them fast."""
    ns, model = current_namespace(data, settings)
    store = open_store(store_url(settings))
    store.ensure_schema(ns, int(model["dim"]))
    counts = {name: store.count(name) for name in TABLES}
    path = data.index_marker
    last = read_json(path) if path.exists() else {}
    if last.get("counts") == counts and not force:
        return last
    params = IndexParams(settings.hnsw_quantization, settings.hnsw_m, settings.hnsw_ef_construction)
    report = {"counts": counts, "params": params.__dict__, "tables": {}}
    for name in TABLES:
        start = time.perf_counter()
        status = store.build_index(name, int(model["dim"]), params)
        report["tables"][name] = {
            "seconds": round(time.perf_counter() - start, 3),
            "status": [list(map(str, row)) for row in status],
        }
    write_json(path, report)
    return report


@task(name=STAGE)
def index_task(data_dir: str, settings: Settings, force: bool = False) -> dict:
    """Prefect task: build the vector indexes (in the flow's process, beside the loads)."""
    return run(DataDir(data_dir), settings, force=force)
