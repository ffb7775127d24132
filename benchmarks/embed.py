"""Embed benchmark: promptlake's encoder against the naive CLIPProcessor approach, same run.

The model has the real ViT-B/32 size (transformers' default CLIPConfig) with random weights —
the same compute as openai/clip-vit-base-patch32, built locally since the hub is unreachable.
Baseline (the seed's approach): CLIPProcessor + model, batches of 32, text padded to 77, images
decoded and preprocessed one by one by the processor. promptlake: length-sorted text padded to
the longest in each batch; images decoded and cropped in threads ahead of the model, normalised
on the device. Prints prompts/s and images/s for both and the ratios.

    make bench-embed
    python benchmarks/embed.py --prompts 1024 --images 256 [--model DIR] [--device cuda]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from promptlake.sample_data import sample_prompts  # noqa: E402
from promptlake.settings import Settings  # noqa: E402
from promptlake.storage.datadir.image_cache import ImageCache  # noqa: E402
from promptlake.storage.datadir.records import FetchRecord  # noqa: E402
from promptlake.tasks.clip.encoder import get_encoder  # noqa: E402
from promptlake.tasks.embed import embed_images  # noqa: E402
from promptlake.tasks.images.imaging import process_image  # noqa: E402
from tests.helpers.fault_server import make_image  # noqa: E402


def fill_cache(path: Path, n: int) -> tuple[ImageCache, list[str]]:
    """``n`` images as the fetch stage stores them (shorter side 256, JPEG)."""
    cache = ImageCache.open(path)
    ids = [f"i{i:06d}" for i in range(n)]
    for rid in ids:
        img = process_image(make_image(rid, size=(512, 640)), size=256)
        cache.put(FetchRecord(rid, "", "ok"), img.data)
    return cache, ids


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def baseline_text(model, proc, prompts, device):
    with torch.no_grad():
        for i in range(0, len(prompts), 32):
            batch = proc(
                text=prompts[i : i + 32],
                padding="max_length",
                max_length=77,
                truncation=True,
                return_tensors="pt",
            ).to(device)
            model.get_text_features(**batch)


def baseline_images(model, proc, cache, ids, device):
    from PIL import Image

    with torch.no_grad():
        for i in range(0, len(ids), 32):
            blobs = cache.images(ids[i : i + 32])
            imgs = [Image.open(io.BytesIO(blobs[k])).convert("RGB") for k in ids[i : i + 32]]
            pix = proc(images=imgs, return_tensors="pt")["pixel_values"].to(device, model.dtype)
            model.get_image_features(pixel_values=pix)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=1024)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--model", help="a saved CLIP dir (default: build ViT-B/32 size, random)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="promptlake's: auto, fp32, fp16, bf16")
    ap.add_argument("--text-batch", type=int, default=256)
    ap.add_argument("--image-batch", type=int, default=64)
    ap.add_argument("--decode-workers", type=int, default=4)
    args = ap.parse_args()
    from transformers import CLIPModel, CLIPProcessor

    from promptlake.tiny_clip import build_clip

    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        model_dir = args.model or str(
            build_clip(Path(tmp) / "clip-b32", tiny=False, vocab_size=8000)
        )
        enc = get_encoder(model_dir, args.device, args.precision)
        device = enc.device
        exact = get_encoder(model_dir, args.device, "fp32") if device == "cpu" else None
        print(
            f"model {model_dir} dim {enc.info.dim} on {device} ({enc.dtype}), "
            f"torch threads {torch.get_num_threads()}"
        )
        prompts = sample_prompts(args.prompts, seed=7)
        cache, ids = fill_cache(Path(tmp) / "cache.lmdb", args.images)
        base_dtype = torch.float16 if device.startswith("cuda") else torch.float32
        base_model = CLIPModel.from_pretrained(model_dir, dtype=base_dtype).to(device).eval()
        proc = CLIPProcessor.from_pretrained(model_dir)
        s = Settings(image_batch=args.image_batch, decode_workers=args.decode_workers)
        # warm up both paths once
        baseline_text(base_model, proc, prompts[:32], device)
        enc.encode_text(prompts[:32])
        tb, _ = timed(baseline_text, base_model, proc, prompts, device)
        tp, (_, cut) = timed(enc.encode_text, prompts, args.text_batch)
        ib, _ = timed(baseline_images, base_model, proc, cache, ids, device)
        pairs = [(rid, "") for rid in ids]  # fill_cache's records have no URL
        ip, _ = timed(lambda: embed_images(enc, cache, pairs, s, progress=False, shard="b"))
        if exact is not None:  # the same pipeline at the baseline's precision, for honesty
            tx, _ = timed(exact.encode_text, prompts, args.text_batch)
            ix, _ = timed(lambda: embed_images(exact, cache, pairs, s, progress=False, shard="x"))
        n_p, n_i = len(prompts), len(ids)
        lengths = [len(x) for x in enc.tokenize(prompts)[0]]
        print(
            f"prompts: {n_p}, tokens mean {np.mean(lengths):.1f}, max {max(lengths)}, "
            f"truncated {cut}"
        )
        print(
            f"baseline   text {n_p / tb:9.1f} prompts/s   images {n_i / ib:8.1f} images/s  "
            f"({base_dtype})"
        )
        print(
            f"promptlake text {n_p / tp:9.1f} prompts/s   images {n_i / ip:8.1f} images/s  "
            f"({enc.dtype})"
        )
        print(f"ratio promptlake/baseline: prompts {tb / tp:.2f}x, images {ib / ip:.2f}x")
        if exact is not None:
            print(
                f"promptlake at fp32: prompts {n_p / tx:.1f}/s ({tb / tx:.2f}x), images "
                f"{n_i / ix:.1f}/s ({ib / ix:.2f}x)"
            )


if __name__ == "__main__":
    main()
