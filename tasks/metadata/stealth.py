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

from promptlake.tasks.metadata.png import PngFile, first_rows, gunzip

SIGNATURES = {
    b"stealth_pnginfo": ("alpha", False),
    b"stealth_pngcomp": ("alpha", True),
    b"stealth_rgbinfo": ("rgb", False),
    b"stealth_rgbcomp": ("rgb", True),
}
SIGNATURE_BITS, LENGTH_BITS = 120, 32
# the first 40 pixels hold a whole signature in rgb mode and its first 5 bytes in alpha mode:
# enough to turn away almost every image after decoding 40 rows
FIRST_PIXELS = 40
MAX_PAYLOAD = 4 << 20  # bytes, before and after gunzip: generation text is a few KiB


def read_stealth(data: bytes, png: PngFile, *, max_pixels: int) -> str | None:
    """The text hidden in a PNG's pixels, or None when there is none (or it is broken)."""
    head = png.header
    if head.channels is None or head.width * head.height > max_pixels:
        return None
    first = _pixels(png, FIRST_PIXELS)
    if first is None:
        return None
    modes = [
        m for m in (("alpha", "rgb") if head.channels == 4 else ("rgb",)) if _could_be(first, m)
    ]
    pixels = _decode(data) if modes else None
    if pixels is None:
        return None
    for mode in modes:
        text = _payload(pixels, mode)
        if text is not None:
            return text
    return None


def _pixels(png: PngFile, count: int) -> np.ndarray | None:
    """The first ``count`` pixels in writing order, as rows x columns x channels."""
    height = png.header.height
    rows = first_rows(png, rows=min(height, count), columns=math.ceil(count / height))
    if rows is None:
        return None
    channels = png.header.channels or 0
    return np.frombuffer(b"".join(rows), np.uint8).reshape(len(rows), -1, channels)


def _could_be(first: np.ndarray, mode: str) -> bool:
    """Whether the first pixels' low bits begin a signature of ``mode``."""
    bits = _bits(first, mode)[:SIGNATURE_BITS]
    start = np.packbits(bits[: len(bits) // 8 * 8]).tobytes()
    return any(sig.startswith(start) and m == mode for sig, (m, _) in SIGNATURES.items())


def _payload(pixels: np.ndarray, mode: str) -> str | None:
    """The text after a signature of ``mode`` in decoded pixels, or None."""
    per_pixel, height = (1 if mode == "alpha" else 3), pixels.shape[0]
    header = SIGNATURE_BITS + LENGTH_BITS
    bits = _bits(pixels[:, : math.ceil(math.ceil(header / per_pixel) / height)], mode)
    signature = SIGNATURES.get(np.packbits(bits[:SIGNATURE_BITS]).tobytes())
    if signature is None or signature[0] != mode:
        return None
    length = int.from_bytes(np.packbits(bits[SIGNATURE_BITS:header]).tobytes(), "big")
    total, room = header + length, pixels.shape[0] * pixels.shape[1] * per_pixel
    if not 0 < length <= MAX_PAYLOAD * 8 or length % 8 or total > room:
        return None
    columns = math.ceil(math.ceil(total / per_pixel) / height)
    payload = np.packbits(_bits(pixels[:, :columns], mode)[header:total]).tobytes()
    raw = gunzip(payload, MAX_PAYLOAD) if signature[1] else payload
    try:
        return raw.decode("utf-8") if raw else None
    except UnicodeDecodeError:
        return None


def _decode(data: bytes) -> np.ndarray | None:
    """The decoded image as height x width x channels."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return np.asarray(img) if img.mode in ("RGB", "RGBA") else None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _bits(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Low bits in writing order: down each column, columns left to right (R, G, B per pixel
    in rgb mode)."""
    if mode == "alpha":
        return (pixels[:, :, 3].T & 1).ravel()
    return (pixels[:, :, :3].transpose(1, 0, 2) & 1).ravel()
