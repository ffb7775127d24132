"""metadata: the exact prompt (and sampler settings) that generated images carry.

AUTOMATIC1111 writes a ``parameters`` text chunk in PNGs and an EXIF UserComment in JPEG/WebP;
ComfyUI writes ``prompt`` (its API graph) and ``workflow`` (its editor graph) JSON chunks.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError

from promptlake.storage.store import Hit

EXIF_IFD, USER_COMMENT = 0x8769, 0x9286
_SETTING = re.compile(r'\s*([A-Za-z][\w ./()-]*?):\s*("(?:[^"\\]|\\.)*"|[^,]*)(?:,|$)')
_TEXT_NODES = ("CLIPTextEncode", "CLIPTextEncodeSDXL", "CLIPTextEncodeSD3")


@dataclass
class ImageMeta:
    """A prompt read from an image file, with the tool that wrote it."""

    prompt: str
    negative_prompt: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    tool: str = "a1111"  # a1111 or comfyui

    def as_hit(self, source: str) -> Hit:
        """The exact prompt as a search hit (distance 0, origin ``metadata:<tool>``)."""
        extra = {"negative_prompt": self.negative_prompt, "settings": self.settings}
        return Hit("", self.prompt, source, 0.0, origin=f"metadata:{self.tool}", extra=extra)


def read_metadata(data: bytes) -> ImageMeta | None:
    """The generation metadata of an image file's bytes, or None when it has none."""
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError):
        return None
    info = _text_chunks(img)
    if info.get("parameters"):
        return parse_a1111(info["parameters"])
    if info.get("prompt") or info.get("workflow"):
        meta = parse_comfy_prompt(info.get("prompt", "")) or parse_comfy_workflow(
            info.get("workflow", "")
        )
        if meta:
            return meta
    comment = _user_comment(img)
    return parse_a1111(comment) if comment else None


def _text_chunks(img: Image.Image) -> dict[str, str]:
    """PNG text chunks; those written after the pixel data appear only once it is read."""
    keys = ("parameters", "prompt", "workflow")
    if img.format == "PNG" and not any(k in img.info for k in keys):
        with contextlib.suppress(OSError, SyntaxError, Image.DecompressionBombError):
            img.load()
    return {k: v for k, v in img.info.items() if isinstance(v, str)}


def _user_comment(img: Image.Image) -> str | None:
    """EXIF UserComment: an 8-byte charset prefix, then the text (A1111 writes UTF-16)."""
    try:
        raw = img.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception:  # a broken EXIF block is no metadata, not a failure
        return None
    if isinstance(raw, str):
        return raw.strip("\x00 ") or None
    if not isinstance(raw, bytes) or len(raw) <= 8:
        return None
    head, body = raw[:8], raw[8:]
    if head.startswith(b"UNICODE"):
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            text = body.decode("utf-16")
        else:  # no BOM: the zero bytes of ASCII letters tell the byte order
            text = body.decode("utf-16-le" if body[1:2] == b"\x00" else "utf-16-be")
    else:
        text = body.decode("utf-8", errors="replace")
    return text.strip("\x00 ") or None


def parse_a1111(text: str) -> ImageMeta | None:
    """Split A1111's ``parameters`` text: prompt lines, ``Negative prompt:``, a settings line."""
    lines = text.strip().split("\n")
    settings: dict[str, str] = {}
    if lines and re.match(r"^Steps: \d+", lines[-1]):
        for key, value in _SETTING.findall(lines.pop()):
            settings[key.strip()] = value.strip().strip('"')
    prompt_lines, negative = [], []
    target = prompt_lines
    for line in lines:
        if line.startswith("Negative prompt:"):
            target = negative
            line = line.removeprefix("Negative prompt:").strip()
        target.append(line)
    prompt = "\n".join(prompt_lines).strip()
    if not prompt:
        return None
    return ImageMeta(prompt, "\n".join(negative).strip(), settings, "a1111")


def parse_comfy_prompt(text: str) -> ImageMeta | None:
    """ComfyUI's API graph: the text encoders wired to a sampler's positive/negative inputs."""
    graph = _json(text)
    if not isinstance(graph, dict):
        return None
    nodes = {k: v for k, v in graph.items() if isinstance(v, dict)}
    texts = {k: _node_text(n) for k, n in nodes.items() if n.get("class_type") in _TEXT_NODES}
    texts = {k: t for k, t in texts.items() if t}
    if not texts:
        return None
    sampler = next((n for n in nodes.values() if "positive" in n.get("inputs", {})), None)
    settings: dict[str, str] = {}
    positive, negative = next(iter(texts.values())), ""
    if sampler:
        inputs = sampler["inputs"]
        positive = texts.get(_link(inputs.get("positive")), positive)
        negative = texts.get(_link(inputs.get("negative")), "")
        keys = ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")
        settings = {k: str(inputs[k]) for k in keys if not isinstance(inputs.get(k), (list, dict))}
    return ImageMeta(positive, negative, settings, "comfyui")


def parse_comfy_workflow(text: str) -> ImageMeta | None:
    """ComfyUI's editor graph (no wiring kept here): the first text encoder's text."""
    graph = _json(text)
    nodes = graph.get("nodes", []) if isinstance(graph, dict) else []
    for node in nodes:
        values = node.get("widgets_values") if isinstance(node, dict) else None
        if node.get("type") in _TEXT_NODES and values and isinstance(values[0], str):
            return ImageMeta(values[0].strip(), tool="comfyui")
    return None


def _node_text(node: dict[str, Any]) -> str:
    inputs = node.get("inputs", {})
    for key in ("text", "text_g", "clip_l"):
        if isinstance(inputs.get(key), str) and inputs[key].strip():
            return inputs[key].strip()
    return ""


def _link(value: Any) -> str | None:
    """A ComfyUI input wired to another node is ``[node_id, output_index]``."""
    return str(value[0]) if isinstance(value, list) and value else None


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def format_a1111(meta: ImageMeta) -> str:
    """``meta`` as A1111's ``parameters`` text (the inverse of ``parse_a1111``)."""
    lines = [meta.prompt]
    if meta.negative_prompt:
        lines.append(f"Negative prompt: {meta.negative_prompt}")
    if meta.settings:
        lines.append(", ".join(f"{k}: {v}" for k, v in meta.settings.items()))
    return "\n".join(lines)


def save_with_metadata(img: Image.Image, meta: ImageMeta, fmt: str = "png") -> bytes:
    """Encode ``img`` carrying ``meta`` the way A1111 does: a PNG ``parameters`` chunk, or an
    EXIF UserComment (UTF-16) in JPEG/WebP."""
    out = io.BytesIO()
    if fmt == "png":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("parameters", format_a1111(meta))
        img.save(out, "PNG", pnginfo=info)
        return out.getvalue()
    if fmt not in ("jpeg", "webp"):
        raise ValueError(f"metadata format must be png, jpeg or webp, got {fmt!r}")
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = b"UNICODE\x00" + format_a1111(meta).encode("utf-16-be")
    img.convert("RGB").save(out, fmt.upper(), exif=exif, quality=90)
    return out.getvalue()
