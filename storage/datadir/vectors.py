"""Per-shard vector files: ids plus L2-normalised float32 vectors, one model per namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from promptlake.storage.datadir.layout import DataDir, atomic_path, read_json, write_json


class ModelMismatch(RuntimeError):
    """Vectors of one model were about to be mixed with another's."""


def vector_schema(dim: int) -> pa.Schema:
    return pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), dim))])


def list_column(vectors: np.ndarray) -> pa.Array:
    """(n, dim) float32 as an Arrow list column (what the store's Array(Float32) takes)."""
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    offsets = pa.array(np.arange(len(vectors) + 1, dtype=np.int32) * dim)
    flat = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1)
    return pa.ListArray.from_arrays(offsets, pa.array(flat, pa.float32()))


def write_vectors(path: Path, ids: list[str], vectors: np.ndarray) -> None:
    """Write ``ids`` and their vectors atomically."""
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    table = pa.table(
        [pa.array(ids, pa.string()), pa.FixedSizeListArray.from_arrays(flat, dim)],
        schema=vector_schema(dim),
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_vectors(path: Path) -> tuple[list[str], np.ndarray]:
    """Ids and a (n, dim) float32 array."""
    table = pq.read_table(path)
    dim = table.schema.field("vector").type.list_size
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return table.column("id").to_pylist(), flat.reshape(-1, dim).astype(np.float32, copy=False)


def claim_namespace(data: DataDir, namespace: str, model: dict[str, Any]) -> None:
    """Record which model owns ``namespace``; refuse if another model already wrote there. A
    record of the same model under another name (a local folder recorded as given, before
    folders were recorded absolute) is brought up to date."""
    path = data.embed_dir(namespace) / "model.json"
    if path.exists():
        have = read_json(path)
        if _identity(have) != _identity(model):
            raise ModelMismatch(
                f"{data.embed_dir(namespace)} holds vectors of {have.get('model')} "
                f"(revision {str(have.get('revision'))[:12]}, dim {have.get('dim')}), not of "
                f"{model.get('model')} (revision {str(model.get('revision'))[:12]}, dim "
                f"{model.get('dim')}); vectors of different models are never mixed"
            )
        if have.get("model") == model.get("model"):
            return
    write_json(path, model)


def _identity(model: dict[str, Any]) -> tuple:
    """What tells models apart: the folder's or hub name's last part, revision, dimension."""
    return (Path(str(model.get("model"))).name, model.get("revision"), model.get("dim"))


def current_namespace(
    data: DataDir, prefer: str | None = None
) -> tuple[str, dict[str, Any]] | None:
    """The embedding namespace that loads, searches and status use: ``prefer`` (the configured
    model's) when it exists, else the newest one; None when nothing was embedded yet."""
    found = namespaces(data)
    if prefer in found:
        return prefer, found[prefer]
    if not found:
        return None
    newest = list(found)[-1]
    return newest, found[newest]


def namespaces(data: DataDir) -> dict[str, dict[str, Any]]:
    """Every embedding namespace of ``data`` with its model record, oldest first (one removed
    while this looks, by a forced re-plan, is left out)."""
    found = []
    for path in (data.root / "embed").glob("*/model.json"):
        try:
            found.append((path.stat().st_mtime, path.parent.name, read_json(path)))
        except FileNotFoundError:
            continue
    return {name: record for _, name, record in sorted(found, key=lambda f: f[0])}
