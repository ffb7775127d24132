"""Tools that save their settings as one JSON object or as named text fields: Fooocus, SwarmUI,
Easy Diffusion, Draw Things and NovelAI. Each reader checks the keys its tool writes and gives
None for any other object: an unknown JSON blob is never taken for a prompt."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from pathlib import PureWindowsPath
from typing import Any

from promptlake.tasks.meta_record import (
    ImageMeta,
    as_text,
    flat_settings,
    load_json,
    looks_like_data,
    parse_size,
)

# Easy Diffusion writes either its request's field names or their labels (its "txt" format)
_ED_KEYS = {
    "prompt": "Prompt",
    "negative_prompt": "Negative Prompt",
    "seed": "Seed",
    "use_stable_diffusion_model": "Stable Diffusion model",
    "sampler_name": "Sampler",
    "width": "Width",
    "height": "Height",
    "num_inference_steps": "Steps",
    "guidance_scale": "Guidance Scale",
}
_XMP_COMMENT = re.compile(
    r"<exif:UserComment[^>]*>.*?<rdf:li[^>]*>(.*?)</rdf:li>|exif:UserComment=\"([^\"]*)\"", re.S
)


def parse_json(data: Any) -> ImageMeta | None:
    """A JSON object some tool wrote (PNG ``parameters``, an EXIF comment, stealth data)."""
    if not isinstance(data, dict):
        return None
    for reader in (parse_swarmui, parse_fooocus, parse_easydiffusion, parse_drawthings):
        meta = reader(data)
        if meta is not None:
            return meta
    return None


def parse_swarmui(data: Mapping[str, Any]) -> ImageMeta | None:
    """SwarmUI: ``{"sui_image_params": {prompt, negativeprompt, model, seed, …}, …}``."""
    params = data.get("sui_image_params")
    if not isinstance(params, dict):
        return None
    extra = data.get("sui_extra_data")
    settings = flat_settings(params, drop=("prompt", "negativeprompt"))
    if isinstance(extra, dict):
        settings |= {k: v for k, v in flat_settings(extra).items() if k not in settings}
    sampler = (
        params.get("sampler") or params.get("comfyuisampler") or params.get("autowebuisampler")
    )
    return _meta(
        "swarmui",
        params.get("prompt"),
        params.get("negativeprompt"),
        settings,
        model_name=params.get("model"),
        seed=params.get("seed"),
        steps=params.get("steps"),
        sampler=sampler,
        cfg_scale=params.get("cfgscale"),
        width=params.get("width"),
        height=params.get("height"),
    )


def parse_fooocus(data: Mapping[str, Any]) -> ImageMeta | None:
    """Fooocus's ``fooocus`` scheme: ``{prompt, negative_prompt, base_model, resolution, …}``."""
    version = as_text(data.get("version")).lower()
    if "prompt" not in data or not ("base_model" in data or version.startswith("fooocus")):
        return None
    width, height = parse_size(data.get("resolution"))
    return _meta(
        "fooocus",
        data.get("prompt"),
        data.get("negative_prompt"),
        flat_settings(data, drop=("prompt", "negative_prompt")),
        model_name=data.get("base_model"),
        seed=data.get("seed"),
        steps=data.get("steps"),
        sampler=data.get("sampler"),
        cfg_scale=data.get("guidance_scale", data.get("cfg")),
        width=width or data.get("width"),
        height=height or data.get("height"),
    )


def parse_easydiffusion(data: Mapping[str, Any]) -> ImageMeta | None:
    """Easy Diffusion: one text field per setting (PNG) or one JSON object (JPEG, WebP)."""
    key = {k: k for k in _ED_KEYS} if "prompt" in data else _ED_KEYS
    marks = (key["negative_prompt"], key["use_stable_diffusion_model"], key["guidance_scale"])
    if key["prompt"] not in data or not any(m in data for m in marks):
        return None
    model = _none(data.get(key["use_stable_diffusion_model"]))
    return _meta(
        "easydiffusion",
        data.get(key["prompt"]),
        _none(data.get(key["negative_prompt"])),
        flat_settings(data, drop=(key["prompt"], key["negative_prompt"])),
        model_name=PureWindowsPath(model).name if isinstance(model, str) else "",
        seed=data.get(key["seed"]),
        steps=data.get(key["num_inference_steps"]),
        sampler=data.get(key["sampler_name"]),
        cfg_scale=data.get(key["guidance_scale"]),
        width=data.get(key["width"]),
        height=data.get(key["height"]),
    )


def parse_drawthings(data: Mapping[str, Any]) -> ImageMeta | None:
    """Draw Things: ``{"c": prompt, "uc": negative, "seed", "steps", "scale", "size", …}``."""
    if not isinstance(data.get("c"), str) or "uc" not in data:
        return None
    width, height = parse_size(data.get("size"))
    return _meta(
        "drawthings",
        data["c"],
        data.get("uc"),
        flat_settings(data, drop=("c", "uc")),
        model_name=data.get("model"),
        seed=data.get("seed"),
        steps=data.get("steps"),
        sampler=data.get("sampler"),
        cfg_scale=data.get("scale"),
        width=width,
        height=height,
    )


def drawthings_xmp(xmp: str) -> ImageMeta | None:
    """Draw Things keeps its JSON in the XMP packet's ``exif:UserComment``."""
    match = _XMP_COMMENT.search(xmp)
    if not match:
        return None
    data = load_json(html.unescape(match[1] if match[1] is not None else match[2]))
    return parse_drawthings(data) if isinstance(data, dict) else None


def parse_novelai(texts: Mapping[str, str]) -> ImageMeta | None:
    """NovelAI: ``Description`` (prompt), ``Source`` (model) and a ``Comment`` JSON object with
    ``uc`` (negative), steps, seed, sampler, scale — as PNG text chunks or stealth data."""
    comment = load_json(texts.get("Comment"))
    if not isinstance(comment, dict) or "uc" not in comment:
        return None
    if texts.get("Software") != "NovelAI" and "Description" not in texts:
        return None
    prompt = comment.get("prompt") or texts.get("Description")
    settings = flat_settings(comment, drop=("prompt", "uc"))
    settings |= {k: v for k, v in texts.items() if k in ("Source", "Software", "Generation time")}
    return _meta(
        "novelai",
        prompt,
        comment.get("uc"),
        settings,
        model_name=texts.get("Source"),
        seed=comment.get("seed"),
        steps=comment.get("steps"),
        sampler=comment.get("sampler"),
        cfg_scale=comment.get("scale"),
        width=comment.get("width"),
        height=comment.get("height"),
    )


def _none(value: Any) -> Any:
    """Easy Diffusion's text fields say ``None`` for unset values."""
    return None if value in (None, "None", "") else value


def _meta(tool: str, prompt: Any, negative: Any, settings: dict, **fields: Any) -> ImageMeta | None:
    text = as_text(prompt)
    if not text or looks_like_data(text):
        return None
    return ImageMeta(text, as_text(negative), settings, tool, **fields)
