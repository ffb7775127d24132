"""Decode, check, resize and re-encode one downloaded image."""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

_FORMATS = {"jpeg": "JPEG", "webp": "WEBP", "png": "PNG"}
_FILTERS = {
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


# What Pillow raises on broken image data (truncated streams, bad headers, malformed EXIF, see
# Pillow issues 3973, 8348, 8965): the row's problem. Anything else, from our own code, the
# encoder or a setting, is a bug and fails the shard.
DECODER_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
)


class ImageProblem(Exception):
    """A body that is not a usable image; ``status`` is the row status to record."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ProcessedImage:
    data: bytes
    width: int
    height: int
    orig_width: int
    orig_height: int


def process_image(
    body: bytes,
    *,
    size: int,
    fmt: str = "jpeg",
    quality: int = 90,
    max_pixels: int = 64_000_000,
    resample: str = "box",
) -> ProcessedImage:
    """Decode ``body``, shrink its shorter side to ``size`` (never enlarging), re-encode it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img: Image.Image = Image.open(io.BytesIO(body))
        except UnidentifiedImageError as exc:
            raise ImageProblem("not_image", "body is not a recognised image format") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageProblem("too_large", f"decompression bomb guard: {exc}") from exc
    orig_w, orig_h = img.size
    if orig_w * orig_h > max_pixels:
        raise ImageProblem("too_large", f"{orig_w}x{orig_h} exceeds {max_pixels} pixels")
    if min(orig_w, orig_h) < 1:
        raise ImageProblem("decode_error", f"image claims a size of {orig_w}x{orig_h}")
    scale = size / min(orig_w, orig_h)
    try:
        # JPEG draft mode decodes at a reduced scale directly: much cheaper than decode + resize
        img.draft("RGB", (max(size, round(orig_w * scale)), max(size, round(orig_h * scale))))
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of the decoded pixels
        img = _to_rgb(img)
    except DECODER_ERRORS as exc:
        raise ImageProblem("decode_error", f"image data is broken: {exc}") from exc
    w, h = img.size
    scale = size / min(w, h)
    if scale < 1:
        target = (max(1, round(w * scale)), max(1, round(h * scale)))
        # Pillow's filters antialias when shrinking; reducing_gap pre-shrinks big images by box
        img = img.resize(target, _FILTERS[resample], reducing_gap=3.0)
    out = io.BytesIO()
    img.save(out, format=_FORMATS[fmt], quality=quality)
    return ProcessedImage(out.getvalue(), img.width, img.height, orig_w, orig_h)


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with transparency flattened onto white (what a viewer would show)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return img.convert("RGB")
