"""Stable-Diffusion-style sample prompts, made here (the real dataset is not reachable offline).

Used by the tests, the benchmarks and the demo; the same seed always gives the same prompts.
"""

from __future__ import annotations

import random

SUBJECTS = [
    "a cat sleeping on a sofa",
    "a lighthouse on a cliff",
    "an astronaut riding a horse",
    "a cyberpunk city at night",
    "a portrait of an old fisherman",
    "a dragon over mountains",
    "a cozy cabin in the woods",
    "a samurai in the rain",
    "a bowl of ramen",
    "a fox in the snow",
    "a steampunk airship",
    "a knight in golden armor",
    "an underwater temple",
    "a robot gardener",
    "a field of sunflowers",
    "a witch brewing a potion",
    "a futuristic sports car",
    "a medieval market street",
    "a giant tree house",
    "a wolf howling at the moon",
]
STYLES = [
    "oil painting",
    "digital art",
    "concept art",
    "watercolor",
    "photorealistic",
    "anime style",
    "studio ghibli style",
    "unreal engine 5",
    "octane render",
    "pencil sketch",
    "pixel art",
    "low poly",
    "matte painting",
    "ukiyo-e",
    "art nouveau",
    "vaporwave",
    "cinematic lighting",
]
ARTISTS = [
    "greg rutkowski",
    "alphonse mucha",
    "artgerm",
    "makoto shinkai",
    "james gurney",
    "wlop",
    "simon stalenhag",
    "hayao miyazaki",
    "moebius",
    "beeple",
]
MODIFIERS = [
    "highly detailed",
    "trending on artstation",
    "4k",
    "8k",
    "sharp focus",
    "intricate",
    "volumetric lighting",
    "dramatic",
    "golden hour",
    "masterpiece",
    "hdr",
    "bokeh",
    "symmetrical",
    "vibrant colors",
    "soft light",
    "epic composition",
    "smooth",
]
SITES = ["lexica", "midjourney", "civitai", "stablediffusionweb", "krea"]


def sample_prompt(rng: random.Random) -> str:
    """One prompt: a subject, then comma-separated styles, an artist and modifiers."""
    parts = [rng.choice(SUBJECTS)]
    parts += rng.sample(STYLES, rng.randint(1, 3))
    if rng.random() < 0.7:
        parts.append("by " + rng.choice(ARTISTS))
    parts += rng.sample(MODIFIERS, rng.randint(0, 8))
    return ", ".join(parts)


def sample_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` prompts, the same for the same seed."""
    rng = random.Random(seed)
    return [sample_prompt(rng) for _ in range(n)]


def sample_image(prompt: str, size: int = 256):
    """A picture drawn for ``prompt``: colours from its styles, a shape from its subject. It only
    stands in for a generated image (offline there is no Stable Diffusion to run)."""
    import hashlib

    from PIL import Image, ImageDraw

    subject, _, styles = prompt.partition(", ")
    h_subject = hashlib.sha256(subject.encode()).digest()
    h_style = hashlib.sha256(styles.encode()).digest()
    img = Image.new("RGB", (size, size), tuple(h_style[:3]))
    draw = ImageDraw.Draw(img)
    for i in range(0, size, 16):  # a gradient band keyed by the styles
        draw.line([(0, i), (size, i)], fill=tuple((c + i) % 256 for c in h_style[3:6]), width=6)
    box = [size // 4, size // 4, 3 * size // 4, 3 * size // 4]
    shape = [draw.ellipse, draw.rectangle, draw.polygon][h_subject[0] % 3]
    if shape is draw.polygon:
        shape(
            [(size // 2, size // 5), (size // 5, 4 * size // 5), (4 * size // 5, 4 * size // 5)],
            fill=tuple(h_subject[1:4]),
        )
    else:
        shape(box, fill=tuple(h_subject[1:4]))
    return img
