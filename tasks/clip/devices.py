"""Devices for embedding: which ones this process may use, and an OS lock per physical GPU.

An embed shard takes the first free device of its candidates (a non-blocking ``flock`` on one
file per physical device), and polls while all are busy. The kernel drops a dead holder's lock,
so a SIGKILLed run never leaves a GPU locked. The lock is keyed by the physical device, not the
name this process sees: with ``CUDA_VISIBLE_DEVICES=2,3``, ``cuda:0`` is GPU ``2``, so a Dask
worker per GPU (each seeing its GPU as ``cuda:0``) never waits for another. The CPU takes no
lock: CPU shards at once only share cores, and the flow's ``gpu_slots`` already caps them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

POLL_SECONDS = 0.5
log = logging.getLogger(__name__)


def candidate_devices(device: str = "auto", *, cuda_count: int | None = None) -> list[str]:
    """The devices this process may embed on. ``auto``: every visible GPU (``cuda:0`` …
    ``cuda:N-1``), else ``mps``, else ``cpu``; ``cuda``: every visible GPU; ``cuda:K``, ``mps``
    and ``cpu``: just that one. ``cuda_count`` stands in for torch's count of visible GPUs."""
    if device not in ("auto", "cuda"):
        return [device]
    if cuda_count is None:
        import torch

        cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda_count:
        return [f"cuda:{i}" for i in range(cuda_count)]
    if device == "cuda":
        raise ValueError(
            "device 'cuda' was asked for, but no CUDA GPU is visible to this process "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}): use auto or cpu"
        )
    import torch

    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return ["mps"]
    return ["cpu"]


def physical_device(device: str, visible: str | None = None) -> str | None:
    """The machine-wide name of ``device``'s hardware, which keys its lock; None for the CPU.
    ``cuda:K`` is entry K of CUDA_VISIBLE_DEVICES (``visible`` stands in for it; an index or a
    ``GPU-``/``MIG-`` UUID, kept as written), or K when it is unset."""
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return None
    if kind != "cuda":
        return kind
    k = int(index or 0)
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return str(k)
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if k >= len(entries):
        raise ValueError(
            f"{device} is not visible: CUDA_VISIBLE_DEVICES={visible!r} lists {len(entries)} "
            f"GPU(s); name one of cuda:0…cuda:{max(len(entries) - 1, 0)} or use auto"
        )
    return str(int(entries[k])) if entries[k].isdigit() else entries[k]


def lock_file(key: str, lock_dir: Path | None = None) -> Path:
    """The lock file of physical device ``key`` (default folder: the system temp dir)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", key)
    return Path(lock_dir or tempfile.gettempdir()) / f"promptlake-gpu-{name}.lock"


@contextmanager
def device_slot(
    candidates: Sequence[str],
    *,
    lock_dir: Path | None = None,
    visible: str | None = None,
    poll: float = POLL_SECONDS,
) -> Iterator[str]:
    """Hold the first free device of ``candidates`` while the block runs, and yield its name.
    A device without a physical key (the CPU) is free at once and takes no lock."""
    keyed = [(d, physical_device(d, visible)) for d in candidates]
    if not keyed:
        raise ValueError("no device to embed on: the candidate list is empty")
    free = [d for d, key in keyed if key is None]  # the CPU and devices without a lock
    if free:
        yield free[0]
        return
    with ExitStack() as files:
        handles: list[tuple[str, BinaryIO]] = []
        for device, key in keyed:
            assert key is not None  # none was free
            path = lock_file(key, lock_dir)
            path.parent.mkdir(parents=True, exist_ok=True)
            handles.append((device, files.enter_context(open(path, "a+b"))))
        device, fh = _acquire(handles, poll)
        try:
            yield device
        finally:  # unlocked explicitly: a forked child's copy of the file would keep it locked
            fcntl.flock(fh, fcntl.LOCK_UN)


def _acquire(handles: list[tuple[str, BinaryIO]], poll: float) -> tuple[str, BinaryIO]:
    """Lock the first free device's file (non-blocking tries), polling while none is free."""
    waiting = False
    while True:
        for device, fh in handles:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return device, fh
            except BlockingIOError:
                continue
        if not waiting:
            names = ", ".join(d for d, _ in handles)
            log.info("all %d device(s) busy (%s): waiting for one", len(handles), names)
            waiting = True
        time.sleep(poll)
