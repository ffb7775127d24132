"""InvokeAI's three ways of saving what made an image: ``invokeai_metadata`` (3.x and later, a
JSON object), ``sd-metadata`` (2.x, JSON with the prompt inside ``image``) and ``Dream`` (1.x,
a command line: ``"prompt [negative]" -s steps -S seed -W w -H h -C cfg -A sampler``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from promptlake.tasks.meta_record import ImageMeta, as_text, flat_settings, load_json

_NEGATIVE = re.compile(r"\[([^\[\]]*)\]")
_DREAM = re.compile(r'^\s*"(.*?)"(?=\s+-\w|\s*$)(.*)$', re.S)
_OPTION = re.compile(r"(?:^|\s)-(\w+)\s+([^\s-]\S*)")
_DREAM_KEYS = {"s": "steps", "S": "seed", "W": "width", "H": "height", "C": "cfg_scale"}


def parse_invokeai(texts: Mapping[str, str]) -> ImageMeta | None:
    """The newest of InvokeAI's formats present in a PNG's text chunks, or None."""
    if "invokeai_metadata" in texts:
        return _metadata(load_json(texts["invokeai_metadata"]))
    if "sd-metadata" in texts:
        return _sd_metadata(load_json(texts["sd-metadata"])) or _dream(texts.get("Dream", ""))
    if "Dream" in texts:
        return _dream(texts["Dream"])
    return None


def _metadata(data: Any) -> ImageMeta | None:
    if not isinstance(data, dict) or not isinstance(data.get("positive_prompt"), str):
        return None
    model = data.get("model")
    name = model.get("name") or model.get("model_name") if isinstance(model, dict) else model
    return _meta(
        data["positive_prompt"],
        data.get("negative_prompt"),
        flat_settings(data, drop=("positive_prompt", "negative_prompt")),
        model_name=name,
        seed=data.get("seed"),
        steps=data.get("steps"),
        sampler=data.get("scheduler"),
        cfg_scale=data.get("cfg_scale"),
        width=data.get("width"),
        height=data.get("height"),
    )


def _sd_metadata(data: Any) -> ImageMeta | None:
    image = data.get("image") if isinstance(data, dict) else None
    if not isinstance(image, dict):
        return None
    prompt = image.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
        prompt = prompt[0].get("prompt")
    if not isinstance(prompt, str):
        return None
    positive, negative = split_negative(prompt)
    settings = flat_settings(data, drop=("image",)) | flat_settings(image, drop=("prompt",))
    return _meta(
        positive,
        negative,
        settings,
        model_name=data.get("model_weights"),
        seed=image.get("seed"),
        steps=image.get("steps"),
        sampler=image.get("sampler"),
        cfg_scale=image.get("cfg_scale"),
        width=image.get("width"),
        height=image.get("height"),
    )


def _dream(text: str) -> ImageMeta | None:
    match = _DREAM.match(text)
    if not match:
        return None
    positive, negative = split_negative(match[1])
    options = dict(_OPTION.findall(match[2]))
    named = {_DREAM_KEYS[k]: v for k, v in options.items() if k in _DREAM_KEYS}
    return _meta(positive, negative, options, sampler=options.get("A"), **named)


def split_negative(prompt: str) -> tuple[str, str]:
    """InvokeAI's ``positive [negative]`` syntax: bracketed parts are the negative prompt."""
    parts = _NEGATIVE.findall(prompt)
    if not parts:
        return prompt.strip(), ""
    negative = ", ".join(p.strip() for p in parts if p.strip())
    return re.sub(r" {2,}", " ", _NEGATIVE.sub(" ", prompt)).strip(), negative


def _meta(prompt: Any, negative: Any, settings: dict[str, str], **fields: Any) -> ImageMeta | None:
    prompt = as_text(prompt)
    if not prompt:
        return None
    return ImageMeta(prompt, as_text(negative), settings, "invokeai", **fields)
