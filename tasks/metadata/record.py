"""The record every metadata reader returns, and the rules that normalise raw values into it."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from promptlake.storage.store import Hit

TOOLS = (
    "a1111",
    "forge",
    "sdnext",
    "comfyui",
    "invokeai",
    "novelai",
    "fooocus",
    "swarmui",
    "easydiffusion",
    "drawthings",
)
_SIZE = re.compile(r"^\s*\(?\s*(\d{1,6})\s*[x×,]\s*(\d{1,6})\s*\)?\s*$")


@dataclass
class ImageMeta:
    """What an image file says about how it was made.

    ``settings`` is the tool's own key → value map, as written; the fields after ``tool`` are
    the same facts normalised across tools ("" or None when the file does not say). ``prompts``
    holds every distinct (prompt, negative) pair the image used, the main one first: several
    for a ComfyUI graph with several samplers, else just the main pair."""

    prompt: str
    negative_prompt: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    tool: str = "a1111"
    # derived from the above: two records with the same prompts, settings and tool are equal
    model_name: str = field(default="", compare=False)
    seed: int | None = field(default=None, compare=False)
    steps: int | None = field(default=None, compare=False)
    sampler: str = field(default="", compare=False)
    cfg_scale: float | None = field(default=None, compare=False)
    width: int | None = field(default=None, compare=False)
    height: int | None = field(default=None, compare=False)
    prompts: list[tuple[str, str]] = field(default_factory=list, compare=False)

    def __post_init__(self) -> None:
        if self.tool not in TOOLS:
            raise ValueError(f"unknown tool {self.tool!r}: use one of {', '.join(TOOLS)}")
        # readers hand raw values (strings, floats from JSON): coerce them here, once
        self.seed, self.steps = as_int(self.seed), as_int(self.steps)
        self.width, self.height = as_int(self.width), as_int(self.height)
        self.cfg_scale = as_float(self.cfg_scale)
        self.model_name, self.sampler = as_text(self.model_name), as_text(self.sampler)
        self.prompts = [(p, n) for p, n in self.prompts] or [(self.prompt, self.negative_prompt)]

    def as_hit(self, source: str) -> Hit:
        """The exact prompt as a search hit (distance 0, origin ``metadata:<tool>``)."""
        extra = {
            "seed": self.seed,
            "steps": self.steps,
            "sampler": self.sampler,
            "cfg_scale": self.cfg_scale,
            "width": self.width,
            "height": self.height,
            "prompts": [list(p) for p in self.prompts],
        }
        return Hit(
            "",
            self.prompt,
            source,
            0.0,
            origin=f"metadata:{self.tool}",
            negative_prompt=self.negative_prompt,
            model_name=self.model_name,
            tool=self.tool,
            settings=self.settings,
            extra=extra,
        )


def as_int(value: Any) -> int | None:
    """An integer from an int, a whole float or a numeric string; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,30}\s*", value):
        return int(value)
    return None


def as_float(value: Any) -> float | None:
    """A finite float from a number or a numeric string; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def as_text(value: Any) -> str:
    """A stripped string; "" for None and for values that are not text or numbers."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return ""


def parse_size(value: Any) -> tuple[int | None, int | None]:
    """``512x768``, ``(768, 1280)`` or ``[768, 1280]`` as (width, height)."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return as_int(value[0]), as_int(value[1])
    match = _SIZE.match(value) if isinstance(value, str) else None
    return (int(match[1]), int(match[2])) if match else (None, None)


def flat_settings(data: Mapping[str, Any], drop: Iterable[str] = ()) -> dict[str, str]:
    """A JSON object as the string → string settings map: nested values as compact JSON."""
    skip = set(drop)
    out = {}
    for key, value in data.items():
        if key in skip or value is None:
            continue
        out[str(key)] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return out


def load_json(text: Any, *, limit: int = 16 << 20) -> Any:
    """JSON from text, or None when it is not JSON (or absurdly large)."""
    if not isinstance(text, (str, bytes)) or not text or len(text) > limit:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def looks_like_data(text: str) -> bool:
    """True when text is a JSON object or array: a settings blob, never a prompt."""
    stripped = text.strip()
    return stripped[:1] in "{[" and isinstance(load_json(stripped), (dict, list))


def pick(data: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, Any]:
    """ImageMeta's normalised fields from a tool's JSON: ``keys`` maps each field to the
    tool's own name for it (``{"cfg_scale": "scale", …}``)."""
    return {name: data.get(key) for name, key in keys.items()}


def build(tool: str, prompt: Any, negative: Any, settings: dict, **fields: Any) -> ImageMeta | None:
    """An ImageMeta, or None when the prompt is empty or is itself a JSON blob."""
    text = as_text(prompt)
    if not text or looks_like_data(text):
        return None
    return ImageMeta(text, as_text(negative), settings, tool, **fields)
