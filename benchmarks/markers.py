"""Markers benchmark: what recording and checking a shard's outputs costs, against writing them.

For shards of N rows (default 1,000) of 512-d vectors, as the embed stage writes them (text and
image vectors) and as fetch writes its status file: the time to write the files (the baseline),
to record their size, mtime and sha256 in the marker (``Markers.write`` with outputs and inputs),
and to check a marker (``Markers.valid``: a stat per file), then the same check after a copy of
the data dir (mtimes moved: the files are hashed once more). Medians over ``--rounds``; one JSON
line at the end.

    python benchmarks/markers.py [--rows 1000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from promptlake.storage.datadir.layout import DataDir, atomic_path  # noqa: E402
from promptlake.storage.datadir.markers import Markers  # noqa: E402
from promptlake.storage.datadir.records import ShardStats  # noqa: E402
from promptlake.storage.datadir.vectors import write_vectors  # noqa: E402


def write_outputs(data: DataDir, rows: int, dim: int) -> list[Path]:
    """One shard's files: text and image vectors, a fetch status file."""
    rng = np.random.default_rng(0)
    ids = [f"row-{i:07d}" for i in range(rows)]
    paths = [data.vectors("ns", kind, "00000") for kind in ("text", "image")]
    for path in paths:
        write_vectors(path, ids, rng.random((rows, dim), dtype=np.float32))
    status = pa.table({"id": ids, "status": ["ok"] * rows, "bytes": [30_000] * rows})
    with atomic_path(data.fetch_status("00000")) as tmp:
        pq.write_table(status, tmp)
    return [*paths, data.fetch_status("00000")]


def timed(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = DataDir(Path(tmp) / "d")
        files = write_outputs(data, args.rows, args.dim)
        size = sum(p.stat().st_size for p in files)
        markers = Markers(data, "embed/ns")
        write = timed(lambda: write_outputs(data, args.rows, args.dim), args.rounds)
        plain = timed(lambda: markers.write(ShardStats("embed", "00000")), args.rounds)
        recorded = timed(
            lambda: markers.write(
                ShardStats("embed", "00000"), outputs=files[:2], inputs=files[2:]
            ),
            args.rounds,
        )
        check = timed(lambda: markers.valid("00000"), args.rounds)
        copy = Path(tmp) / "copy"
        shutil.copytree(data.root, copy, copy_function=shutil.copy)  # new mtimes: hashed again
        moved = Markers(DataDir(copy), "embed/ns")
        start = time.perf_counter()
        assert moved.valid("00000") is not None
        after_copy = time.perf_counter() - start
        again = timed(lambda: moved.valid("00000"), args.rounds)
    cost = recorded - plain
    figures = {
        "rows": args.rows,
        "shard_files_mb": round(size / 2**20, 2),
        "write_files_ms": round(write * 1000, 2),
        "marker_plain_ms": round(plain * 1000, 2),
        "marker_with_facts_ms": round(recorded * 1000, 2),
        "facts_cost_ms": round(cost * 1000, 2),
        "facts_cost_vs_write": round(cost / write, 3),
        "check_ms": round(check * 1000, 3),
        "check_after_copy_ms": round(after_copy * 1000, 2),
        "check_after_copy_then_ms": round(again * 1000, 3),
    }
    for name, value in figures.items():
        print(f"{name:28} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
