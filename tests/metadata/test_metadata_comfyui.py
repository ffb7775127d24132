"""ComfyUI graphs as the current node set writes them: SDXL, SD3 and Flux text encoders,
primitive and string nodes, conditioning concat and ControlNet pairs, custom samplers, the
editor graph with reroutes and primitives, and an A1111-style save node."""

import json

from promptlake.tasks.metadata import read_metadata
from tests.helpers.metadata_files import png


def node(kind, **inputs):
    return {"class_type": kind, "inputs": inputs, "_meta": {"title": kind}}


def save_chain(graph, sampler_id):
    graph["90"] = node("VAEDecode", samples=[sampler_id, 0], vae=["1", 2])
    graph["91"] = node("SaveImage", images=["90", 0], filename_prefix="ComfyUI")
    return graph


FLUX = save_chain(
    {
        "1": node("UNETLoader", unet_name="flux1-dev.safetensors", weight_dtype="default"),
        "2": node("DualCLIPLoader", clip_name1="clip_l.safetensors", type="flux"),
        "3": node(
            "CLIPTextEncodeFlux",
            clip=["2", 0],
            clip_l="a red fox",
            t5xxl="a red fox in a snowy forest, golden hour",
            guidance=3.5,
        ),
        "4": node("FluxGuidance", conditioning=["3", 0], guidance=3.5),
        "5": node("ConditioningZeroOut", conditioning=["3", 0]),
        "6": node("CFGGuider", model=["1", 0], positive=["4", 0], negative=["5", 0], cfg=1.0),
        "7": node("RandomNoise", noise_seed=123456),
        "8": node("KSamplerSelect", sampler_name="euler"),
        "9": node("BasicScheduler", model=["1", 0], scheduler="simple", steps=25, denoise=1.0),
        "10": node("EmptySD3LatentImage", width=1024, height=768, batch_size=1),
        "11": node(
            "SamplerCustomAdvanced",
            noise=["7", 0],
            guider=["6", 0],
            sampler=["8", 0],
            sigmas=["9", 0],
            latent_image=["10", 0],
        ),
    },
    "11",
)


def test_flux_custom_sampler_and_guider():
    meta = read_metadata(png({"prompt": json.dumps(FLUX)}))
    assert meta.tool == "comfyui"
    assert meta.prompt == "a red fox in a snowy forest, golden hour\na red fox"
    assert meta.negative_prompt == ""  # zeroed out: not the positive text again
    assert (meta.seed, meta.steps, meta.sampler, meta.cfg_scale) == (123456, 25, "euler", 1.0)
    assert (meta.model_name, meta.width, meta.height) == ("flux1-dev.safetensors", 1024, 768)
    assert meta.settings["scheduler"] == "simple"


def sdxl_with_string_nodes():
    sdxl = {"width": 1024, "height": 1024, "crop_w": 0, "crop_h": 0}
    return save_chain(
        {
            "1": node("CheckpointLoaderSimple", ckpt_name="sd_xl_base_1.0.safetensors"),
            "2": node("PrimitiveStringMultiline", value="a lighthouse on a cliff, storm"),
            "3": node(
                "StringConcatenate", string_a=["2", 0], string_b="oil painting", delimiter=", "
            ),
            "4": node(
                "CLIPTextEncodeSDXL", clip=["1", 1], text_g=["3", 0], text_l=["3", 0], **sdxl
            ),
            "5": node("SDXLPromptStyler", text_positive="unused", text_negative="blurry, lowres"),
            "6": node(
                "CLIPTextEncodeSDXL", clip=["1", 1], text_g=["5", 1], text_l=["5", 1], **sdxl
            ),
            "7": node("PrimitiveInt", value=987),
            "8": node("EmptyLatentImage", width=832, height=1216, batch_size=1),
            "9": node(
                "KSampler",
                seed=["7", 0],
                steps=30,
                cfg=6.5,
                sampler_name="dpmpp_2m",
                scheduler="karras",
                denoise=1.0,
                model=["1", 0],
                positive=["4", 0],
                negative=["6", 0],
                latent_image=["8", 0],
            ),
        },
        "9",
    )


def test_sdxl_encoders_fed_by_primitive_concat_and_styler_nodes():
    meta = read_metadata(png({"prompt": json.dumps(sdxl_with_string_nodes())}))
    assert meta.prompt == "a lighthouse on a cliff, storm, oil painting"
    assert meta.negative_prompt == "blurry, lowres"  # the styler's second output
    assert (meta.seed, meta.width, meta.height, meta.cfg_scale) == (987, 832, 1216, 6.5)
    assert meta.model_name == "sd_xl_base_1.0.safetensors"


