"""``make demo``: the whole machinery on a sample dataset made here, offline.

Generates a few hundred Stable-Diffusion-style prompts with drawn images (PNG files carrying
their prompt as A1111 metadata, served as file:// URLs), ingests them, then shows searches, a
reverse search, a refine and a feedback run — each through the same CLI a user types.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

REAL_MODEL = "openai/clip-vit-base-patch32"


def make_dataset(root: Path, n: int, seed: int = 7) -> Path:
    """``n`` sample rows with images under ``root/images``; returns the CSV."""
    from promptlake.sample_data import SITES, sample_image, sample_prompts
    from promptlake.tasks.metadata import ImageMeta, save_with_metadata

    images, rng = root / "images", random.Random(seed)
    images.mkdir(parents=True, exist_ok=True)
    path = root / "prompts.csv"
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "prompt", "url", "width", "height", "source_site"])
        for i, prompt in enumerate(sample_prompts(n, seed=seed)):
            file = images / f"p{i:04d}.png"
            if not file.exists():
                meta = ImageMeta(prompt, "blurry, lowres", {"Steps": "20", "Seed": str(i)})
                file.write_bytes(save_with_metadata(sample_image(prompt), meta))
            out.writerow(
                [f"p{i:04d}", prompt, file.resolve().as_uri(), 512, 512, rng.choice(SITES)]
            )
    return path


def pick_model(root: Path) -> tuple[str, bool]:
    """The real CLIP when it is cached or the hub answers; else a tiny local one (True)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(REAL_MODEL, "config.json"), str):
            return REAL_MODEL, False
        import requests

        requests.head("https://huggingface.co", timeout=3).raise_for_status()
        return REAL_MODEL, False
    except Exception:  # offline: no cache and no hub
        from promptlake.tiny_clip import build_clip

        path = root / "tiny-clip"
        if not (path / "config.json").exists():
            build_clip(path, image_size=64)
        return str(path), True


def banner(text: str) -> None:
    print(f"\n{'=' * 78}\n{text}\n{'=' * 78}", flush=True)


def run(root: Path, n: int, model: str | None = None) -> int:
    """Build the demo data dir and show every kind of query on it."""
    from promptlake.cli import main

    root.mkdir(parents=True, exist_ok=True)
    data = str(root / "data")
    banner(f"1. a sample dataset: {n} SD-style prompts with images under {root / 'images'}")
    source = make_dataset(root, n)
    model, tiny = (model, False) if model else pick_model(root)
    if tiny:
        banner(
            "OFFLINE: the CLIP model is not cached and the Hugging Face hub is unreachable, so\n"
            "this demo uses a tiny CLIP with random weights built here. The results below show\n"
            "the machinery only — their ranking means nothing. With the real model cached\n"
            f"({REAL_MODEL}) the same commands give meaningful results."
        )
    steps = [
        (
            "2. ingest: download → plan → fetch → embed → load → index",
            [
                "ingest",
                str(source),
                "--data-dir",
                data,
                "--allow-file-urls",
                "--model",
                model,
                "--shard-size",
                "100",
            ],
        ),
        (
            "3. search: text → prompts",
            ["search", "a cat sleeping on a sofa", "-k", "5", "--data-dir", data],
        ),
        (
            "4. search: text → images",
            [
                "search",
                "a lighthouse on a cliff at sunset",
                "--target",
                "images",
                "-k",
                "3",
                "--data-dir",
                data,
            ],
        ),
        (
            "5. reverse search: an image carrying A1111 metadata → its exact prompt",
            ["search", "--image", str(root / "images" / "p0003.png"), "--data-dir", data],
        ),
        (
            "6. reverse search by CLIP (metadata ignored) → the prompts that likely made it",
            [
                "search",
                "--image",
                str(root / "images" / "p0003.png"),
                "--no-metadata",
                "-k",
                "3",
                "--data-dir",
                data,
            ],
        ),
        (
            "7. refine: a rough idea → better prompts drawn from named neighbours",
            ["refine", "a cat sleeping on the sofa", "-k", "8", "--data-dir", data],
        ),
        (
            "8. feedback: weak searches and an idea → new prompts written back with lineage",
            ["feedback", "a paper boat on a rainy street", "--data-dir", data, "-n", "2"],
        ),
        (
            "9. the new rows are searchable, with their lineage",
            [
                "search",
                "a paper boat on a rainy street",
                "--origin",
                "feedback",
                "-k",
                "2",
                "--data-dir",
                data,
            ],
        ),
        (
            "10. status: what the data dir holds, and what resume would do",
            ["status", "--data-dir", data],
        ),
    ]
    for title, argv in steps:
        banner(f"{title}\n$ promptlake {' '.join(argv)}")
        code = main(argv)
        if code != 0:
            print(f"demo: step failed with exit code {code}", file=sys.stderr)
            return code
    if tiny:
        print("\n(offline demo: a tiny random CLIP — the machinery, not the quality)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="demo", help="where the demo writes (default ./demo)")
    parser.add_argument("-n", type=int, default=300, help="sample rows (default 300)")
    parser.add_argument("--model", help="CLIP to use (default: the real one if reachable)")
    args = parser.parse_args(argv)
    return run(Path(args.dir).resolve(), args.n, args.model)


if __name__ == "__main__":
    sys.exit(main())
