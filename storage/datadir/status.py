"""What a data directory holds: planned rows and, per stage, done, failed and pending shards."""

from __future__ import annotations

import os
import shlex
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from promptlake.storage.datadir import activity
from promptlake.storage.datadir.layout import DataDir, read_json
from promptlake.storage.datadir.markers import Markers
from promptlake.storage.datadir.records import (
    FETCH_FIXES,
    PERMANENT_FETCH,
    SHARDED_STAGES,
    PlanManifest,
    ShardStats,
)
from promptlake.storage.datadir.vectors import current_namespace, namespaces
from promptlake.storage.store.turn_files import Holder, TurnFiles
from promptlake.storage.store.urls import parse_store_url


def stage_status(data: DataDir, stage: str, shards: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Counts for one sharded stage, plus the failed shards with their reasons, and the names of
    the shards neither done nor failed. Embeddings are counted for the newest model namespace
    (the others are listed)."""
    done_markers, extra = Markers(data, stage), {}
    if stage == "embed":
        found = current_namespace(data)
        if found:
            done_markers = Markers(data, f"embed/{found[0]}")
            extra = {"model": found[1], "namespaces": list(namespaces(data))}
    planned = set(shards)
    good, bad = done_markers.checked()
    done = {k: v for k, v in good.items() if k in planned}
    damaged = {k: v for k, v in bad.items() if k in planned}
    failures = {k: v for k, v in Markers(data, stage).failures().items() if k not in done}
    missing = [s for s in shards if s not in done and s not in failures]
    by_status: dict[str, int] = {}
    for stats in done.values():
        for status, n in stats.by_status.items():
            by_status[status] = by_status.get(status, 0) + n
    if stage == "fetch":
        extra["notes"] = fetch_notes(done)
    return {
        "shards_done": len(done),
        "shards_failed": len(failures),
        "shards_pending": len(missing),
        "shards_damaged": len(damaged),
        "rows_ok": sum(s.ok for s in done.values()),
        "rows_failed": sum(s.failed for s in done.values()),
        "by_status": by_status,
        "failed": failures,
        "damaged": damaged,
        **extra,
    }, missing


def fetch_notes(done: dict[str, ShardStats]) -> list[str]:
    """What a person must know about finished fetch shards, from their markers: the hosts
    marked down (with their rows), and each shard warning once with the shards it concerns."""
    down: Counter[str] = Counter()
    warned: dict[str, list[str]] = {}
    for shard, stats in done.items():
        down.update(stats.extra.get("hosts_down", {}))
        if warning := stats.extra.get("warning"):
            warned.setdefault(warning, []).append(shard)
    notes = [f"shards {shard_ranges(sorted(shards))}: {w}" for w, shards in warned.items()]
    if down:
        hosts = ", ".join(f"{host} ({n:,} rows)" for host, n in down.most_common())
        notes.append(f"hosts down: {hosts} — {FETCH_FIXES['host_down']}")
    return notes


def store_holder(data: DataDir, store_url: str | None = None) -> dict[str, Any] | None:
    """Who holds the embedded store now (from its holder file; a server store: None). Never
    waits for the store."""
    u = parse_store_url(store_url or f"chdb://{data.root / 'store'}")
    holder = TurnFiles(Path(u.path).resolve()).holder() if u.scheme == "chdb" else None
    mine = holder and holder.pid == os.getpid()  # this very process: it hands over when asked
    return asdict(holder) if holder and not mine else None


def status(data: DataDir, store_url: str | None = None) -> dict[str, Any]:
    """A JSON-ready summary of ``data`` (and of who holds its store, ``store_url`` or the
    embedded one in the data dir)."""
    out: dict[str, Any] = {"data_dir": str(data.root)}
    out["store_holder"] = store_holder(data, store_url)
    out["running"] = activity.now(data)
    if data.source_info.exists():
        out["source"] = read_json(data.source_info)
    if not data.manifest.exists():
        out["rows"] = {"total": 0, "valid": 0, "rejected": 0}
        out["stages"] = {}
        out["planned"] = False
        return out
    plan = PlanManifest.from_dict(read_json(data.manifest))
    shards = [s.name for s in plan.shards]
    out["planned"] = True
    out["rows"] = {
        "total": plan.rows_total,
        "valid": plan.rows_valid,
        "rejected": plan.rows_rejected,
        "rejects_by_reason": plan.rejects_by_reason,
    }
    out["shards"] = len(shards)
    out["generations"] = [asdict(g) for g in plan.generations]
    out["stages"], missing = {}, {}
    for stage in SHARDED_STAGES:
        out["stages"][stage], missing[stage] = stage_status(data, stage, shards)
    index = data.index_marker
    out["stages"]["index"] = read_json(index) if index.exists() else {"built": False}
    out["resume"] = resume_plan(data, out, missing)
    loaded = out["stages"]["load"]["by_status"]
    feedback = Markers(data, "feedback").all_done().values()
    out["feedback"] = {
        "inputs": len(feedback),
        "prompts": sum(m.by_status.get("prompts", 0) for m in feedback),
        "images": sum(m.by_status.get("images", 0) for m in feedback),
    }
    # counted from the load and feedback markers (what the source and the feedback flow wrote):
    # reading the store would mean waiting for its turn
    out["store"] = {
        kind: loaded.get(kind, 0) + out["feedback"][kind] for kind in ("prompts", "images")
    }
    return out


def resume_plan(
    data: DataDir, report: dict[str, Any], missing: dict[str, list[str]]
) -> dict[str, Any]:
    """What ``promptlake resume`` would do: per stage, the failed shards it reruns and the
    missing ones it runs; with ``--retry-failed``, how many failed rows it fetches again."""
    stages = {}
    for stage, todo in missing.items():
        st = report["stages"][stage]
        redo = sorted(s for s in st["damaged"] if s not in st["failed"])
        stages[stage] = {
            "rerun_failed": sorted(st["failed"]),
            "redo_damaged": redo,
            "run_missing": [s for s in todo if s not in redo],
        }
    fetch = report["stages"]["fetch"]
    permanent = sum(fetch["by_status"].get(status, 0) for status in PERMANENT_FETCH)
    # cached images that did not decode when embedded: --retry-failed fetches them again
    broken = report["stages"]["embed"]["by_status"].get("image_error", 0)
    retry_rows = fetch["rows_failed"] - permanent + broken
    params = data.ingest_record
    return {
        "ingest_recorded": params.exists(),
        "stages": stages,
        "retry_failed_rows": retry_rows,
        "nothing_to_do": not any(any(v.values()) for v in stages.values()),
    }


def shard_ranges(names: list[str]) -> str:
    """``00000-00003, 00007`` for a sorted list of shard names."""
    if not names:
        return "none"
    nums, parts = sorted(int(n) for n in names), []
    start = prev = nums[0]
    for n in [*nums[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(f"{start:05d}" if start == prev else f"{start:05d}-{prev:05d}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)


def format_resume(plan: dict[str, Any], data_dir: str) -> list[str]:
    """The resume plan as lines for a terminal; the command names ``data_dir``, so it runs the
    same from any folder."""
    if plan["nothing_to_do"]:
        line = "resume:   nothing to rerun"
        if plan["retry_failed_rows"]:
            line += f"; --retry-failed would fetch {plan['retry_failed_rows']:,} failed rows again"
        return [line]
    lines = [f"resume would (`promptlake resume --data-dir {shlex.quote(data_dir)}`):"]
    for stage, todo in plan["stages"].items():
        if any(todo.values()):
            redo = todo.get("redo_damaged")
            lines.append(
                f"  {stage}: rerun failed {shard_ranges(todo['rerun_failed'])}; "
                + (f"redo damaged {shard_ranges(redo)}; " if redo else "")
                + f"run missing {shard_ranges(todo['run_missing'])}"
            )
    if plan["retry_failed_rows"]:
        lines.append(
            f"  with --retry-failed: fetch {plan['retry_failed_rows']:,} failed rows again"
        )
    if not plan["ingest_recorded"]:
        lines.append("  (no ingest recorded here: rerun `promptlake ingest SOURCE` instead)")
    return lines


def progress_line(report: dict[str, Any]) -> str:
    """What the stages have finished, on one line: shards done per stage, and the index."""
    if not report.get("planned"):
        return "nothing planned yet"
    n, stages = report["shards"], report["stages"]
    done = ", ".join(f"{k} {v['shards_done']}/{n}" for k, v in stages.items() if k != "index")
    index = "index built" if "tables" in stages.get("index", {}) else "index not built"
    return f"shards done: {done}; {index}"


def _since(t: float) -> str:
    minutes = (time.time() - t) / 60
    return f"since {time.strftime('%H:%M', time.localtime(t))}, {minutes:.0f} min"


def format_status(report: dict[str, Any]) -> str:
    """A human-readable rendering of :func:`status`."""
    lines = [f"data dir: {report['data_dir']}"]
    for run in report.get("running", []):
        lines.append(
            f"running:  {run.get('what', '?')} (pid {run.get('pid')} on {run.get('host')}, "
            f"{_since(run.get('since', 0))})"
        )
    if report.get("store_holder"):
        lines.append(f"store:    in use by {Holder(**report['store_holder']).describe()}")
    if "source" in report:
        src = report["source"]
        lines.append(
            f"source:   {src['source']} ({src['size']:,} bytes, sha256 {src['sha256'][:12]})"
        )
    if not report["planned"]:
        lines.append("not planned yet: run `promptlake ingest SOURCE`")
        return "\n".join(lines)
    rows = report["rows"]
    lines.append(
        f"rows:     {rows['total']:,} total, {rows['valid']:,} valid, "
        f"{rows['rejected']:,} rejected in {report['shards']} shards"
    )
    for reason, n in sorted(rows["rejects_by_reason"].items()):
        lines.append(f"            rejected {reason}: {n:,}")
    for g in report.get("generations", []):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(g["planned_at"]))
        lines.append(
            f"plan generation {g['number']}: {when}, +{g['added']:,} added, {g['changed']:,} "
            f"changed, -{g['removed']:,} removed, {g['unchanged']:,} unchanged → "
            f"{shard_ranges(g['shards'])}"
        )
    model = report["stages"].get("embed", {}).get("model")
    if model:
        lines.append(f"model:    {model.get('model')} ({model.get('namespace')})")
    for stage, st in report["stages"].items():
        if stage == "index":
            built = "built" if "tables" in st else "not built"
            fed = report.get("feedback", {}).get("prompts", 0)
            lines.append(
                f"index:    {built}; store holds {report['store']['prompts']:,} prompts"
                + (f" ({fed:,} from feedback)" if fed else "")
                + f", {report['store']['images']:,} images"
            )
            continue
        lines.append(
            f"{stage + ':':9} {st['shards_done']} done, {st['shards_failed']} failed, "
            f"{st['shards_pending']} pending shards; rows {st['rows_ok']:,} ok, "
            f"{st['rows_failed']:,} failed"
        )
        for status_name, n in sorted(st["by_status"].items()):
            if not n:  # a count the stage keeps but nothing had (image_error: 0)
                continue
            fix = FETCH_FIXES.get(status_name) if stage == "fetch" else None
            lines.append(f"            {status_name}: {n:,}" + (f" ({fix})" if fix else ""))
        lines += [f"  ! {note}" for note in st.get("notes", [])]
        for shard, reason in st["failed"].items():
            lines.append(f"  shard {shard} failed: {reason}")
        for shard, reason in st.get("damaged", {}).items():
            lines.append(f"  shard {shard} to redo: {reason}")
    fb = report.get("feedback", {})
    if fb.get("inputs"):
        lines.append(
            f"feedback: {fb['inputs']} inputs → {fb['prompts']:,} prompts, "
            f"{fb['images']:,} images written back"
        )
    return "\n".join(lines + format_resume(report["resume"], report["data_dir"]))
