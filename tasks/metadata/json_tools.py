"""Tools that save their settings as one JSON object or as named text fields: Fooocus, SwarmUI,
Easy Diffusion, Draw Things and NovelAI. Each reader checks the keys its tool writes and gives
None for any other object: an unknown JSON blob is never taken for a prompt."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from pathlib import PureWindowsPath
from typing import Any

from promptlake.tasks.metadata.record import (
    ImageMeta,
    as_text,
    build,
    flat_settings,
    load_json,
    parse_size,
    pick,
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
# ImageMeta field → the tool's key (Easy Diffusion: its request's field name, above)
_ED_FIELDS = {"seed": "seed", "steps": "num_inference_steps", "sampler": "sampler_name"}
_ED_FIELDS |= {"cfg_scale": "guidance_scale", "width": "width", "height": "height"}
_SWARM_FIELDS = {"model_name": "model", "seed": "seed", "steps": "steps", "cfg_scale": "cfgscale"}
_SWARM_FIELDS |= {"width": "width", "height": "height"}
_SWARM_SAMPLERS = ("sampler", "comfyuisampler", "autowebuisampler")  # newest first
# NovelAI's names, which Draw Things took over with its "c" and "uc"
_NAI_FIELDS = {"model_name": "model", "seed": "seed", "steps": "steps", "sampler": "sampler"}
_NAI_FIELDS |= {"cfg_scale": "scale"}
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
    fields = pick(params, _SWARM_FIELDS)
    fields["sampler"] = next((params[k] for k in _SWARM_SAMPLERS if params.get(k)), "")
    negative = params.get("negativeprompt")
    return build("swarmui", params.get("prompt"), negative, settings, **fields)


def parse_fooocus(data: Mapping[str, Any]) -> ImageMeta | None:
    """Fooocus's ``fooocus`` scheme: ``{prompt, negative_prompt, base_model, resolution, …}``."""
    version = as_text(data.get("version")).lower()
    if "prompt" not in data or not ("base_model" in data or version.startswith("fooocus")):
        return None
    width, height = parse_size(data.get("resolution"))
    fields = pick(
        data, {"model_name": "base_model", "seed": "seed", "steps": "steps", "sampler": "sampler"}
    )
    fields |= {"cfg_scale": data.get("guidance_scale", data.get("cfg"))}
    fields |= {"width": width or data.get("width"), "height": height or data.get("height")}
    settings = flat_settings(data, drop=("prompt", "negative_prompt"))
    return build("fooocus", data.get("prompt"), data.get("negative_prompt"), settings, **fields)


def parse_easydiffusion(data: Mapping[str, Any]) -> ImageMeta | None:
    """Easy Diffusion: one text field per setting (PNG) or one JSON object (JPEG, WebP)."""
    key = {k: k for k in _ED_KEYS} if "prompt" in data else _ED_KEYS
    marks = (key["negative_prompt"], key["use_stable_diffusion_model"], key["guidance_scale"])
    if key["prompt"] not in data or not any(m in data for m in marks):
        return None
    model = _none(data.get(key["use_stable_diffusion_model"]))
    fields = pick(data, {name: key[field] for name, field in _ED_FIELDS.items()})
    fields["model_name"] = PureWindowsPath(model).name if isinstance(model, str) else ""
    settings = flat_settings(data, drop=(key["prompt"], key["negative_prompt"]))
    negative = _none(data.get(key["negative_prompt"]))
    return build("easydiffusion", data.get(key["prompt"]), negative, settings, **fields)


def parse_drawthings(data: Mapping[str, Any]) -> ImageMeta | None:
    """Draw Things: ``{"c": prompt, "uc": negative, "seed", "steps", "scale", "size", …}``."""
    if not isinstance(data.get("c"), str) or "uc" not in data:
        return None
    width, height = parse_size(data.get("size"))
    fields = pick(data, _NAI_FIELDS)
    settings = flat_settings(data, drop=("c", "uc"))
    return build(
        "drawthings", data["c"], data.get("uc"), settings, width=width, height=height, **fields
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
    fields = pick(comment, {**_NAI_FIELDS, "width": "width", "height": "height"})
    fields["model_name"] = texts.get("Source")
    return build("novelai", prompt, comment.get("uc"), settings, **fields)


def _none(value: Any) -> Any:
    """Easy Diffusion's text fields say ``None`` for unset values."""
    return None if value in (None, "None", "") else value