def test_sd3_concat_and_controlnet_pairs():
    graph = save_chain(
        {
            "1": node("CheckpointLoaderSimple", ckpt_name="sd3.5_large.safetensors"),
            "2": node(
                "CLIPTextEncodeSD3",
                clip=["1", 1],
                clip_l="a castle",
                clip_g="a castle",
                t5xxl="a castle at dawn, mist",
                empty_padding="none",
            ),
            "3": node("CLIPTextEncode", clip=["1", 1], text="high detail"),
            "4": node("ConditioningConcat", conditioning_to=["2", 0], conditioning_from=["3", 0]),
            "5": node("CLIPTextEncode", clip=["1", 1], text="cartoon"),
            "6": node(
                "ControlNetApplyAdvanced",
                positive=["4", 0],
                negative=["5", 0],
                control_net=["7", 0],
                image=["8", 0],
                strength=0.8,
            ),
            "7": node("ControlNetLoader", control_net_name="canny.safetensors"),
            "8": node("LoadImage", image="edges.png"),
            "9": node(
                "KSampler",
                seed=1,
                steps=28,
                cfg=4.0,
                sampler_name="euler",
                scheduler="sgm_uniform",
                denoise=1.0,
                model=["1", 0],
                positive=["6", 0],
                negative=["6", 1],
                latent_image=["10", 0],
            ),
            "10": node("EmptySD3LatentImage", width=1024, height=1024, batch_size=1),
        },
        "9",
    )
    meta = read_metadata(png({"prompt": json.dumps(graph)}))
    assert meta.prompt == "a castle\na castle at dawn, mist\nhigh detail"
    assert meta.negative_prompt == "cartoon"  # output 1 of the ControlNet node: its negative


def test_editor_graph_alone_through_reroute_and_primitive():
    def widget(name, link):
        return {"name": name, "type": "STRING", "widget": {"name": name}, "link": link}

    nodes = [
        {
            "id": 1,
            "type": "CheckpointLoaderSimple",
            "widgets_values": ["dreamshaper_8.safetensors"],
        },
        {"id": 2, "type": "PrimitiveNode", "widgets_values": ["a koi pond, ukiyo-e"]},
        {
            "id": 3,
            "type": "CLIPTextEncode",
            "inputs": [{"name": "clip", "link": 2}, widget("text", 1)],
            "widgets_values": ["stale text"],
        },
        {"id": 4, "type": "Reroute", "inputs": [{"name": "", "link": 3}]},
        {
            "id": 5,
            "type": "CLIPTextEncode",
            "inputs": [{"name": "clip", "link": 4}],
            "widgets_values": ["photo"],
        },
        {
            "id": 6,
            "type": "KSampler",
            "inputs": [
                {"name": "model", "link": 5},
                {"name": "positive", "link": 6},
                {"name": "negative", "link": 7},
                {"name": "latent_image", "link": 8},
            ],
            "widgets_values": [42, "randomize", 20, 7, "euler", "normal", 1],
        },
        {"id": 7, "type": "EmptyLatentImage", "widgets_values": [512, 640, 1]},
        {"id": 8, "type": "SaveImage", "inputs": [{"name": "images", "link": 9}]},
        {"id": 9, "type": "VAEDecode", "inputs": [{"name": "samples", "link": 10}]},
        {"id": 10, "type": "Note", "widgets_values": ["remember to upscale"]},
    ]
    links = [
        [1, 2, 0, 3, 1, "STRING"],
        [2, 1, 1, 3, 0, "CLIP"],
        [3, 3, 0, 4, 0, "CONDITIONING"],
        [4, 1, 1, 5, 0, "CLIP"],
        [5, 1, 0, 6, 0, "MODEL"],
        [6, 4, 0, 6, 1, "CONDITIONING"],
        [7, 5, 0, 6, 2, "CONDITIONING"],
        [8, 7, 0, 6, 3, "LATENT"],
        [9, 9, 0, 8, 0, "IMAGE"],
        [10, 6, 0, 9, 0, "LATENT"],
    ]
    workflow = {"last_node_id": 10, "nodes": nodes, "links": links, "version": 0.4}
    meta = read_metadata(png({"workflow": json.dumps(workflow)}))
    assert (meta.tool, meta.prompt, meta.negative_prompt) == (
        "comfyui",
        "a koi pond, ukiyo-e",
        "photo",
    )
    assert (meta.seed, meta.steps, meta.cfg_scale, meta.sampler) == (42, 20, 7.0, "euler")
    assert (meta.width, meta.height, meta.model_name) == (512, 640, "dreamshaper_8.safetensors")
    # the newer object form of the links table reads the same
    workflow["links"] = [
        dict(
            zip(
                ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"),
                link,
                strict=True,
            )
        )
        for link in links
    ]
    again = read_metadata(png({"workflow": json.dumps(workflow)}))
    assert again == meta and (again.prompts, again.seed, again.width) == (meta.prompts, 42, 512)


def test_save_node_writing_a1111_text_next_to_the_graph():
    text = (
        "a lighthouse\nNegative prompt: fog\nSteps: 30, Sampler: dpmpp_2m, CFG scale: 6, Seed: 98"
    )
    meta = read_metadata(png({"parameters": text, "prompt": json.dumps(sdxl_with_string_nodes())}))
    assert (meta.tool, meta.prompt, meta.negative_prompt) == ("comfyui", "a lighthouse", "fog")
    assert meta.prompts == [
        ("a lighthouse", "fog"),
        ("a lighthouse on a cliff, storm, oil painting", "blurry, lowres"),
    ]


def test_a_graph_without_a_sampler_has_no_prompt():
    graph = {"1": node("CLIPTextEncode", text="a lone encoder", clip=["2", 1])}
    assert read_metadata(png({"prompt": json.dumps(graph)})) is None
