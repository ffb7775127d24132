"""Each tool's metadata, in each container it uses, on files the tests write the way that tool's
own code writes them; and what no reader knows giving None, never a blob as a prompt."""

import json

import pytest

from promptlake.tasks.metadata import read_metadata
from tests.helpers.metadata_files import (
    USER_COMMENT,
    exif_file,
    png,
    stealth_png,
    unicode_comment,
    xmp_packet,
)

A1111 = (
    "a cat sleeping on the sofa, (masterpiece:1.2)\nNegative prompt: blurry, lowres\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 3141592, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: {version}"
)


@pytest.mark.parametrize(
    "settings, tool",
    [
        ("Version: v1.10.1", "a1111"),
        ("Version: f2.0.1v1.10.1-previous-313-g8a042934", "forge"),
        ("Version: f0.0.17v1.8.0rc-latest-276-g29be1da7", "forge"),
        ("App: SD.Next, Version: 2a8b3c1", "sdnext"),
        ("Backend: Diffusers, Version: 9bb6e6a", "sdnext"),
    ],
)
def test_a1111_family_told_apart_by_their_settings_line(settings, tool):
    text = A1111.replace("Version: {version}", settings)
    for data in (
        png({"parameters": text}),
        exif_file(exif_ifd={USER_COMMENT: unicode_comment(text)}),
    ):
        meta = read_metadata(data)
        assert meta.tool == tool and meta.prompt == "a cat sleeping on the sofa, (masterpiece:1.2)"
        assert (meta.seed, meta.steps, meta.sampler, meta.cfg_scale) == (
            3141592,
            28,
            "DPM++ 2M",
            7.5,
        )
        assert (meta.width, meta.height, meta.model_name) == (512, 768, "v1-5-pruned-emaonly")
        assert meta.settings["Schedule type"] == "Karras"


@pytest.mark.parametrize("mode", ["alpha", "rgb"])
@pytest.mark.parametrize("compressed", [True, False])
def test_a1111_stealth_pnginfo(mode, compressed):
    text = A1111.replace("{version}", "v1.9.4")
    meta = read_metadata(stealth_png(text, mode=mode, compressed=compressed, size=(72, 50)))
    assert meta.prompt.startswith("a cat sleeping") and meta.negative_prompt == "blurry, lowres"
    assert meta.seed == 3141592 and meta.tool == "a1111"


def test_stealth_in_a_short_image_wraps_to_the_next_columns():
    meta = read_metadata(stealth_png("a tiny moon\nSteps: 4, Seed: 9", size=(200, 7)))
    assert (meta.prompt, meta.seed) == ("a tiny moon", 9)


def test_novelai_stealth_and_text_chunks():
    comment = {
        "prompt": "1girl, night city, neon",
        "uc": "lowres, bad hands",
        "steps": 28,
        "seed": 77,
        "sampler": "k_euler_ancestral",
        "scale": 5.0,
        "width": 832,
        "height": 1216,
        "v4_prompt": {"caption": {"base_caption": "1girl, night city, neon"}},
    }
    fields = {
        "Title": "NovelAI generated image",
        "Description": "1girl, night city, neon",
        "Software": "NovelAI",
        "Source": "NovelAI Diffusion V4.5 4BDE2A90",
        "Generation time": "3.2",
        "Comment": json.dumps(comment),
    }
    for data in (png(fields), stealth_png(json.dumps(fields), size=(128, 128))):
        meta = read_metadata(data)
        assert meta.tool == "novelai" and meta.prompt == "1girl, night city, neon"
        assert meta.negative_prompt == "lowres, bad hands"
        assert (meta.seed, meta.steps, meta.cfg_scale, meta.width) == (77, 28, 5.0, 832)
        assert meta.model_name == "NovelAI Diffusion V4.5 4BDE2A90"
        assert json.loads(meta.settings["v4_prompt"])["caption"]["base_caption"]


