"""A PNG's chunks read straight from its bytes, without decoding pixels.

Pillow reports text chunks written after the pixel data only once it has decoded the whole
image; walking the chunk list finds them all for the cost of a scan. ``first_rows`` decodes the
start of just the first few rows: enough to test for stealth metadata's signature cheaply."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT = 16 << 20  # all text chunks of one file together, decompressed
MAX_ROW = 4 << 20  # bytes in one decoded row: wider "images" are bombs, not pictures
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_CHANNELS = {2: 3, 6: 4}  # colour type → bytes per 8-bit pixel (RGB, RGBA)


@dataclass
class PngHeader:
    width: int
    height: int
    bit_depth: int
    color_type: int
    interlace: int

    @property
    def channels(self) -> int | None:
        """Bytes per pixel for 8-bit RGB/RGBA without interlacing (the kinds stealth data uses)."""
        if self.bit_depth != 8 or self.interlace:
            return None
        return _CHANNELS.get(self.color_type)


@dataclass
class PngFile:
    header: PngHeader
    texts: dict[str, str] = field(default_factory=dict)
    exif: bytes | None = None
    idat: list[memoryview] = field(default_factory=list)


def read_png(data: bytes) -> PngFile | None:
    """Header, text chunks (first of each key wins), eXIf and the pixel chunks of a PNG; None
    when ``data`` is not a PNG. A truncated file gives what came before the cut."""
    if not data.startswith(SIGNATURE):
        return None
    view, pos, budget = memoryview(data), len(SIGNATURE), MAX_TEXT
    png: PngFile | None = None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", view[pos : pos + 8])
        body = view[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if len(body) < length:
            break
        if kind == b"IHDR" and png is None and length >= 13:
            png = PngFile(PngHeader(*struct.unpack(">IIBBxxB", body[:13])))
        elif png is None:
            return None  # IHDR must come first
        elif kind == b"IDAT":
            png.idat.append(body)
        elif kind in _TEXT_CHUNKS and budget > 0:
            key, text = _text(kind, bytes(body), budget)
            if key and text is not None and key not in png.texts:
                png.texts[key], budget = text, budget - len(text)
        elif kind == b"eXIf" and png.exif is None:
            png.exif = bytes(body)
        elif kind == b"IEND":
            break
    return png


def _text(kind: bytes, body: bytes, budget: int) -> tuple[str, str | None]:
    """One text chunk as (keyword, text); text None when broken or over ``budget``."""
    key, _, rest = body.partition(b"\0")
    name = key.decode("latin-1")
    try:
        if kind == b"tEXt":
            return name, rest.decode("latin-1") if len(rest) <= budget else None
        if kind == b"zTXt":
            raw = _inflate(rest[1:], budget)
            return name, raw.decode("latin-1") if raw is not None else None
        compressed, rest = rest[:1] == b"\x01", rest[2:]  # iTXt: flag, method, lang, key
        _, _, rest = rest.partition(b"\0")
        _, _, rest = rest.partition(b"\0")
        raw = _inflate(rest, budget) if compressed else rest if len(rest) <= budget else None
        return name, raw.decode("utf-8") if raw is not None else None
    except UnicodeDecodeError:
        return name, None


def _inflate(data: bytes, limit: int, wbits: int = zlib.MAX_WBITS) -> bytes | None:
    """zlib data decompressed, or None when broken or larger than ``limit`` (a bomb)."""
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit)
    except zlib.error:
        return None
    return None if inflater.unconsumed_tail else out


def gunzip(data: bytes, limit: int) -> bytes | None:
    """gzip data decompressed, or None when broken or larger than ``limit``."""
    return _inflate(data, limit, wbits=16 + zlib.MAX_WBITS)


def first_rows(png: PngFile, *, rows: int, columns: int) -> list[bytes] | None:
    """The first ``columns`` pixels of each of the first ``rows`` rows, unfiltered — decoding
    only those rows. None for PNG kinds ``PngHeader.channels`` leaves out or broken data."""
    bpp, head = png.header.channels, png.header
    if bpp is None or not 0 < rows <= head.height or not 0 < columns <= head.width:
        return None
    stride, want = head.width * bpp + 1, columns * bpp
    if stride > MAX_ROW:
        return None
    source, inflater = _chunks(png), zlib.decompressobj()
    buf, prev, out = bytearray(), bytearray(want), []
    try:
        for _ in range(rows):
            while len(buf) < stride:
                src = inflater.unconsumed_tail or next(source, None)
                if src is None:
                    return None
                buf += inflater.decompress(src, stride - len(buf))
            row = bytearray(buf[1 : 1 + want])
            _unfilter(buf[0], row, prev, bpp)
            del buf[:stride]
            out.append(bytes(row))
            prev = row
    except zlib.error:
        return None
    return out


def _chunks(png: PngFile) -> Iterator[bytes]:
    for chunk in png.idat:
        yield bytes(chunk)


def _unfilter(kind: int, row: bytearray, prev: bytearray, bpp: int) -> None:
    """Undo a PNG row filter in place. Only the row's start is here, which is enough: every
    filter reads only bytes to the left and the byte above."""
    for i in range(len(row)):
        left = row[i - bpp] if i >= bpp else 0
        up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
        if kind == 1:
            row[i] = (row[i] + left) & 0xFF
        elif kind == 2:
            row[i] = (row[i] + up) & 0xFF
        elif kind == 3:
            row[i] = (row[i] + ((left + up) >> 1)) & 0xFF
        elif kind == 4:
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            row[i] = (row[i] + pred) & 0xFF
