"""Prompts read from generated images: A1111 PNG chunks and EXIF, ComfyUI graphs, reverse search
from metadata, and a folder of a user's images ingested through the real pipeline."""

import io
import json

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from promptlake.cli import main
from promptlake.settings import store_url
from promptlake.storage.datadir.layout import DataDir
from promptlake.storage.store import open_store
from promptlake.tasks.metadata import (
    EXIF_IFD,
    TOOLS,
    USER_COMMENT,
    ImageMeta,
    read_metadata,
    save_with_metadata,
)
from promptlake.tasks.query.search import SearchRequest, reverse, run

# exactly as AUTOMATIC1111 writes it, quoted hash lists included
A1111 = (
    "a cat sleeping on the sofa, oil painting, (masterpiece:1.2), by greg rutkowski\n"
    "with soft light\n"
    "Negative prompt: blurry, lowres, watermark\n"
    "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 3141592, Size: 512x768, "
    'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "cat: a1b2, sofa: c3d4", '
    "Version: v1.6.0"
)
COMFY_PROMPT = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 42,
            "steps": 20,
            "cfg": 8.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
    "6": {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "a fox in the snow, watercolor", "clip": ["4", 1]},
    },
}


def png(text_chunks: dict[str, str], color=(90, 120, 200)) -> bytes:
    info = PngInfo()
    for k, v in text_chunks.items():
        info.add_text(k, v)
    out = io.BytesIO()
    Image.new("RGB", (96, 64), color).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def jpeg_with_user_comment(comment: bytes, fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = comment
    out = io.BytesIO()
    Image.new("RGB", (80, 60), (10, 200, 30)).save(out, fmt, exif=exif)
    return out.getvalue()


def test_a1111_png_parameters_chunk():
    meta = read_metadata(png({"parameters": A1111}))
    assert meta.tool == "a1111"
    assert meta.prompt == (
        "a cat sleeping on the sofa, oil painting, (masterpiece:1.2), by greg rutkowski\n"
        "with soft light"
    )
    assert meta.negative_prompt == "blurry, lowres, watermark"
    assert meta.settings["Sampler"] == "DPM++ 2M Karras"
    assert meta.settings["CFG scale"] == "7.5" and meta.settings["Seed"] == "3141592"
    assert meta.settings["Lora hashes"] == "cat: a1b2, sofa: c3d4"
    assert meta.settings["Version"] == "v1.6.0"


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_a1111_exif_user_comment(fmt):
    # piexif.helper.UserComment.dump(text, encoding="unicode"): a charset prefix, then UTF-16-BE
    meta = read_metadata(jpeg_with_user_comment(b"UNICODE\x00" + A1111.encode("utf-16-be"), fmt))
    assert meta.prompt.startswith("a cat sleeping on the sofa") and meta.settings["Steps"] == "28"
    little = jpeg_with_user_comment(b"UNICODE\x00" + A1111.encode("utf-16-le"), fmt)
    assert read_metadata(little).negative_prompt == "blurry, lowres, watermark"
    ascii_ = jpeg_with_user_comment(b"ASCII\x00\x00\x00" + b"a lighthouse\nSteps: 5, Seed: 1")
    meta = read_metadata(ascii_)
    assert meta == ImageMeta("a lighthouse", "", {"Steps": "5", "Seed": "1"})
    assert (meta.seed, meta.steps) == (1, 5)


def test_comfyui_graph():
    meta = read_metadata(png({"prompt": json.dumps(COMFY_PROMPT), "workflow": "{}"}))
    assert meta.tool == "comfyui"
    assert meta.prompt == "a fox in the snow, watercolor"  # wired to positive, not node order
    assert meta.negative_prompt == "text, watermark"
    assert meta.settings == {
        "seed": "42",
        "steps": "20",
        "cfg": "8.0",
        "sampler_name": "euler",
        "scheduler": "normal",
        "denoise": "1.0",
        "model": "sd15.safetensors",
    }
    assert (meta.seed, meta.steps, meta.cfg_scale, meta.sampler) == (42, 20, 8.0, "euler")
    assert meta.model_name == "sd15.safetensors" and meta.prompts == [
        (meta.prompt, "text, watermark")
    ]
    # an editor graph whose encoder no sampler uses says nothing about the image
    workflow = {"nodes": [{"id": 1, "type": "CLIPTextEncode", "widgets_values": ["a robot"]}]}
    assert read_metadata(png({"workflow": json.dumps(workflow)})) is None


def test_no_metadata_is_none_never_an_error():
    assert read_metadata(png({})) is None
    assert read_metadata(png({"prompt": "{not json"})) is None
    assert read_metadata(png({"parameters": "   "})) is None
    assert read_metadata(b"not an image at all") is None
    assert read_metadata(jpeg_with_user_comment(b"UNICODE\x00")) is None


def test_written_metadata_reads_back():
    settings = {"Steps": "20", "Seed": "7", "Lora hashes": "cat: a1b2, sofa: c3d4"}
    meta = ImageMeta("a steampunk airship, digital art", "blurry", settings)
    img = Image.new("RGB", (40, 40))
    for fmt in ("png", "jpeg", "webp"):
        back = read_metadata(save_with_metadata(img, meta, fmt))
        assert back == meta and (back.seed, back.steps) == (7, 20)


def test_reverse_search_returns_the_exact_prompt_without_a_store(tmp_path, fast_settings):
    pic = tmp_path / "gen.png"
    pic.write_bytes(png({"parameters": A1111}))
    empty = DataDir(tmp_path / "nothing-built")  # no store, no model: metadata alone answers
    found = reverse(str(pic), empty, fast_settings)
    assert found.exact.prompt.startswith("a cat sleeping") and found.hits == []
    s = fast_settings.model_copy(update={"data_dir": empty.root})
    hits = run(SearchRequest(image=str(pic)), s)
    assert hits[0].origin == "metadata:a1111" and hits[0].settings["Seed"] == "3141592"


def test_cli_reverse_search_prints_exact_prompt(tmp_path, capsys):
    pic = tmp_path / "gen.jpg"
    pic.write_bytes(jpeg_with_user_comment(b"UNICODE\x00" + A1111.encode("utf-16-be")))
    assert main(["search", "--image", str(pic), "--data-dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "exact prompt (from the image's a1111 metadata)" in out
    assert "Sampler: DPM++ 2M Karras" in out and "negative: blurry" in out
    assert main(["search", "--image", str(pic), "--data-dir", str(tmp_path / "d"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["prompt"].startswith("a cat sleeping")


def test_ingest_images_folder(tmp_path, tiny_clip, capsys, monkeypatch):
    folder = tmp_path / "my-images"
    (folder / "sub").mkdir(parents=True)
    prompts = ["a lighthouse on a cliff, oil painting", "a bowl of ramen, anime style"]
    for i, p in enumerate(prompts):
        meta = ImageMeta(p, "blurry", {"Steps": "20", "Seed": str(i)})
        img = Image.new("RGB", (128, 96), (40 * i, 90, 160))
        (folder / f"a{i}.png").write_bytes(save_with_metadata(img, meta, "png"))
    fox = ImageMeta("a fox", settings={"Steps": "20", "Seed": "3"})
    (folder / "sub" / "c.jpg").write_bytes(save_with_metadata(img, fox, "jpeg"))
    (folder / "sub" / "fox-copy.jpg").write_bytes((folder / "sub" / "c.jpg").read_bytes())
    (folder / "comfy.png").write_bytes(png({"prompt": json.dumps(COMFY_PROMPT)}))
    (folder / "plain.png").write_bytes(png({}))  # no metadata: a recorded reject
    (folder / "broken.webp").write_bytes(b"RIFF....WEBPVP8 nope")  # unreadable: a reject
    (folder / "notes.txt").write_text("not an image")
    monkeypatch.setenv("PROMPTLAKE_PRECISION", "fp32")
    data = tmp_path / "data"
    args = ["ingest-images", str(folder), "--data-dir", str(data), "--model", tiny_clip]
    assert main(args) == 0
    report = json.loads(_status_json(data, capsys))
    assert report["rows"]["valid"] == 4 and report["store"]["prompts"] == 4
    assert report["rows"]["rejects_by_reason"] == {
        "empty_prompt": 2,
        "duplicate_id": 1,
    }
    scan = json.loads((data / "source" / "images.scan.json").read_text())
    assert {k: n for k, n in scan["counts"].items() if n} == {
        "a1111": 4,
        "comfyui": 1,
        "none": 1,
        "unreadable": 1,
    }
    assert set(scan["counts"]) == {*TOOLS, "none", "unreadable"}
    assert scan["unreadable"][0].endswith("broken.webp")
    store = open_store(store_url(fast_settings_for(data)))
    rows = store.client.query("SELECT prompt, source_site FROM promptlake.images").result_rows
    assert {r[0] for r in rows} == {*prompts, "a fox", "a fox in the snow, watercolor"}
    assert {r[1] for r in rows} == {"local"}
    assert main(args) == 0  # a rerun of the same folder changes nothing
    assert json.loads(_status_json(data, capsys))["store"] == report["store"]


def fast_settings_for(data):
    from promptlake.settings import Settings

    return Settings(data_dir=data)


def _status_json(data, capsys) -> str:
    capsys.readouterr()
    assert main(["status", "--data-dir", str(data), "--json"]) == 0
    return capsys.readouterr().out
