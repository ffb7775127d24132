"""``make demo``: the whole machinery on a sample dataset made here, offline.

Generates a few hundred Stable-Diffusion-style prompts with drawn placeholder images (PNG files
carrying their prompt as A1111 metadata, served as file:// URLs), ingests them, then shows
searches, a reverse search, a refine and a feedback run — each through the same CLI a user types.
What is a stand-in is said up front: the images never, the CLIP offline.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shlex
import shutil
import sys
from pathlib import Path

REAL_MODEL = "openai/clip-vit-base-patch32"
IMAGE_SIZE = 256  # the drawn placeholders' side, which the CSV declares
STAND_INS = (
    "WHAT IS A STAND-IN: the prompts are made from word lists, and the images are drawn\n"
    "placeholders (a colour band and a shape keyed by the prompt's words), not pictures of\n"
    "what the prompts say. So text → images and the CLIP reverse search below show the\n"
    "wiring, not meaning, whatever the model. The exact prompt read back from an image's\n"
    "metadata, the searches over prompts and the refine are what you would get on real data."
)


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
                file.write_bytes(save_with_metadata(sample_image(prompt, IMAGE_SIZE), meta))
            uri, site = file.resolve().as_uri(), rng.choice(SITES)
            out.writerow([f"p{i:04d}", prompt, uri, IMAGE_SIZE, IMAGE_SIZE, site])
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


def command() -> str:
    """How to type ``promptlake`` here: bare when it is on PATH, else the virtualenv's script
    (``make install`` puts it in .venv/bin, which a new shell does not have on PATH)."""
    script = Path(sys.executable).parent / "promptlake"
    found = shutil.which("promptlake")
    if found and Path(found).resolve() == script.resolve():
        return "promptlake"
    if not script.exists():
        return f"{sys.executable} -m promptlake.cli"
    return os.path.relpath(script) if script.is_relative_to(Path.cwd()) else str(script)


def way_in(root: Path) -> str:
    """The demo's last lines: how to open the search page on what it built."""
    from promptlake.settings import get_settings
    from promptlake.ui.command import page_url

    data = shlex.quote(str(root / "data"))
    make = "make ui" if root == Path("demo").resolve() else f"make ui DATA_DIR={data}"
    s = get_settings()
    return (
        f"Open the search page on this data:  {make}   (or: {command()} ui --data-dir {data})\n"
        f"then browse {page_url(s.ui_host, s.ui_port)} — while it runs, `promptlake search` "
        "answers in about a second."
    )


def run(root: Path, n: int, model: str | None = None) -> int:
    """Build the demo data dir and show every kind of query on it."""
    from promptlake import terminal
    from promptlake.cli import main

    terminal.quiet_libraries()  # building the tiny CLIP says nothing a demo viewer needs
    root.mkdir(parents=True, exist_ok=True)
    data = str(root / "data")
    banner(f"1. a sample dataset: {n} SD-style prompts with images under {root / 'images'}")
    source = make_dataset(root, n)
    model, tiny = (model, False) if model else pick_model(root)
    print(STAND_INS)
    if tiny:
        banner(
            "OFFLINE: the CLIP model is not cached and the Hugging Face hub is unreachable, so\n"
            "this demo uses a tiny CLIP with random weights built here: every ranking below is\n"
            "arbitrary — the searches, the refine's neighbours and the feedback show the\n"
            f"machinery only. With the real model cached ({REAL_MODEL}) the prompt\n"
            "searches and the refine give meaningful results."
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
            "4. search: text → images (placeholder images: the wiring, not meaning)",
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
            "6. reverse search by CLIP (metadata ignored) → the nearest prompts\n"
            "   (a placeholder image: the wiring, not meaning)",
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
            "8. feedback: an idea → new prompts written back with lineage (a scheduled run\n"
            "   also takes recent weakly served searches; --no-searches keeps the demo the same\n"
            "   on every run)",
            [
                "feedback",
                "a paper boat on a rainy street",
                "--no-searches",
                "--data-dir",
                data,
                "-n",
                "2",
            ],
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
        # quoted as a shell reads it: a pasted step runs the same command
        banner(f"{title}\n$ {command()} {shlex.join(argv)}")
        code = main(argv)
        if code != 0:
            print(f"demo: step failed with exit code {code}", file=sys.stderr)
            return code
    print("\n(placeholder images" + (" and a tiny random CLIP" if tiny else "") + ": the demo")
    print(" shows the machinery; see the note at the top for what is real)\n")
    print(way_in(root))
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