FOOOCUS = {
    "prompt": "a lighthouse in a storm",
    "negative_prompt": "blurry",
    "styles": "['Fooocus V2']",
    "performance": "Speed",
    "resolution": "(1152, 896)",
    "guidance_scale": 4.5,
    "base_model": "juggernautXL_v8Rundiffusion",
    "sampler": "dpmpp_2m_sde_gpu",
    "scheduler": "karras",
    "seed": "12345",
    "steps": 30,
    "version": "Fooocus v2.5.5",
}


def test_fooocus_jpeg_and_a1111_scheme():
    # modules/meta_parser.py get_exif: the text as UserComment in the main IFD, no charset
    jpeg = exif_file(ifd0={USER_COMMENT: json.dumps(FOOOCUS), 0x0131: "Fooocus v2.5.5"})
    meta = read_metadata(jpeg)
    assert meta.tool == "fooocus" and meta.prompt == "a lighthouse in a storm"
    assert (meta.width, meta.height, meta.seed, meta.cfg_scale) == (1152, 896, 12345, 4.5)
    a1111_scheme = (
        "a lighthouse in a storm\nNegative prompt: blurry\nPerformance: Speed, Steps: 30, "
        "Sampler: DPM++ 2M SDE Karras, Seed: 12345, Size: 1152x896, Version: Fooocus v2.5.5"
    )
    meta = read_metadata(png({"parameters": a1111_scheme, "fooocus_scheme": "a1111"}))
    assert meta.tool == "fooocus" and meta.steps == 30 and meta.negative_prompt == "blurry"


SWARM = {
    "sui_image_params": {
        "prompt": "a red panda astronaut",
        "negativeprompt": "text",
        "model": "OfficialStableDiffusion/sd_xl_base_1.0",
        "seed": 1234,
        "steps": 20,
        "cfgscale": 7,
        "width": 1024,
        "height": 1024,
        "sampler": "dpmpp_2m",
        "swarm_version": "0.9.4.0",
    },
    "sui_extra_data": {"date": "2025-01-02", "generation_time": "1.2 sec"},
}


@pytest.mark.parametrize("where", ["png", "jpeg", "webp", "legacy-model-tag"])
def test_swarmui(where):
    text = json.dumps(SWARM)
    data = {
        "png": lambda: png({"parameters": text}),
        "jpeg": lambda: exif_file(exif_ifd={USER_COMMENT: unicode_comment(text, "utf-16-le")}),
        "webp": lambda: exif_file("WEBP", exif_ifd={USER_COMMENT: unicode_comment(text)}),
        "legacy-model-tag": lambda: exif_file(ifd0={0x0110: text}),
    }[where]()
    meta = read_metadata(data)
    assert meta.tool == "swarmui" and meta.prompt == "a red panda astronaut"
    assert (meta.negative_prompt, meta.model_name) == (
        "text",
        "OfficialStableDiffusion/sd_xl_base_1.0",
    )
    assert (meta.seed, meta.steps, meta.cfg_scale, meta.sampler) == (1234, 20, 7.0, "dpmpp_2m")
    assert meta.settings["generation_time"] == "1.2 sec"


