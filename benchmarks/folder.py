"""Folder scan: how fast a folder of generated images becomes a dataset, the first time and again.

Draws N small images (default 10,000) carrying A1111 metadata, then times the first scan (every
file read: content hash, size, metadata), a rescan of the unchanged folder (a ``stat`` per file,
nothing read) and a rescan after 1% of the files were added. The baseline, in the same run: just
reading every file's bytes once (what any scan that looks at contents pays at least).

    make bench-folder
    python benchmarks/folder.py --n 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promptlake.sample_data import sample_image, sample_prompts
from promptlake.tasks.metadata import ImageMeta, save_with_metadata
from promptlake.tasks.source.image_folder import scan_directory


def draw(folder: Path, prompts: list[str], start: int = 0) -> None:
    """One small PNG per prompt, its prompt in A1111's ``parameters`` chunk."""
    settings = {"Steps": "20", "Sampler": "Euler a", "Model": "sd_xl_base_1.0"}
    for i, prompt in enumerate(prompts, start):
        img = sample_image(prompt, size=64)
        path = folder / f"{i // 1000:03d}" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(save_with_metadata(img, ImageMeta(prompt, "blurry", settings)))


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def read_all(folder: Path) -> int:
    return sum(len(p.read_bytes()) for p in folder.rglob("*.png"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="images in the folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pl-bench-folder-") as tmp:
        folder, out = Path(tmp) / "images", Path(tmp) / "source" / "images.parquet"
        print(f"drawing {args.n:,} images …", flush=True)
        draw(folder, sample_prompts(args.n, seed=3))
        read_s, size = timed(lambda: read_all(folder))
        first_s, first = timed(lambda: scan_directory(folder, out))
        again_s, again = timed(lambda: scan_directory(folder, out))
        added = max(1, args.n // 100)
        draw(folder, sample_prompts(added, seed=4), start=args.n)
        grown_s, grown = timed(lambda: scan_directory(folder, out))
    n = args.n
    figures = {
        "files": n,
        "bytes": size,
        "read_bytes_files_per_s": round(n / read_s),
        "first_scan_files_per_s": round(n / first_s),
        "first_scan_read": first["read"],
        "rescan_unchanged_s": round(again_s, 3),
        "rescan_unchanged_files_per_s": round(n / again_s),
        "rescan_unchanged_read": again["read"],
        "rescan_1pct_added_s": round(grown_s, 3),
        "rescan_1pct_added_read": grown["read"],
        "rescan_vs_first": round(first_s / again_s, 1),
        "first_scan_vs_bytes_only": round(read_s / first_s, 2),
    }
    print(f"bytes only (baseline): {n / read_s:9,.0f} files/s")
    print(f"first scan:            {n / first_s:9,.0f} files/s, {first['read']:,} read")
    print(
        f"rescan, unchanged:     {n / again_s:9,.0f} files/s, "
        f"{again['read']:,} read ({first_s / again_s:.0f}x the first scan)"
    )
    print(f"rescan, 1% added:      {grown_s:9.2f} s, {grown['read']:,} read")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
