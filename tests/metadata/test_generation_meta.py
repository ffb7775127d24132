"""How an image was made (negative prompt, settings, model, tool) is kept with its row — from an
image's own metadata or a dataset's extra columns — shown in hits and usable as a filter."""

import json

import pytest

from promptlake.cli import main
from promptlake.sample_data import sample_image
from promptlake.tasks.metadata import ImageMeta, save_with_metadata
from tests.conftest import write_csv

pytestmark = pytest.mark.usefixtures("prefect_server", "tiny_cli_env")


def _search(capsys, data_dir, *flags):
    capsys.readouterr()
    assert main(["search", "a castle", "-k", "20", "--data-dir", data_dir, "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def test_folder_metadata_is_kept_and_filterable(tmp_path, capsys):
    folder, data_dir = tmp_path / "images", str(tmp_path / "d")
    folder.mkdir()
    made = {
        "xl.png": ("a castle on a hill", "sd_xl_base_1.0", "blurry"),
        "v15.png": ("a castle by the sea", "v1-5-pruned-emaonly", "lowres"),
    }
    for name, (prompt, model, negative) in made.items():
        settings = {"Steps": "30", "Sampler": "DPM++ 2M", "Model": model}
        img = sample_image(prompt, size=64)
        (folder / name).write_bytes(save_with_metadata(img, ImageMeta(prompt, negative, settings)))
    assert main(["ingest-images", str(folder), "--data-dir", data_dir]) == 0
    hits = _search(capsys, data_dir)
    assert {(h["prompt"], h["model_name"], h["negative_prompt"], h["tool"]) for h in hits} == {
        (p, m, n, "a1111") for p, m, n in made.values()
    }
    assert all(h["settings"]["Steps"] == "30" for h in hits)
    only_xl = _search(capsys, data_dir, "--model-name", "XL")  # contains, ignoring case
    assert [h["model_name"] for h in only_xl] == ["sd_xl_base_1.0"]
    assert _search(capsys, data_dir, "--tool", "comfyui") == []
    images = _search(capsys, data_dir, "--target", "images", "--model-name", "v1-5")
    assert [(h["prompt"], h["negative_prompt"]) for h in images] == [
        ("a castle by the sea", "lowres")
    ]


def test_dataset_columns_beyond_the_six_are_kept(tmp_path, server, capsys):
    data_dir = str(tmp_path / "d")
    header = ["id", "prompt", "url", "width", "height", "source_site", "negative_prompt", "model"]
    header += ["seed", "style"]
    rows = [
        [
            "a",
            "a castle at dawn",
            server.url("img", "a"),
            64,
            64,
            "s",
            "ugly",
            "sdxl-turbo",
            7,
            "x",
        ],
        ["b", "a castle at dusk", server.url("img", "b"), 64, 64, "s", "", "", "", ""],
    ]
    src = write_csv(tmp_path / "p.csv", rows, header=header)
    assert main(["ingest", str(src), "--data-dir", data_dir]) == 0
    hits = {h["id"]: h for h in _search(capsys, data_dir)}
    assert (hits["a"]["negative_prompt"], hits["a"]["model_name"]) == ("ugly", "sdxl-turbo")
    assert hits["a"]["settings"] == {"seed": "7"} and hits["a"]["extra"]["columns"] == {
        "style": "x"
    }
    assert (hits["b"]["model_name"], hits["b"]["settings"], hits["b"]["extra"]) == ("", {}, {})
    assert main(["search", "a castle", "--data-dir", data_dir, "--model-name", "turbo"]) == 0
    out = capsys.readouterr().out
    assert "model sdxl-turbo" in out and "negative: ugly" in out and "a castle at dusk" not in out
