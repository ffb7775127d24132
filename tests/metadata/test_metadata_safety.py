"""Hostile and broken files: decompression bombs, huge chunks and dimensions, lying stealth
headers, cycles and blow-ups in ComfyUI graphs, truncated and corrupted real files. Each gives
None (or what is readable) at once, never an exception."""

import json
import random
import struct
import zlib

import pytest

from promptlake.tasks.metadata import read_metadata
from promptlake.tasks.metadata.png import read_png
from tests.helpers import DATA
from tests.helpers.metadata_files import png, stealth_png

METADATA = DATA / "metadata"


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_chunk(data: bytes, extra: bytes) -> bytes:
    """``data`` (a PNG) with ``extra`` chunks inserted right after IHDR."""
    return data[:33] + extra + data[33:]


def test_text_chunk_bomb_is_skipped():
    bomb = zlib.compress(b"a" * (64 << 20), 9)  # 64 MiB of text in ~64 KiB
    data = with_chunk(png({}), chunk(b"zTXt", b"parameters\0\0" + bomb))
    assert read_png(data).texts == {}
    assert read_metadata(data) is None
    itxt = chunk(b"iTXt", b"parameters\0\x01\0\0\0" + bomb)
    real = b"a dragon\nSteps: 3, Seed: 1"
    data = with_chunk(png({}), itxt + chunk(b"tEXt", b"parameters\0" + real))
    assert read_metadata(data).prompt == "a dragon"  # the next chunk with that key is read


def test_huge_text_chunks_stop_at_the_budget():
    huge = chunk(b"tEXt", b"workflow\0" + b"x" * (17 << 20))
    data = with_chunk(png({"parameters": "a small boat\nSteps: 2, Seed: 1"}), huge)
    assert read_png(data).texts.keys() == {"parameters"}
    assert read_metadata(data).prompt == "a small boat"


@pytest.mark.parametrize("color_type", [2, 6])
def test_absurd_dimensions_decode_nothing(color_type):
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 60_000, 60_000, 8, color_type, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 1000))
    data = b"\x89PNG\r\n\x1a\n" + ihdr + idat + chunk(b"IEND", b"")
    assert read_metadata(data) is None
    wide = chunk(b"IHDR", struct.pack(">IIBBBBB", 50_000_000, 1, 8, color_type, 0, 0, 0))
    assert read_metadata(b"\x89PNG\r\n\x1a\n" + wide + idat + chunk(b"IEND", b"")) is None


def test_stealth_header_that_lies_about_its_length():
    data = bytearray(stealth_png("x" * 10, compressed=False, size=(40, 200)))
    good = read_metadata(bytes(data))
    assert good is not None  # the honest file reads
    # rewrite the alpha bits of the 32-bit length (pixels 120-151 of column 0) to all ones
    from io import BytesIO

    from PIL import Image

    img = Image.open(BytesIO(bytes(data)))
    pixels = img.load()
    for y in range(120, 152):
        r, g, b, a = pixels[0, y]
        pixels[0, y] = (r, g, b, a | 1)
    out = BytesIO()
    img.save(out, "PNG")
    assert read_metadata(out.getvalue()) is None
    gzip_bomb = stealth_png("y" * (8 << 20), size=(400, 400))  # 8 MiB gzipped into ~8 KiB
    assert read_metadata(gzip_bomb) is None


def comfy(graph: dict) -> bytes:
    return png({"prompt": json.dumps(graph)})


def sampler(positive, negative=None):
    return {
        "class_type": "KSampler",
        "inputs": {"seed": 1, "steps": 2, "positive": positive, "negative": negative or positive},
    }


def test_cycles_in_a_comfyui_graph_end():
    graph = {
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": ["7", 0]}},
        "7": {
            "class_type": "StringConcatenate",
            "inputs": {"string_a": ["6", 0], "string_b": ["7", 0]},
        },
        "8": {
            "class_type": "ConditioningCombine",
            "inputs": {"conditioning_1": ["8", 0], "conditioning_2": ["6", 0]},
        },
        "9": {
            "class_type": "ConditioningCombine",
            "inputs": {"conditioning_1": ["8", 0], "conditioning_2": ["10", 0]},
        },
        "10": {"class_type": "CLIPTextEncode", "inputs": {"text": "a real prompt"}},
        "3": sampler(["9", 0]),
        "4": {"class_type": "SaveImage", "inputs": {"images": ["4", 0]}},
    }
    assert read_metadata(comfy(graph)).prompt == "a real prompt"


def test_deep_and_exponential_comfyui_graphs_end():
    deep = {
        str(i): {"class_type": "ConditioningSetArea", "inputs": {"conditioning": [str(i + 1), 0]}}
        for i in range(10, 20_000)
    }
    deep["20000"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "far away"}}
    deep["1"] = sampler(["10", 0])
    assert read_metadata(comfy(deep)) is None  # too deep to trust: no prompt, no crash
    # each level combines the one below twice: 2**120 paths, 120 nodes
    wide = {
        str(i): {
            "class_type": "ConditioningCombine",
            "inputs": {"conditioning_1": [str(i + 1), 0], "conditioning_2": [str(i + 1), 0]},
        }
        for i in range(10, 130)
    }
    wide["130"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "at the bottom"}}
    wide["1"] = sampler(["10", 0])
    assert read_metadata(comfy(wide)).prompt == "at the bottom"


@pytest.mark.parametrize(
    "name", sorted(p.name for p in METADATA.glob("*.*") if p.suffix != ".md" and p.suffix != ".txt")
)
def test_truncated_and_corrupted_real_files_never_raise(name):
    data = (METADATA / name).read_bytes()
    for cut in range(0, len(data), max(1, len(data) // 40)):
        read_metadata(data[:cut])
    rng = random.Random(name)
    for _ in range(60):
        broken = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            broken[rng.randrange(len(broken))] = rng.randrange(256)
        read_metadata(bytes(broken))
