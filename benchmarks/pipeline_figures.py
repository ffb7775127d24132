"""What benchmarks/pipeline.py measures about one ingest run: memory per process of its tree,
stage windows and work from the markers and Prefect's task runs, orchestration overhead, disk.

Orchestration overhead is the part of the wall time in which the run did not do stage work:
- idle: no stage worked at all (start-up, the temporary Prefect server, worker start, gaps);
- lost slots: a shard was ready for a stage (planned; or finished by the stage before) and the
  stage had a free slot, yet the shard had not started its work (task-run creation, state round
  trips, scheduling, pickling, worker and model start), in fractions of the stage's slots.
Each instant counts once, as the larger of the two. "Work" is each shard's marker span
(``finished_at - seconds`` to ``finished_at``, measured inside the stage) and the download,
plan, reconcile and index task runs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil

MIB = 2**20
SHARDED = ("fetch", "embed", "load")
SINGLE = ("download", "plan", "load-reconcile", "index")


def role(proc: psutil.Process, root: int) -> str:
    """flow (the CLI process, where the flow runs), worker, prefect_server or other."""
    if proc.pid == root:
        return "flow"
    cmd = " ".join(proc.cmdline())
    if "prefect.server" in cmd:
        return "prefect_server"
    if "spawn_main" in cmd or "forkserver" in cmd:
        return "worker"
    return "other"


@dataclass
class Sample:
    at: float
    procs: dict[int, tuple[str, int, int]]  # pid -> (role, uss, pss)


@dataclass
class TreeSampler:
    """USS and PSS of every process of a tree, every ``every`` seconds, in a thread; plus the
    CPU seconds each process had used when last seen."""

    root: int
    every: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    cpu: dict[int, tuple[str, float]] = field(default_factory=dict)
    _roles: dict[int, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            top = psutil.Process(self.root)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                tree = [top, *top.children(recursive=True)]
            except psutil.Error:
                return
            sample = Sample(time.time(), {})
            for proc in tree:
                try:
                    name = self._roles.setdefault(proc.pid, role(proc, self.root))
                    mem, cpu = proc.memory_full_info(), proc.cpu_times()
                except psutil.Error:
                    continue
                sample.procs[proc.pid] = (name, mem.uss, mem.pss)
                self.cpu[proc.pid] = (name, cpu.user + cpu.system)
            self.samples.append(sample)
            self._stop.wait(self.every)

    def memory(self, start: float = 0.0, end: float = float("inf")) -> dict[str, dict]:
        """Per role, within [start, end]: the largest USS and PSS of one process (MiB), the
        largest PSS of all its processes together, and how many processes it had."""
        out: dict[str, dict] = {}
        for s in self.samples:
            if not start <= s.at <= end:
                continue
            total: dict[str, int] = defaultdict(int)
            for pid, (name, uss, pss) in s.procs.items():
                r = out.setdefault(name, {"uss_mib": 0.0, "pss_mib": 0.0, "pss_sum_mib": 0.0})
                r["uss_mib"] = max(r["uss_mib"], round(uss / MIB, 1))
                r["pss_mib"] = max(r["pss_mib"], round(pss / MIB, 1))
                r.setdefault("pids", set()).add(pid)
                total[name] += pss
            for name, pss in total.items():
                out[name]["pss_sum_mib"] = max(out[name]["pss_sum_mib"], round(pss / MIB, 1))
        for r in out.values():
            r["processes"] = len(r.pop("pids"))
        return out

    def timeline(self, start: float, end: float, points: int = 10) -> dict[str, list[float]]:
        """Per role, the largest USS of one process (MiB) at ``points`` even steps of
        [start, end]: how memory moves as the shards go by."""
        out: dict[str, list[float]] = defaultdict(list)
        for k in range(1, points + 1):
            at = start + (end - start) * k / points
            s = min(self.samples, key=lambda x: abs(x.at - at))
            per: dict[str, int] = defaultdict(int)
            for name, uss, _ in s.procs.values():
                per[name] = max(per[name], uss)
            for name in ("flow", "worker", "prefect_server"):
                out[name].append(round(per.get(name, 0) / MIB, 1))
        return dict(out)

    def cpu_seconds(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for name, seconds in self.cpu.values():
            out[name] += seconds
        return {k: round(v, 1) for k, v in out.items()}


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def task_runs(prefect_db: Path) -> dict[str, list[tuple[float, float]]]:
    """Completed task runs per task name, as (start, end) epoch seconds, read from the Prefect
    server's own database once the run is over."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with sqlite3.connect(f"file:{prefect_db}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT name, start_time, end_time FROM task_run WHERE end_time NOT NULL")
        for name, start, end in rows:
            out[name.rsplit("-", 1)[0]].append((_epoch(start), _epoch(end)))
    return dict(out)


