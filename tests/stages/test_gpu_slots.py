"""GPU slots: N embed shards on N GPUs at once, one per physical device, through real OS locks
taken by real processes. No GPU here: stand-in device lists and CUDA_VISIBLE_DEVICES strings."""

from __future__ import annotations

import fcntl
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from promptlake.tasks.clip import encoder
from promptlake.tasks.clip.devices import candidate_devices, device_slot, lock_file, physical_device
from tests.helpers import ROOT

WAIT = 180  # seconds for a line from a holder: generous, the machine is shared

HOLDER = """
import logging, sys
from promptlake.tasks.clip.devices import device_slot, physical_device
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
with device_slot(sys.argv[1].split(","), lock_dir=sys.argv[2], poll=0.05) as device:
    print("held", device, physical_device(device), flush=True)
    sys.stdin.readline()  # an embed shard in progress, until the test ends it
print("released", flush=True)
"""


class Holder:
    """A process that takes a slot among ``candidates`` and holds it until told or killed."""

    def __init__(self, candidates: list[str], lock_dir: Path, visible: str | None) -> None:
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        if visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, ",".join(candidates), str(lock_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT)},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def next_line(self) -> str:
        try:
            return self.lines.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail(f"no line from the holder in {WAIT} s (it is blocked)")

    def held(self) -> tuple[str, str]:
        """(device, physical key) once it holds a slot."""
        word, device, key = self.next_line().split()
        assert word == "held"
        return device, key

    def release(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.next_line() == "released"
        assert self.proc.wait(timeout=WAIT) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=WAIT)


@pytest.fixture
def holders():
    started: list[Holder] = []
    yield started
    for h in started:
        if h.proc.poll() is None:
            h.kill()


def _is_locked(path: Path) -> bool:
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def test_n_processes_hold_n_gpus_at_once_and_one_more_waits(tmp_path, holders):
    gpus = ["cuda:0", "cuda:1", "cuda:2"]
    for _ in gpus:
        holders.append(Holder(gpus, tmp_path, visible="5,6,7"))
    pairs = [h.held() for h in holders]  # all three hold at the same time
    held = dict(pairs)
    assert held == {"cuda:0": "5", "cuda:1": "6", "cuda:2": "7"}  # never one device twice
    assert all(_is_locked(lock_file(key, tmp_path)) for key in held.values())
    late = Holder(gpus, tmp_path, visible="5,6,7")
    holders.append(late)
    assert late.next_line() == "all 3 device(s) busy (cuda:0, cuda:1, cuda:2): waiting for one"
    by_device = {device: h for h, (device, _key) in zip(holders, pairs, strict=False)}
    by_device["cuda:1"].kill()  # SIGKILL: the kernel frees its device
    assert late.held() == ("cuda:1", "6")
    for device in ("cuda:0", "cuda:2"):
        by_device[device].release()
    late.release()
    assert not any(_is_locked(lock_file(key, tmp_path)) for key in held.values())


def test_one_dask_worker_per_gpu_runs_at_once_keyed_by_physical_gpu(tmp_path, holders):
    """The README's recipe: each worker sees its GPU as cuda:0; the physical keys differ."""
    for k in range(3):
        holders.append(Holder(["cuda:0"], tmp_path, visible=str(k)))
    assert sorted(h.held() for h in holders) == [("cuda:0", "0"), ("cuda:0", "1"), ("cuda:0", "2")]
    # a process that names GPUs 2 and 1 as its cuda:0 and cuda:1 finds both taken
    other = Holder(["cuda:0", "cuda:1"], tmp_path, visible="2,1")
    holders.append(other)
    assert other.next_line().startswith("all 2 device(s) busy")
    holders[1].release()  # the worker on physical GPU 1
    assert other.held() == ("cuda:1", "1")
    other.release()


def test_cpu_takes_no_lock(tmp_path):
    with device_slot(["cpu"], lock_dir=tmp_path) as a, device_slot(["cpu"], lock_dir=tmp_path) as b:
        assert a == b == "cpu"
    assert list(tmp_path.iterdir()) == []


def test_candidates_and_physical_keys(monkeypatch):
    assert candidate_devices("auto", cuda_count=3) == ["cuda:0", "cuda:1", "cuda:2"]
    assert candidate_devices("cuda", cuda_count=2) == ["cuda:0", "cuda:1"]
    assert candidate_devices("cuda:1", cuda_count=2) == ["cuda:1"]
    assert candidate_devices("auto", cuda_count=0) == ["cpu"]
    assert candidate_devices("cpu") == ["cpu"]
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        candidate_devices("cuda", cuda_count=0)
    assert physical_device("cuda:0", "2,3") == "2"
    assert physical_device("cuda:1", " 2, 3") == "3"
    assert physical_device("cuda", "3") == "3"
    uuids = "GPU-8f3c2b1a-0000-1111-2222-333344445555,MIG-GPU-aaaa/1/0"
    assert physical_device("cuda:1", uuids) == "MIG-GPU-aaaa/1/0"
    assert lock_file("MIG-GPU-aaaa/1/0").name == "promptlake-gpu-MIG-GPU-aaaa_1_0.lock"
    assert physical_device("cpu", "0") is None and physical_device("mps") == "mps"
    with pytest.raises(ValueError, match="cuda:2 is not visible"):
        physical_device("cuda:2", "0,1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert physical_device("cuda:4") == "4"


def test_embed_slot_prefers_a_gpu_that_already_holds_the_model(
    tmp_path, embed_settings, monkeypatch
):
    """gpu_slot wires settings to the slot: the lock dir, and devices with a loaded model
    first (a worker keeps one model copy where it can). torch sees two stand-in GPUs."""
    import torch

    from promptlake.tasks.embed import gpu_slot

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("PROMPTLAKE_PREFECT_SERVER_TEMPORARY", "1")  # no Prefect limit here
    s = embed_settings.model_copy(update={"device": "auto", "gpu_lock_dir": tmp_path})
    model = (s.clip_model, "cuda:1", s.precision)
    monkeypatch.setitem(encoder._CACHE, model, object())
    with gpu_slot(s) as first:
        assert first == "cuda:1" and _is_locked(lock_file("1", tmp_path))
        with gpu_slot(s) as second:
            assert second == "cuda:0" and _is_locked(lock_file("0", tmp_path))
    assert not _is_locked(lock_file("1", tmp_path))