def test_easy_diffusion_png_fields_labels_and_jpeg():
    fields = {
        "prompt": "a cozy cabin in the woods",
        "negative_prompt": "people",
        "seed": "42",
        "use_stable_diffusion_model": "C:\\ED\\models\\stable-diffusion\\sd-v1-5.safetensors",
        "use_vae_model": "None",
        "sampler_name": "euler_a",
        "width": "512",
        "height": "768",
        "num_inference_steps": "25",
        "guidance_scale": "7.5",
    }
    labels = {
        "Prompt": "a cozy cabin in the woods",
        "Negative Prompt": "people",
        "Seed": "42",
        "Stable Diffusion model": "sd-v1-5",
        "Sampler": "euler_a",
        "Width": "512",
        "Height": "768",
        "Steps": "25",
        "Guidance Scale": "7.5",
    }
    as_json = {**fields, "seed": 42, "width": 512, "height": 768}
    jpeg = exif_file(exif_ifd={USER_COMMENT: unicode_comment(json.dumps(as_json))})
    for data, model in (
        (png(fields), "sd-v1-5.safetensors"),
        (png(labels), "sd-v1-5"),
        (jpeg, "sd-v1-5.safetensors"),
    ):
        meta = read_metadata(data)
        assert meta.tool == "easydiffusion" and meta.prompt == "a cozy cabin in the woods"
        assert (meta.negative_prompt, meta.seed, meta.steps, meta.cfg_scale) == (
            "people",
            42,
            25,
            7.5,
        )
        assert (meta.width, meta.height, meta.model_name, meta.sampler) == (
            512,
            768,
            model,
            "euler_a",
        )


def test_draw_things_xmp_in_png_and_jpeg():
    comment = {
        "c": "a paper boat on a lake",
        "uc": "blurry",
        "seed": 3,
        "steps": 8,
        "scale": 4.5,
        "sampler": "DPM++ 2M Karras",
        "model": "sd_xl_base_1.0_f16.ckpt",
        "size": "1024x768",
        "v2": {"shift": 1},
    }
    xmp = xmp_packet(json.dumps(comment))
    data_png = png({"XML:com.adobe.xmp": xmp}, itxt={"XML:com.adobe.xmp"})
    for data in (data_png, exif_file(xmp=xmp.encode())):
        meta = read_metadata(data)
        assert meta.tool == "drawthings" and meta.prompt == "a paper boat on a lake"
        assert (meta.seed, meta.steps, meta.cfg_scale, meta.width, meta.height) == (
            3,
            8,
            4.5,
            1024,
            768,
        )
        assert meta.model_name == "sd_xl_base_1.0_f16.ckpt" and meta.negative_prompt == "blurry"


def test_invokeai_5_model_record():
    data = {
        "positive_prompt": "a glass teapot",
        "negative_prompt": "",
        "seed": 5,
        "steps": 30,
        "cfg_scale": 6,
        "scheduler": "dpmpp_2m_k",
        "width": 1024,
        "height": 1024,
        "model": {"key": "6d4c", "hash": "blake3:ab", "name": "Juggernaut XL v9", "base": "sdxl"},
    }
    meta = read_metadata(png({"invokeai_metadata": json.dumps(data), "invokeai_graph": "{}"}))
    assert (meta.tool, meta.prompt, meta.model_name) == (
        "invokeai",
        "a glass teapot",
        "Juggernaut XL v9",
    )
    assert (meta.sampler, meta.cfg_scale) == ("dpmpp_2m_k", 6.0)


@pytest.mark.parametrize(
    "data",
    [
        png({"parameters": json.dumps({"foo": 1, "prompt": "not a known tool"})}),
        png({"parameters": "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1"}),
        png({"parameters": "   "}),
        png({"prompt": "{not json"}),
        png({"prompt": json.dumps([1, 2, 3])}),
        png({"Comment": json.dumps({"prompt": "x", "width": 3})}),  # no tool writes this
        png({"XML:com.adobe.xmp": xmp_packet("not json")}),
        png({"Description": "a photo", "Software": "GIMP"}),
        exif_file(exif_ifd={USER_COMMENT: unicode_comment(json.dumps({"steps": 20, "cfg": 7}))}),
        exif_file(exif_ifd={USER_COMMENT: b"UNICODE\x00"}),
        exif_file(ifd0={0x0110: "Canon EOS R5"}),  # a camera, not SwarmUI
        exif_file(xmp=b"<x:xmpmeta><exif:UserComment>hello</exif:UserComment></x:xmpmeta>"),
        b"not an image at all",
    ],
)
def test_unknown_metadata_is_none_never_a_blob(data):
    assert read_metadata(data) is None
