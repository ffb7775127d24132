"""CLIP through transformers, built once per worker process: batched text and image vectors.

Text is padded to the longest prompt of each batch (prompts are length-sorted first), not to 77:
CLIP's text tower is causal, so the vector is the same and most of the work is saved. Images
arrive as decoded uint8 crops; scaling and normalising happen on the model's device.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from promptlake.settings import HUB_NAME, Settings, local_model_path
from promptlake.storage.datadir import vectors
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.store.hits import NoEmbeddings
from promptlake.tasks.clip.devices import candidate_devices
from promptlake.tasks.clip.errors import ModelLoadError

HELP = (
    "promptlake could not load the CLIP model {name!r} ({error}). Offline, point "
    "PROMPTLAKE_CLIP_MODEL (or --model) at a local directory written by save_pretrained() — "
    "e.g. one copied from a machine that has the Hugging Face cache — or pre-fill HF_HOME and "
    "set HF_HUB_OFFLINE=1."
)
_CACHE: dict[tuple[str, str, str], ClipEncoder] = {}
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_LOCK = threading.Lock()


# an embedding namespace and its model record (model.json): what made a store's vectors
Namespace = tuple[str, dict]


@dataclass(frozen=True)
class ModelInfo:
    """Which model made a vector: vectors of different models never mix."""

    name: str
    revision: str
    dim: int
    max_tokens: int

    @property
    def namespace(self) -> str:
        base = Path(self.name).name if Path(self.name).exists() else self.name
        return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', base).strip('-')[:60]}@{self.revision[:12]}"


def pick_device(device: str = "auto") -> str:
    """One device for ``device``: ``auto`` is the first GPU (``cuda:0``), else mps, else cpu;
    ``cuda`` is ``cuda:0``. Embed shards pick theirs among all of them (``devices``)."""
    return candidate_devices(device)[0]


def pick_dtype(device: str, precision: str = "auto") -> torch.dtype:
    """``auto``: fp16 on CUDA, bf16 on a CPU with native bf16 (about 2x faster than fp32 there,
    cosine to the fp32 vector > 0.999), else fp32."""
    if precision != "auto":
        return _DTYPES[precision]
    if device.startswith("cuda"):
        return torch.float16
    if device == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return torch.float32


def describe_model(name: str) -> ModelInfo | None:
    """The model's identity from its config alone, without loading weights: a local directory
    (named by its absolute path), or a hub name already in the local cache. None when only a
    download could tell."""
    name = local_model_path(name)
    folder = Path(name)
    if folder.is_dir():
        config = folder / "config.json"
        if not config.exists():
            return None
        digest = hashlib.sha256(config.read_bytes())
        for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
            st = f.stat()  # size and mtime stand in for hashing hundreds of MB each time
            digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        revision = digest.hexdigest()
    else:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
        if not isinstance(found, str):
            return None
        config, revision = Path(found), Path(found).parent.name  # .../snapshots/<commit>/
    cfg = json.loads(config.read_text())
    max_tokens = cfg.get("text_config", {}).get("max_position_embeddings", 77)
    return ModelInfo(name, revision, int(cfg.get("projection_dim", 512)), int(max_tokens))


def current_namespace(data: DataDir, settings: Settings) -> Namespace:
    """The embedding namespace of the configured model (or the newest one) with its model
    record; :class:`NoEmbeddings` when the data dir has none (yet, or while being re-planned)."""
    known = describe_model(settings.clip_model)
    found = vectors.current_namespace(data, known.namespace if known else None)
    if found is None:
        raise NoEmbeddings(f"{data.root} has no embeddings yet: run the embed stage first")
    return found


class ClipEncoder:
    """A loaded CLIP model with its tokenizer and image settings."""

    def __init__(self, name: str, device: str = "auto", precision: str = "auto") -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, precision)
        errors = []
        hub = HUB_NAME.match(name) and not Path(name).exists()
        for local_only in (True, False) if hub else (True,):  # the local cache first
            try:
                model = CLIPModel.from_pretrained(
                    name, dtype=self.dtype, local_files_only=local_only
                )
                self.tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
                proc = AutoImageProcessor.from_pretrained(name, local_files_only=local_only)
                break
            except (OSError, ValueError) as exc:
                errors.append(str(exc))
        else:
            raise ModelLoadError(HELP.format(name=name, error=errors[-1][:300]))
        # transformers annotates .to() for a model argument; a device is what it takes
        self.model = model.to(self.device).eval()  # type: ignore[arg-type]
        self.crop = int(proc.crop_size["height"])
        self.resize_to = int(proc.size.get("shortest_edge", self.crop))
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(proc.image_mean, device=self.device).view(shape) * 255
        self.std = torch.tensor(proc.image_std, device=self.device).view(shape) * 255
        tc = self.model.config.text_config
        self.info = describe_model(name) or ModelInfo(
            name,
            getattr(self.model.config, "_commit_hash", None) or "unknown",
            self.model.config.projection_dim,
            tc.max_position_embeddings,
        )

    def tokenize(self, prompts: list[str]) -> tuple[list[list[int]], int]:
        """Token ids cut to the model's limit (keeping the end token), and how many were cut."""
        ids = self.tokenizer(prompts, add_special_tokens=True, truncation=False)["input_ids"]
        limit, cut = self.info.max_tokens, 0
        for i, seq in enumerate(ids):
            if len(seq) > limit:
                ids[i], cut = [*seq[: limit - 1], seq[-1]], cut + 1
        return ids, cut

    @torch.inference_mode()
    def encode_ids(self, batch: list[list[int]]) -> np.ndarray:
        """Unit-length text vectors of one batch, padded to its longest sequence."""
        width = max(len(s) for s in batch)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, seq in enumerate(batch):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        out = self.model.get_text_features(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
        )
        return _unit(out)

    def encode_text(self, prompts: list[str], batch_size: int = 256) -> tuple[np.ndarray, int]:
        """Vectors in input order, and the number of truncated prompts."""
        ids, cut = self.tokenize(prompts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.empty((len(ids), self.info.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self.encode_ids([ids[i] for i in idx])
        return out, cut

    def prepare_image(self, data: bytes) -> np.ndarray:
        """Decode, resize the shorter side and centre-crop: uint8 HxWx3 (runs in threads)."""
        opened = Image.open(io.BytesIO(data))
        opened.draft("RGB", (self.resize_to, self.resize_to))
        img = opened.convert("RGB")
        w, h = img.size
        scale = self.resize_to / min(w, h)
        size = (max(self.crop, round(w * scale)), max(self.crop, round(h * scale)))
        img = img.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        return np.asarray(img.crop((left, top, left + self.crop, top + self.crop)))

    @torch.inference_mode()
    def encode_pixels(self, crops: np.ndarray) -> np.ndarray:
        """Unit-length image vectors of a uint8 batch (B, H, W, 3)."""
        x = torch.from_numpy(crops).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        x = ((x.float() - self.mean) / self.std).to(self.dtype)
        return _unit(self.model.get_image_features(pixel_values=x))


def _unit(out: object) -> np.ndarray:
    """L2-normalised float32 vectors; transformers 5 returns an output object."""
    vec = out if isinstance(out, torch.Tensor) else out.pooler_output  # type: ignore[attr-defined]
    vec = vec.float()
    return torch.nn.functional.normalize(vec, dim=-1).cpu().numpy()


def get_encoder(name: str, device: str = "auto", precision: str = "auto") -> ClipEncoder:
    """The process's encoder for ``name`` on ``device`` (one copy per device): built on first
    use, then reused by every shard."""
    key = (name, pick_device(device), precision)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = ClipEncoder(name, key[1], precision)
        return _CACHE[key]


def loaded_devices(name: str, precision: str = "auto") -> set[str]:
    """The devices on which this process already holds ``name``'s encoder."""
    with _LOCK:
        return {d for n, d, p in _CACHE if (n, p) == (name, precision)}
