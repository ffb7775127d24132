"""The metadata readers on real files written by the real tools (tests/data/metadata/README.md
says where each comes from)."""

import json

import pytest
from PIL import Image

from promptlake.tasks.metadata import read_metadata
from promptlake.tasks.metadata.comfyui import parse_comfy_graph
from promptlake.tasks.metadata.comfyui_workflow import workflow_to_graph
from tests.helpers import DATA

METADATA = DATA / "metadata"
WOMAN = "professional full body photo of young woman, hyper long brunette hair"
# file: tool, prompt (start), negative (start), model, seed, steps, sampler, cfg, width, height
CASES = {
    "automatic1111_cropped.png": (
        "a1111",
        "photo of a duck",
        "monochrome",
        "realistic_realisticVisionV20_v20",
        235284042,
        15,
        "UniPC",
        5.0,
        512,
        400,
    ),
    "automatic1111_stealth.png": (
        "a1111",
        "a circle",
        "a square",
        "realisticVisionV51_v51VAE",
        2015833630,
        20,
        "Euler",
        7.0,
        64,
        64,
    ),
    "img2img_cropped.png": (
        "comfyui",
        "photograph of victorian woman with wings, sky clouds, meadow grass",
        "watermark, text",
        "v1-5-pruned-emaonly.ckpt",
        280823642470253,
        20,
        "sample_dpmpp_2m",
        8.0,
        None,
        None,
    ),
    "unclip_2pass_cropped.png": (
        "comfyui",
        "beautiful scenery landscape outdoors mountains",
        "(hands), text, error, cropped, (jpeg artifacts:1.3)",
        "cardosAnimated_v20.safetensors",
        119080905858220,
        8,
        "dpmpp_sde",
        9.0,
        1920,
        1088,
    ),
    "fooocus1_cropped.png": (
        "fooocus",
        "a smiling goldfish",
        "",
        "juggernautXL_v8Rundiffusion",
        6952411511246973023,
        30,
        "dpmpp_2m_sde_gpu",
        4.0,
        768,
        1280,
    ),
    "invokeai_dream1.png": (
        "invokeai",
        WOMAN,
        "rendering, glowing eyes, skinny",
        "",
        2980747362,
        50,
        "k_lms",
        5.0,
        512,
        768,
    ),
    "invokeai_sdmeta1.png": (
        "invokeai",
        WOMAN,
        "rendering, glowing eyes, skinny",
        "deliberateForInvoke_v08",
        2980747362,
        50,
        "k_lms",
        5.0,
        512,
        768,
    ),
    "invokeai_imeta1.png": (
        "invokeai",
        "digital artwork, oil painting. painterly brushstrokes, holidays,",
        "grainy+, photo, oversaturated",
        "juggernautXL",
        3293022630,
        35,
        "euler",
        8.0,
        1024,
        1024,
    ),
    "novelai1_cropped.png": (
        "novelai",
        "masterpiece, best quality,  cat, space, icon",
        "lowres, bad anatomy, bad hands",
        "Stable Diffusion 1D44365E",
        2253955223,
        50,
        "k_euler_ancestral",
        10.0,
        None,
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_real_file(name):
    tool, prompt, negative, model, seed, steps, sampler, cfg, width, height = CASES[name]
    meta = read_metadata((METADATA / name).read_bytes())
    assert meta is not None and meta.tool == tool
    assert meta.prompt.startswith(prompt) and meta.negative_prompt.startswith(negative)
    assert (meta.model_name, meta.seed, meta.steps, meta.sampler) == (model, seed, steps, sampler)
    assert (meta.cfg_scale, meta.width, meta.height) == (cfg, width, height)
    assert meta.prompts[0] == (meta.prompt, meta.negative_prompt)
    assert not meta.prompt.lstrip().startswith("{")  # never the settings blob


def test_a1111_jpeg_and_a_chunk_after_the_pixels_read_like_the_png():
    png = read_metadata((METADATA / "automatic1111_cropped.png").read_bytes())
    for name in ("automatic1111_cropped.jpg", "text_after_idat.png"):
        assert read_metadata((METADATA / name).read_bytes()) == png
    assert png.settings["Model hash"] == "c0d1994c73"


def test_comfyui_graph_with_several_samplers_gives_every_prompt():
    meta = read_metadata((METADATA / "night_evening_day_morning_cropped.png").read_bytes())
    # the second pass feeds the output: its prompt is the main one, its size the final one
    assert meta.prompt.startswith("(best quality) beautiful (HDR:1.2) (realistic:1.2)")
    assert (meta.seed, meta.steps, meta.width, meta.height) == (1122440447966177, 14, 1088, 1920)
    assert meta.model_name == "AbyssOrangeMix2_hard.safetensors"
    assert len(meta.prompts) == 2
    # the first pass: four area prompts and the scene, in the order the combine nodes wire them
    first_pass = meta.prompts[1][0].split("\n")
    assert len(first_pass) == 5 and first_pass[0].startswith("(best quality) (night:1.3)")
    assert first_pass[-1].startswith("(masterpiece) (best quality) beautiful landscape")
    layered = read_metadata((METADATA / "noisy_latents_3_subjects_cropped.png").read_bytes())
    assert len(layered.prompts) == 6 and layered.steps == 9
    assert any(p.startswith("sky clouds nature national park") for p, _ in layered.prompts)


@pytest.mark.parametrize(
    "name",
    [
        "img2img_cropped.png",
        "night_evening_day_morning_cropped.png",
        "noisy_latents_3_subjects_cropped.png",
        "unclip_2pass_cropped.png",
    ],
)
def test_comfyui_editor_graph_alone_reads_like_the_api_graph(name):
    info = Image.open(METADATA / name).info
    api = parse_comfy_graph(json.loads(info["prompt"]))
    editor = parse_comfy_graph(workflow_to_graph(json.loads(info["workflow"])))
    assert editor.prompts == api.prompts
    assert (editor.seed, editor.steps, editor.sampler, editor.cfg_scale) == (
        api.seed,
        api.steps,
        api.sampler,
        api.cfg_scale,
    )
    assert (editor.model_name, editor.width, editor.height) == (
        api.model_name,
        api.width,
        api.height,
    )
