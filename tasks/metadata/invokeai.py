"""InvokeAI's three ways of saving what made an image: ``invokeai_metadata`` (3.x and later, a
JSON object), ``sd-metadata`` (2.x, JSON with the prompt inside ``image``) and ``Dream`` (1.x,
a command line: ``"prompt [negative]" -s steps -S seed -W w -H h -C cfg -A sampler``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from promptlake.tasks.metadata.record import ImageMeta, build, flat_settings, load_json, pick

_NEGATIVE = re.compile(r"\[([^\[\]]*)\]")
_DREAM = re.compile(r'^\s*"(.*?)"(?=\s+-\w|\s*$)(.*)$', re.S)
_OPTION = re.compile(r"(?:^|\s)-(\w+)\s+([^\s-]\S*)")
_DREAM_KEYS = {"s": "steps", "S": "seed", "W": "width", "H": "height", "C": "cfg_scale"}
_FIELDS = {"seed": "seed", "steps": "steps", "cfg_scale": "cfg_scale"}
_FIELDS |= {"width": "width", "height": "height"}


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
    settings = flat_settings(data, drop=("positive_prompt", "negative_prompt"))
    fields = pick(data, {**_FIELDS, "sampler": "scheduler"})
    negative = data.get("negative_prompt")
    return build("invokeai", data["positive_prompt"], negative, settings, model_name=name, **fields)


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
    fields = pick(image, {**_FIELDS, "sampler": "sampler"})
    return build(
        "invokeai", positive, negative, settings, model_name=data.get("model_weights"), **fields
    )


def _dream(text: str) -> ImageMeta | None:
    match = _DREAM.match(text)
    if not match:
        return None
    positive, negative = split_negative(match[1])
    options = dict(_OPTION.findall(match[2]))
    named = {_DREAM_KEYS[k]: v for k, v in options.items() if k in _DREAM_KEYS}
    return build("invokeai", positive, negative, options, sampler=options.get("A"), **named)


def split_negative(prompt: str) -> tuple[str, str]:
    """InvokeAI's ``positive [negative]`` syntax: bracketed parts are the negative prompt."""
    parts = _NEGATIVE.findall(prompt)
    if not parts:
        return prompt.strip(), ""
    negative = ", ".join(p.strip() for p in parts if p.strip())
    return re.sub(r" {2,}", " ", _NEGATIVE.sub(" ", prompt)).strip(), negative
