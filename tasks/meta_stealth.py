"""Stealth metadata: generation text hidden in the lowest bit of each pixel.

The sd-webui-stealth-pnginfo extension (A1111, Forge; built into some forks) and NovelAI write
it: a 15-byte signature, a 32-bit big-endian payload length in bits, then the payload (UTF-8,
or gzip when the signature ends in ``comp``). Bits run down each column, left to right, in the
alpha channel (``stealth_png*``) or through R, G, B of each pixel (``stealth_rgb*``). Testing
for the signature decodes the first pixels of the first rows only; the whole image is decoded
only when a signature is there."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from promptlake.tasks.meta_png import PngFile, first_rows, gunzip

SIGNATURES = {
    b"stealth_pnginfo": ("alpha", False),
    b"stealth_pngcomp": ("alpha", True),
    b"stealth_rgbinfo": ("rgb", False),
    b"stealth_rgbcomp": ("rgb", True),
}
SIGNATURE_BITS, LENGTH_BITS = 120, 32
MAX_PAYLOAD = 4 << 20  # bytes, before and after gunzip: generation text is a few KiB


def read_stealth(data: bytes, png: PngFile, *, max_pixels: int) -> str | None:
    """The text hidden in a PNG's pixels, or None when there is none (or it is broken)."""
    head = png.header
    if head.channels is None or head.width * head.height > max_pixels:
        return None
    for mode in ("alpha", "rgb") if head.channels == 4 else ("rgb",):
        found = _header(png, mode)
        if found is None:
            continue
        compressed, length = found
        per_pixel = 1 if mode == "alpha" else 3
        total = SIGNATURE_BITS + LENGTH_BITS + length
        room = head.width * head.height * per_pixel
        if not 0 < length <= MAX_PAYLOAD * 8 or length % 8 or total > room:
            return None
        pixels = _decode(data, columns=math.ceil(math.ceil(total / per_pixel) / head.height))
        if pixels is None:
            return None
        payload = np.packbits(_bits(pixels, mode)[total - length : total]).tobytes()
        raw = gunzip(payload, MAX_PAYLOAD) if compressed else payload
        try:
            return raw.decode("utf-8") if raw else None
        except UnicodeDecodeError:
            return None
    return None


def _header(png: PngFile, mode: str) -> tuple[bool, int] | None:
    """(compressed, payload bits) when the signature of ``mode`` is there, else None."""
    per_pixel = 1 if mode == "alpha" else 3
    needed = math.ceil((SIGNATURE_BITS + LENGTH_BITS) / per_pixel)
    height = png.header.height
    rows = first_rows(png, rows=min(height, needed), columns=math.ceil(needed / height))
    if rows is None:
        return None
    channels = png.header.channels or 0
    pixels = np.frombuffer(b"".join(rows), np.uint8).reshape(len(rows), -1, channels)
    bits = _bits(pixels, mode)
    signature = SIGNATURES.get(np.packbits(bits[:SIGNATURE_BITS]).tobytes())
    if signature is None or signature[0] != mode:
        return None
    length = np.packbits(bits[SIGNATURE_BITS : SIGNATURE_BITS + LENGTH_BITS]).tobytes()
    return signature[1], int.from_bytes(length, "big")


def _decode(data: bytes, *, columns: int) -> np.ndarray | None:
    """The first ``columns`` columns of the decoded image (height x columns x channels)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return np.asarray(img)[:, :columns]
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _bits(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Low bits in writing order: down each column, columns left to right (R, G, B per pixel
    in rgb mode)."""
    if mode == "alpha":
        return (pixels[:, :, 3].T & 1).ravel()
    return (pixels[:, :, :3].transpose(1, 0, 2) & 1).ravel()
