"""A data dir of many shards made of markers alone (no rows, no images, no store): what
``status``, the run report and the artifacts read, built in seconds for any shard count."""

from __future__ import annotations

from pathlib import Path

from promptlake.storage.datadir.layout import DataDir, write_json
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.datadir.records import PlanManifest, ShardRef, ShardStats, shard_name
from promptlake.storage.datadir.vectors import claim_namespace

NAMESPACE = "clip@0123456789ab"
MODEL = {"model": "tiny", "revision": "0123456789ab", "dim": 16, "max_tokens": 77}


def fetch_stats(k: int, name: str, rows: int) -> ShardStats:
    """Shard ``k``'s fetch: rows ok but for a few 404s, more in every tenth shard."""
    bad = 2 + (k % 10 == 0) * 10
    by_status = {"ok": rows - bad, "http_404": bad}
    return ShardStats(
        "fetch", name, rows=rows, ok=rows - bad, failed=bad, by_status=by_status,
        seconds=1.0 + k % 7, extra={"bytes": rows * 9000, "fetched": rows},
    )  # fmt: skip


def build_marker_dir(root: Path, shards: int, rows: int = 1000, failed: int = 0) -> DataDir:
    """A planned data dir of ``shards`` shards of ``rows`` rows, fetched, embedded and loaded
    (marker files as the stages write them); the last ``failed`` shards' fetch failed."""
    data = DataDir(root)
    names = [shard_name(k) for k in range(shards)]
    manifest = PlanManifest(
        source_sha256="0" * 64,
        shard_size=rows,
        limit=None,
        rows_total=shards * rows,
        rows_valid=shards * rows,
        rows_rejected=0,
        rejects_by_reason={},
        shards=[ShardRef(name, rows) for name in names],
    )
    write_json(data.manifest, manifest.to_dict(), durable=False)
    claim_namespace(data, NAMESPACE, MODEL)
    fetch, embed, load = (Markers(data, s) for s in ("fetch", f"embed/{NAMESPACE}", "load"))
    for k, name in enumerate(names):
        if k >= shards - failed:
            fetch.record_failure(name, OSError(f"disk full writing shard {name}"))
            continue
        stats = fetch_stats(k, name, rows)
        fetch.write(stats)
        images = stats.ok
        counts = {"text": rows, "image": images, "no_image": rows - images, "image_error": 0}
        extra = {**MODEL, "namespace": NAMESPACE, "device": "cpu", "truncated": 0}
        embed.write(ShardStats("embed", name, rows, rows, 0, 0, counts, 2.0, extra))
        counts = {"prompts": rows, "images": images}
        load.write(
            ShardStats("load", name, rows, rows, 0, 0, counts, 0.5, {"namespace": NAMESPACE})
        )
    return data
