"""`make demo`'s program on a small sample: every step runs and shows what it should."""

import io
import os
import subprocess

from PIL import Image

from promptlake.demo import main, make_dataset
from promptlake.tasks.metadata import read_metadata
from tests.helpers import ROOT


def test_sample_dataset_carries_its_prompts_and_true_sizes(tmp_path):
    csv = make_dataset(tmp_path, 5).read_text().splitlines()
    assert len(csv) == 6 and csv[0] == "id,prompt,url,width,height,source_site"
    png = (tmp_path / "images" / "p0002.png").read_bytes()
    meta = read_metadata(png)
    assert meta.prompt in csv[3]
    with Image.open(io.BytesIO(png)) as img:  # the CSV declares the image's real size
        assert f",{img.width},{img.height}," in csv[3]


def test_demo_runs_end_to_end(tmp_path, tiny_clip, capsys, monkeypatch):
    monkeypatch.setenv("PROMPTLAKE_PRECISION", "fp32")
    assert main(["--dir", str(tmp_path / "demo"), "-n", "60", "--model", tiny_clip]) == 0
    out = capsys.readouterr().out
    assert "WHAT IS A STAND-IN: the prompts are made from word lists, and the images" in out
    assert "text → images (placeholder images: the wiring, not meaning)" in out
    assert "index:    built; store holds 60 prompts, 60 images" in out
    assert f"model:    {tiny_clip} (tiny-clip@" in out
    assert "exact prompt (from the image's a1111 metadata)" in out
    assert "drawn from: #1" in out
    assert "feedback: 1 inputs, 2 prompts written back" in out  # the idea alone, every run
    assert "[feedback]" in out and "0x0" not in out  # no image, no size
    assert "lineage: idea: a paper boat on a rainy street; drawn from" in out
    # every step is printed as a shell reads it: pasted, it runs the same command
    assert " search 'a paper boat on a rainy street' --origin feedback -k 2 --data-dir " in out
    # status counts what feedback wrote back among what the store holds
    assert "index:    built; store holds 62 prompts (2 from feedback), 60 images" in out
    assert "resume:   nothing to rerun" in out
    data = tmp_path / "demo" / "data"
    last = out.rstrip().splitlines()[-2:]  # the way in: the page on what it built
    assert last[0].startswith(f"Open the search page on this data:  make ui DATA_DIR={data}   ")
    assert last[0].endswith(f" ui --data-dir {data})")
    assert last[1].startswith("then browse http://127.0.0.1:8700 — while it runs")


def test_make_ui_opens_the_page_on_the_demo_data():
    # under `make test` the outer make's MAKEFLAGS/MAKELEVEL would make this one print
    # "Entering/Leaving directory" lines around the recipe: read the recipe alone
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    made = subprocess.run(
        ["make", "--no-print-directory", "-n", "ui"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[-1].split() == [
        ".venv/bin/promptlake",
        "ui",
        "--data-dir",
        "demo/data",
    ]