def prefect_rows(prefect_db: Path) -> dict[str, int]:
    """Rows the run left in the Prefect database, per table that grows with shards."""
    with sqlite3.connect(f"file:{prefect_db}?mode=ro", uri=True) as db:
        tables = ("task_run", "task_run_state", "log", "artifact", "events")
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def marker_spans(data_dir: Path) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Per sharded stage, shard -> (start, end, rows) of its stage work, from the markers."""
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for stage in SHARDED:
        found: dict[str, tuple[float, float, int]] = {}
        for path in sorted((data_dir / "state" / stage).rglob("*.json")):
            if path.name.endswith(".error.json") or path.parent.name == "index":
                continue
            m = json.loads(path.read_text())
            found[path.stem] = (m["finished_at"] - m["seconds"], m["finished_at"], m["rows"])
        out[stage] = found
    return out


def stage_figures(
    spans: dict[str, dict[str, tuple[float, float, int]]],
    runs: dict[str, list[tuple[float, float]]],
    limits: dict[str, int],
) -> dict[str, dict]:
    """Per stage: shards, rows, window (first task start to last end), rows/s over it, work
    (sum of marker seconds), task-run seconds, and how busy its slots were with work."""
    out = {}
    for stage in SHARDED:
        work = spans[stage].values()
        tasks = runs.get(stage, [])
        if not tasks:
            continue
        window = max(e for _, e in tasks) - min(s for s, _ in tasks)
        rows = sum(r for _, _, r in work)
        work_s = sum(e - s for s, e, _ in work)
        out[stage] = {
            "shards": len(work),
            "rows": rows,
            "window_s": round(window, 1),
            "rows_per_s": round(rows / window, 1) if window else None,
            "work_s": round(work_s, 1),
            "task_run_s": round(sum(e - s for s, e in tasks), 1),
            "slots": limits[stage],
            "slot_use": round(work_s / (limits[stage] * window), 3) if window else None,
        }
    for stage in SINGLE:
        if stage in runs:
            out[stage] = {"window_s": round(sum(e - s for s, e in runs[stage]), 1)}
    return out


def overhead(
    spans: dict[str, dict[str, tuple[float, float, int]]],
    runs: dict[str, list[tuple[float, float]]],
    limits: dict[str, int],
    start: float,
    end: float,
    step: float = 0.05,
) -> dict[str, float]:
    """Idle time, lost slot time, and the overhead (each instant once) over [start, end]."""
    grid = np.arange(start, end, step)
    working = np.zeros(len(grid), bool)
    for stage in SINGLE:
        for s, e in runs.get(stage, []):
            working |= (grid >= s) & (grid < e)
    plan_end = max((e for _, e in runs.get("plan", [])), default=start)
    lost = np.zeros(len(grid))
    before = None
    for stage in SHARDED:
        shards = spans[stage]
        starts = np.sort([s for s, _, _ in shards.values()])
        ends = np.sort([e for _, e, _ in shards.values()])
        ready = [before[k][1] if before else plan_end for k in shards]
        running = np.searchsorted(starts, grid, "right") - np.searchsorted(ends, grid, "right")
        queued = np.searchsorted(np.sort(ready), grid, "right") - np.searchsorted(
            starts, grid, "right"
        )
        working |= running > 0
        free = np.clip(limits[stage] - running, 0, None)
        lost = np.maximum(lost, np.minimum(np.clip(queued, 0, None), free) / limits[stage])
        before = shards
    idle = ~working
    total = np.where(idle, 1.0, lost)
    busy = np.flatnonzero(working)
    first, last = (int(busy[0]), int(busy[-1]) + 1) if len(busy) else (len(grid), len(grid))
    within = float(total[first:last].sum()) * step
    return {
        "wall_s": round(end - start, 1),
        "idle_s": round(float(idle.sum()) * step, 1),
        "lost_slot_s": round(float(lost[~idle].sum()) * step, 1),
        "overhead_s": round(float(total.sum()) * step, 1),
        "overhead_pct": round(100 * float(total.sum()) * step / (end - start), 1),
        # start-up (imports, the temporary server) and the end: fixed costs, not per shard
        "before_work_s": round(first * step, 1),
        "after_work_s": round((len(grid) - last) * step, 1),
        "within_pct": round(100 * within / max(step, (last - first) * step), 1),
        "idle_stretches": _stretches(idle[first:last], step, first * step),
    }


def _stretches(idle: np.ndarray, step: float, offset: float, least: float = 2.0) -> list:
    """(seconds from the start, length) of each stretch of ``least`` seconds or more in which no
    stage worked, between the first work and the last."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], idle.astype(np.int8), [0]])))
    return [
        (round(offset + int(a) * step, 1), round(int(b - a) * step, 1))
        for a, b in zip(edges[::2], edges[1::2], strict=True)
        if (b - a) * step >= least
    ]


def disk(root: Path) -> dict[str, float]:
    """MiB on disk per top-level entry of ``root`` (allocated blocks: sparse maps count as
    what they hold)."""
    out = {}
    for entry in sorted(root.iterdir()):
        files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
        out[entry.name] = round(sum(p.stat().st_blocks * 512 for p in files) / MIB, 1)
    return out
