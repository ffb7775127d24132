"""AUTOMATIC1111's ``parameters`` text, which Forge, SD.Next, Fooocus (its a1111 scheme) and
ComfyUI save nodes write too: prompt lines, ``Negative prompt:`` lines, then one settings line
of ``Key: value`` pairs (values with commas, colons or newlines JSON-quoted)."""

from __future__ import annotations

import json
import re

from promptlake.tasks.metadata.record import (
    ImageMeta,
    as_float,
    as_int,
    looks_like_data,
    parse_size,
)

# A1111's own pattern (modules/infotext_utils.py): a key, then a quoted or a plain value
_SETTING = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_NEGATIVE = "Negative prompt:"


def parse_a1111(text: str, *, bare: bool = True) -> ImageMeta | None:
    """Split A1111 text into prompt, negative prompt and settings; None when it has no prompt
    (a settings line alone, or a JSON blob, is not a prompt). ``bare=False`` also refuses text
    with neither a settings line nor a negative prompt: where any program may have written a
    comment (EXIF), plain text is not evidence of a generator."""
    lines = text.strip().replace("\r\n", "\n").split("\n")
    settings: dict[str, str] = {}
    # like A1111: the last line is the settings line when it holds at least three pairs (or,
    # as this project's own writers do with fewer, starts with the steps); unlike A1111 it must
    # start with one, so a one-line prompt of weighted terms "(cat:1.2), (dog:1.1)…" stays one
    pairs = _SETTING.findall(lines[-1]) if _SETTING.match(lines[-1]) else []
    if len(pairs) >= 3 or re.match(r"Steps: \d+", lines[-1]):
        lines.pop()
        settings = {k.strip(): _unquote(v.strip()) for k, v in pairs}
    prompt_lines: list[str] = []
    negative: list[str] = []
    target = prompt_lines
    for line in lines:
        if line.startswith(_NEGATIVE):
            target = negative
            line = line.removeprefix(_NEGATIVE).strip()
        target.append(line)
    prompt = "\n".join(prompt_lines).strip()
    if not prompt or looks_like_data(prompt) or not (bare or settings or negative):
        return None
    width, height = parse_size(settings.get("Size"))
    return ImageMeta(
        prompt,
        "\n".join(negative).strip(),
        settings,
        tool=a1111_tool(settings),
        model_name=settings.get("Model", ""),
        seed=as_int(settings.get("Seed")),
        steps=as_int(settings.get("Steps")),
        sampler=settings.get("Sampler", ""),
        cfg_scale=as_float(settings.get("CFG scale")),
        width=width,
        height=height,
    )


def a1111_tool(settings: dict[str, str]) -> str:
    """Which web UI wrote a settings line: SD.Next says ``App: SD.Next`` (older ones a
    ``Backend``), Forge's version starts ``f<digit>`` (``f2.0.1v1.10.1-…``), Fooocus's
    ``Fooocus v…``; anything else is A1111."""
    version = settings.get("Version", "").strip().lower()
    if settings.get("App", "").strip().lower() == "sd.next" or "Backend" in settings:
        return "sdnext"
    if re.match(r"f\d", version) or version.startswith(("forge", "neo", "classic")):
        return "forge"
    if version.startswith("fooocus"):
        return "fooocus"
    return "a1111"


def _unquote(value: str) -> str:
    """A1111 JSON-quotes values that hold commas, colons or newlines."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            out = json.loads(value)
        except ValueError:
            return value[1:-1]
        return out if isinstance(out, str) else value[1:-1]
    return value


def format_a1111(meta: ImageMeta) -> str:
    """``meta`` as A1111's ``parameters`` text (the inverse of ``parse_a1111``)."""
    lines = [meta.prompt]
    if meta.negative_prompt:
        lines.append(f"{_NEGATIVE} {meta.negative_prompt}")
    if meta.settings:
        lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in meta.settings.items()))
    return "\n".join(lines)


def _quote(value: str) -> str:
    """Like A1111's ``quote``: JSON-quote a value that would break the settings line."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",\n:") else text
