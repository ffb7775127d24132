"""metadata: the prompt, negative prompt and settings that generated images carry.

The entry point for every reader: it finds where a file keeps its metadata (PNG text chunks,
EXIF, XMP, a JPEG comment, or stealth bits in the pixels) and hands it to the reader of the
tool that writes it that way — AUTOMATIC1111, Forge, SD.Next, ComfyUI, InvokeAI, NovelAI,
Fooocus, SwarmUI, Easy Diffusion, Draw Things. A file no reader recognises has no metadata
(None): a JSON blob or a settings line is never returned as a prompt.

One module per container or tool family: ``png`` (chunks read from the bytes), ``stealth``
(bits in the pixels), ``a1111`` (the ``parameters`` text, read and written), ``comfyui`` and
``comfyui_workflow`` (API and editor graphs), ``invokeai``, ``json_tools`` (Fooocus, SwarmUI,
Easy Diffusion, Draw Things, NovelAI) and ``record`` (what every reader returns). No Prefect.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import warnings
import zlib
from collections.abc import Mapping

from PIL import Image, UnidentifiedImageError

from promptlake.settings import Settings
from promptlake.tasks.metadata.a1111 import format_a1111, parse_a1111
from promptlake.tasks.metadata.comfyui import parse_comfy_graph
from promptlake.tasks.metadata.comfyui_workflow import workflow_to_graph
from promptlake.tasks.metadata.invokeai import parse_invokeai
from promptlake.tasks.metadata.json_tools import (
    drawthings_xmp,
    parse_easydiffusion,
    parse_json,
    parse_novelai,
)
from promptlake.tasks.metadata.png import read_png
from promptlake.tasks.metadata.record import TOOLS, ImageMeta, load_json
from promptlake.tasks.metadata.stealth import read_stealth

__all__ = [
    "EXIF_IFD",
    "TOOLS",
    "USER_COMMENT",
    "ImageMeta",
    "format_a1111",
    "parse_a1111",
    "read_metadata",
    "save_with_metadata",
]

EXIF_IFD, USER_COMMENT, EXIF_MODEL = 0x8769, 0x9286, 0x0110
_MAX_PIXELS = Settings.model_fields["max_image_pixels"].default
_CHARSETS = (b"ASCII\0\0\0", b"JIS\0\0\0\0\0", b"\0" * 8)
# what a hostile or broken file can make a parser raise: it means "no metadata"
_BROKEN: tuple[type[Exception], ...] = (ValueError, TypeError, KeyError, IndexError, AttributeError)
_BROKEN += (RecursionError, OverflowError, zlib.error, struct.error, UnicodeError, OSError)
_BROKEN += (SyntaxError,)


def read_metadata(data: bytes, *, max_pixels: int = _MAX_PIXELS) -> ImageMeta | None:
    """The generation metadata of an image file's bytes, or None when it has none.

    Pixels are decoded only for a PNG with no text metadata, and then only the first few of
    the first rows, unless they start with a stealth signature. ``max_pixels`` bounds that."""
    try:
        with warnings.catch_warnings():  # Pillow warns about broken EXIF: here that means None
            warnings.simplefilter("ignore")
            png = read_png(data)
            if png is None:
                return _from_other(data)
            meta = from_texts(png.texts) or from_exif(png.exif)
            if meta is None and (hidden := read_stealth(data, png, max_pixels=max_pixels)):
                meta = _from_hidden(hidden)
            return meta
    except _BROKEN:
        return None


def from_texts(texts: Mapping[str, str]) -> ImageMeta | None:
    """Metadata from named text fields (PNG text chunks; NovelAI's stealth JSON)."""
    if not texts:
        return None
    meta = _from_parameters(texts)
    if meta is None:
        meta = parse_invokeai(texts) or parse_novelai(texts) or parse_easydiffusion(texts)
    if meta is None:
        meta = _from_comfyui(texts)
    if meta is None and "Comment" in texts:  # early Fooocus builds wrote their JSON here
        meta = parse_json(load_json(texts["Comment"]))
    if meta is None and "XML:com.adobe.xmp" in texts:
        meta = drawthings_xmp(texts["XML:com.adobe.xmp"])
    return meta


def _from_parameters(texts: Mapping[str, str]) -> ImageMeta | None:
    """``parameters``: A1111-style text (A1111, Forge, SD.Next, Fooocus, ComfyUI save nodes)
    or a JSON object (SwarmUI, Fooocus)."""
    text = texts.get("parameters")
    if not text:
        return None
    data = load_json(text)
    if data is not None:
        return parse_json(data)
    meta = parse_a1111(text)
    graph = _from_comfyui(texts) if meta and "prompt" in texts else None
    if meta is None or graph is None:
        return meta
    pairs = [p for p in graph.prompts if p != (meta.prompt, meta.negative_prompt)]
    return dataclasses.replace(meta, tool="comfyui", prompts=[meta.prompts[0], *pairs])


def _from_comfyui(texts: Mapping[str, str]) -> ImageMeta | None:
    """ComfyUI's API graph, else its editor graph resolved through its links."""
    meta = parse_comfy_graph(load_json(texts.get("prompt")))
    if meta is None and "workflow" in texts:
        meta = parse_comfy_graph(workflow_to_graph(load_json(texts["workflow"])))
    return meta


def from_exif(raw: bytes | None) -> ImageMeta | None:
    """Metadata from an EXIF block: the UserComment (A1111, Forge, SD.Next, Fooocus, SwarmUI,
    Easy Diffusion write it there), or SwarmUI's older JSON in the camera model tag."""
    if not raw:
        return None
    exif = Image.Exif()
    exif.load(raw)
    comments = (exif.get_ifd(EXIF_IFD).get(USER_COMMENT), exif.get(USER_COMMENT))
    for text in map(user_comment, comments):
        meta = from_blob(text) if text else None
        if meta is not None:
            return meta
    model = exif.get(EXIF_MODEL)  # a camera's name, or SwarmUI's JSON in older versions
    return parse_json(load_json(model.strip())) if isinstance(model, str) else None


def from_blob(text: str) -> ImageMeta | None:
    """One text holding everything: a JSON object some tool wrote, or A1111 text."""
    data = load_json(text.strip())
    if data is None:
        return parse_a1111(text, bare=False)
    return parse_json(data) if isinstance(data, dict) else None


def _from_hidden(text: str) -> ImageMeta | None:
    """Stealth data: A1111 ``parameters`` text, or NovelAI's JSON of its PNG text fields."""
    data = load_json(text)
    if not isinstance(data, dict):
        return from_texts({"parameters": text})
    fields = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
    return from_texts(fields)


def _from_other(data: bytes) -> ImageMeta | None:
    """JPEG, WebP and whatever else Pillow opens: EXIF, then XMP, then a JPEG comment."""
    try:
        with Image.open(io.BytesIO(data)) as img:  # no pixels are decoded here
            info = dict(img.info)
    except (UnidentifiedImageError, Image.DecompressionBombError):
        return None
    exif = info.get("exif")
    meta = from_exif(exif if isinstance(exif, bytes) else None)
    xmp = info.get("xmp")
    if meta is None and isinstance(xmp, (bytes, str)):
        meta = drawthings_xmp(xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else xmp)
    comment = info.get("comment")
    if meta is None and isinstance(comment, (bytes, str)):
        text = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else comment
        meta = from_blob(text) if text.strip() else None
    return meta


def user_comment(raw: object) -> str | None:
    """EXIF UserComment: an 8-byte charset prefix, then the text (A1111 writes UTF-16 with
    ``UNICODE``; Fooocus writes the text with no prefix at all)."""
    if isinstance(raw, str):
        return raw.strip("\x00 ") or None
    if not isinstance(raw, bytes) or not raw:
        return None
    head, body = raw[:8], raw[8:]
    if head == b"UNICODE\0":
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            text = body.decode("utf-16", errors="replace")
        else:  # no BOM: the zero bytes of ASCII letters tell the byte order
            order = "utf-16-le" if body[1:2] == b"\x00" else "utf-16-be"
            text = body.decode(order, errors="replace")
    elif head in _CHARSETS:
        text = body.decode("utf-8", errors="replace")
    else:
        text = raw.decode("utf-8", errors="replace")
    return text.strip("\x00 ") or None


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
