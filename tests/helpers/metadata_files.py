"""Image files written the way each generator's own code writes its metadata, for the tests."""

from __future__ import annotations

import gzip
import io

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

EXIF_IFD, USER_COMMENT = 0x8769, 0x9286


def picture(size=(48, 40), mode="RGB", seed=0) -> Image.Image:
    """Noisy pixels, so the PNG encoder uses every row filter."""
    rng = np.random.default_rng(seed)
    channels = len(mode)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], channels), np.uint8), mode)


def png(texts: dict[str, str], img: Image.Image | None = None, *, itxt=()) -> bytes:
    """A PNG with these text chunks (``itxt`` keys as iTXt, as Pillow writes non-Latin-1)."""
    info = PngInfo()
    for key, value in texts.items():
        if key in itxt:
            info.add_itxt(key, value)
        else:
            info.add_text(key, value)
    out = io.BytesIO()
    (img or picture()).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def exif_file(fmt="JPEG", *, ifd0=None, exif_ifd=None, xmp: bytes | None = None) -> bytes:
    """A JPEG or WebP with these EXIF tags (main IFD and Exif sub-IFD) and an XMP packet."""
    exif = Image.Exif()
    for tag, value in (ifd0 or {}).items():
        exif[tag] = value
    for tag, value in (exif_ifd or {}).items():
        exif.get_ifd(EXIF_IFD)[tag] = value
    out = io.BytesIO()
    extra = {"xmp": xmp} if xmp else {}
    picture().save(out, fmt, exif=exif, **extra)
    return out.getvalue()


def unicode_comment(text: str, order="utf-16-be") -> bytes:
    """piexif.helper.UserComment.dump(text, encoding="unicode"), as A1111 and others write."""
    return b"UNICODE\x00" + text.encode(order)


def stealth_png(text: str, *, mode="alpha", compressed=True, size=(64, 48)) -> bytes:
    """sd-webui-stealth-pnginfo's add_data, step for step: signature, 32-bit length in bits,
    payload, one bit per pixel down each column (alpha) or three (R, G, B)."""
    sig = f"stealth_{'png' if mode == 'alpha' else 'rgb'}{'info' if not compressed else 'comp'}"
    payload = gzip.compress(text.encode()) if compressed else text.encode()
    bits = "".join(format(b, "08b") for b in sig.encode())
    bits += format(len(payload) * 8, "032b") + "".join(format(b, "08b") for b in payload)
    img = picture(size, "RGBA" if mode == "alpha" else "RGB", seed=7)
    if mode == "alpha":
        img.putalpha(255)
    pixels, index = img.load(), 0
    for x in range(img.width):
        for y in range(img.height):
            if index >= len(bits):
                break
            if mode == "alpha":
                r, g, b, a = pixels[x, y]
                pixels[x, y] = (r, g, b, (a & ~1) | int(bits[index]))
                index += 1
            else:
                rgb = list(pixels[x, y])
                for c in range(3):
                    if index + c < len(bits):
                        rgb[c] = (rgb[c] & ~1) | int(bits[index + c])
                pixels[x, y] = tuple(rgb)
                index += 3
    if index < len(bits):
        raise ValueError("payload does not fit: use a bigger size")
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def xmp_packet(user_comment_json: str) -> str:
    """An XMP packet as Draw Things writes it: the JSON in exif:UserComment (escaped)."""
    from xml.sax.saxutils import escape

    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
        'xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
        "<xmp:CreatorTool>Draw Things</xmp:CreatorTool>"
        "<exif:UserComment><rdf:Alt>"
        f'<rdf:li xml:lang="x-default">{escape(user_comment_json)}</rdf:li>'
        "</rdf:Alt></exif:UserComment></rdf:Description></rdf:RDF></x:xmpmeta>"
    )
