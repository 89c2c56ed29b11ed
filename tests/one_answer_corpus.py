"""A small deterministic image corpus for ``tests/test_one_answer.py`` (Pillow and numpy only).

Each image is one solid shape of a named colour from ``zsindex-tiny``'s world (``circle`` …
``ring`` × ``red`` … ``black``) on a lightly noisy pastel background, so the tiny model's top-5
over the 48 colour+shape labels is meaningful. The files cover what decoding can get wrong:
JPEG at qualities 30 / 75 / 95, baseline and progressive, 4:2:0 and 4:4:4, 110 to 1024 px,
square and not (most of them ≥ 2 × the model's 64 px input, where JPEG draft mode decodes at a
reduced scale), PNG, JPEGs carrying an EXIF orientation (6 and 8) whose pixels are stored turned,
an RGBA PNG with transparent and half-transparent pixels (alpha on white matters), a palette PNG
with a transparent index and a grey+alpha PNG. Two images are deliberately ambiguous (a colour
between red and orange, a shape between square and circle), where decoding differences move
probabilities most. ``blend`` draws a line of two-colour mixtures along which the test looks for
images whose top-1 depends on the decode.

Nothing here imports zsindex: the corpus and the reference must not share its code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 30),
    "purple": (130, 40, 170),
    "orange": (245, 140, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
LABELS: tuple[str, ...] = tuple(f"{c} {s}" for c in COLORS for s in SHAPES)
TEMPLATES: tuple[str, ...] = (
    "an image of a {}.",
    "a picture showing a {}.",
    "a rendering of a {}.",
)

BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (200, 200, 205),
    (225, 235, 245),
    (240, 230, 215),
    (120, 125, 130),
    (215, 240, 220),
)


@dataclass(frozen=True)
class Item:
    """One corpus file: how it is drawn and written, and its true label."""

    name: str
    color: str
    shape: str
    size: tuple[int, int]
    fmt: str  # "JPEG" or "PNG"
    quality: int = 90
    seed: int = 0
    rgb: tuple[int, int, int] | None = None  # overrides the named colour (ambiguous images)
    roundness: float = 0.0  # squares only: corner radius as a fraction of the half side
    orientation: int | None = None  # EXIF orientation written with the (turned) pixels
    mix: tuple[str, float] | None = None  # (second colour, fraction of the shape's pixels)
    mode: str = "RGB"  # PNG only: RGB, RGBA, P (transparent index) or LA
    save: tuple[tuple[str, Any], ...] = ()  # extra JPEG save options

    @property
    def label(self) -> str:
        return f"{self.color} {self.shape}"


ITEMS: tuple[Item, ...] = (
    # JPEG at three qualities; sizes from 110 px (below draft range) to 1024 px (1/8 draft).
    Item("jpeg_q30_1024.jpg", "orange", "ring", (1024, 1024), "JPEG", quality=30, seed=1),
    Item("jpeg_q30_256x200.jpg", "green", "star", (256, 200), "JPEG", quality=30, seed=2),
    Item("jpeg_q75_640x480.jpg", "blue", "square", (640, 480), "JPEG", quality=75, seed=3),
    Item("jpeg_q75_300x1000.jpg", "purple", "cross", (300, 1000), "JPEG", quality=75, seed=4),
    Item(
        "jpeg_q75_prog_768x512.jpg",
        "yellow",
        "triangle",
        (768, 512),
        "JPEG",
        quality=75,
        seed=5,
        save=(("progressive", True),),
    ),
    Item("jpeg_q95_1024x768.jpg", "red", "circle", (1024, 768), "JPEG", quality=95, seed=6),
    Item(
        "jpeg_q95_444_512.jpg",
        "white",
        "star",
        (512, 512),
        "JPEG",
        quality=95,
        seed=7,
        save=(("subsampling", 0),),
    ),
    Item("jpeg_q95_200.jpg", "black", "triangle", (200, 200), "JPEG", quality=95, seed=8),
    Item("jpeg_q75_110.jpg", "green", "circle", (110, 110), "JPEG", quality=75, seed=9),
    # Ambiguous on purpose: a red-orange colour, a square with strongly rounded corners.
    Item(
        "jpeg_q30_ambiguous_color_900x700.jpg",
        "red",
        "square",
        (900, 700),
        "JPEG",
        quality=30,
        seed=10,
        rgb=(235, 88, 25),
    ),
    Item(
        "jpeg_q75_ambiguous_shape_800.jpg",
        "blue",
        "square",
        (800, 800),
        "JPEG",
        quality=75,
        seed=11,
        roundness=0.8,
    ),
    # EXIF orientation: the pixels are stored turned and the tag says how to turn them back.
    Item(
        "jpeg_exif6_800x600.jpg",
        "red",
        "triangle",
        (800, 600),
        "JPEG",
        quality=90,
        seed=12,
        orientation=6,
    ),
    Item(
        "jpeg_exif8_q30_600x400.jpg",
        "purple",
        "star",
        (600, 400),
        "JPEG",
        quality=30,
        seed=13,
        orientation=8,
    ),
    # PNG: plain RGB, RGBA with transparency, palette with a transparent index, grey + alpha.
    Item("png_rgb_512x384.png", "white", "triangle", (512, 384), "PNG", seed=14),
    Item("png_rgba_400.png", "black", "cross", (400, 400), "PNG", seed=15, mode="RGBA"),
    Item("png_palette_320x256.png", "yellow", "circle", (320, 256), "PNG", seed=16, mode="P"),
    Item("png_la_256.png", "black", "ring", (256, 256), "PNG", seed=17, mode="LA"),
)


def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[Any]:
    def rot(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        ca, sa = math.cos(angle), math.sin(angle)
        return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in points]

    if shape == "square":
        h = r * 0.8
        return rot([(-h, -h), (h, -h), (h, h), (-h, h)])
    if shape == "triangle":
        return rot(
            [
                (r * math.cos(a), r * math.sin(a))
                for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
            ]
        )
    if shape == "star":
        pts = []
        for i in range(10):
            rr = r if i % 2 == 0 else r * 0.42
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((rr * math.cos(a), rr * math.sin(a)))
        return rot(pts)
    if shape == "cross":
        a, b = r, r * 0.33
        return rot(
            [
                (-b, -a),
                (b, -a),
                (b, -b),
                (a, -b),
                (a, b),
                (b, b),
                (b, a),
                (-b, a),
                (-b, b),
                (-a, b),
                (-a, -b),
                (-b, -b),
            ]
        )
    raise ValueError(shape)


def _draw_shape(
    draw: ImageDraw.ImageDraw, item: Item, geom: tuple[float, float, float, float], fill: Any
) -> None:
    cx, cy, r, angle = geom
    box = [cx - r, cy - r, cx + r, cy + r]
    if item.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif item.shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, round(r * 0.3)))
    elif item.shape == "square" and item.roundness:
        h2 = r * 0.85
        draw.rounded_rectangle(
            [cx - h2, cy - h2, cx + h2, cy + h2], radius=item.roundness * h2, fill=fill
        )
    else:
        draw.polygon(_shape_polygon(item.shape, cx, cy, r, angle), fill=fill)


def render(item: Item) -> Image.Image:
    """The item's picture as it should be seen (upright), RGB or with alpha per ``item.mode``."""
    if item.mix is None:
        return _render(item)[0]
    # Shape pixels take the second colour where a fixed uniform field is below the fraction:
    # the mean colour moves continuously with the fraction.
    other, fraction = item.mix
    base, mask, field_u = _mix_parts(replace(item, name="", mix=None))
    arr = base.copy()
    arr[mask & (field_u < fraction)] = COLORS[other]
    return Image.fromarray(arr, "RGB")


@lru_cache(maxsize=4)
def _mix_parts(item: Item) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(picture, shape mask, uniform field) of a mixture's picture, drawn once per blend line."""
    assert item.mode == "RGB", "colour mixtures are drawn on opaque pictures only"
    img, geom = _render(item)
    mask = Image.new("L", img.size, 0)
    _draw_shape(ImageDraw.Draw(mask), item, geom, 255)
    field_u = np.random.default_rng(5000 + item.seed).random((img.height, img.width))
    return np.asarray(img), np.asarray(mask) > 0, field_u


def _render(item: Item) -> tuple[Image.Image, tuple[float, float, float, float]]:
    rng = np.random.default_rng(1000 + item.seed)
    w, h = item.size
    color = item.rgb or COLORS[item.color]
    transparent = item.mode in ("RGBA", "P", "LA")
    if transparent:
        img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    else:
        bg = BACKGROUNDS[item.seed % len(BACKGROUNDS)]
        noise = rng.normal(0.0, 6.0, size=(h, w, 1)) + rng.normal(0.0, 3.0, size=(h, w, 3))
        arr = np.clip(np.asarray(bg, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
        # A gentle left-to-right shading gives JPEG and resampling some low frequencies too.
        ramp = np.linspace(-12.0, 12.0, w)[None, :, None]
        arr = np.clip(arr.astype(np.float64) + ramp, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "RGB")
    short = min(w, h)
    r = short * float(rng.uniform(0.30, 0.38))
    cx = w / 2 + float(rng.uniform(-0.05, 0.05)) * short
    cy = h / 2 + float(rng.uniform(-0.05, 0.05)) * short
    angle = float(rng.uniform(-0.35, 0.35))
    geom = (cx, cy, r, angle)
    _draw_shape(ImageDraw.Draw(img), item, geom, (*color, 255) if transparent else color)
    if transparent:
        # A half-transparent band across the picture: compositing on white vs black differs.
        band = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        ImageDraw.Draw(band).rectangle([0, int(h * 0.7), w, int(h * 0.85)], fill=(*color, 110))
        img = Image.alpha_composite(img, band)
    return img, geom


def _turned_for(img: Image.Image, orientation: int) -> Image.Image:
    """The stored pixels whose EXIF ``orientation`` turns them back into ``img``."""
    if orientation == 6:  # viewer rotates 90° clockwise, so store it 90° counter-clockwise
        return img.transpose(Image.Transpose.ROTATE_90)
    if orientation == 8:  # viewer rotates 90° counter-clockwise
        return img.transpose(Image.Transpose.ROTATE_270)
    raise ValueError(orientation)


def write(item: Item, folder: Path) -> Path:
    """Write one item into ``folder``; returns its path."""
    path = folder / item.name
    img = render(item)
    if item.fmt == "JPEG":
        kwargs: dict[str, Any] = {"quality": item.quality, **dict(item.save)}
        if item.orientation:
            img = _turned_for(img, item.orientation)
            exif = Image.Exif()
            exif[0x0112] = item.orientation
            kwargs["exif"] = exif.tobytes()
        img.convert("RGB").save(path, format="JPEG", **kwargs)
    elif item.mode in ("RGB", "RGBA"):
        img.save(path, format="PNG")
    elif item.mode == "LA":
        img.convert("LA").save(path, format="PNG")
    elif item.mode == "P":
        # An adaptive palette of the opaque pixels plus one index kept for "transparent".
        rgb = img.convert("RGB")
        alpha = img.getchannel("A")
        pal = rgb.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        pixels = np.asarray(pal).copy()
        pixels[np.asarray(alpha) < 128] = 255
        out = Image.fromarray(pixels, "P")
        palette = (pal.getpalette() or [])[: 255 * 3]
        palette += [0] * (255 * 3 - len(palette)) + [0, 0, 0]
        out.putpalette(palette)
        out.save(path, format="PNG", transparency=255)
    else:
        raise ValueError(item.mode)
    return path


def build(folder: Path, items: tuple[Item, ...] = ITEMS) -> dict[str, Path]:
    """Write ``items`` (the whole corpus) into ``folder``; file name → path, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    return {item.name: write(item, folder) for item in items}


BLEND_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("red", "orange", "square"),
    ("orange", "yellow", "triangle"),
)


def blend(pair: int, fraction: float) -> Item:
    """A large low-quality JPEG of one shape whose pixels are a seeded mixture of two named
    colours (``fraction`` of them the second): somewhere in [0, 1] the top-1 changes colour.

    ``test_one_answer`` searches along it for a fraction where an exact decode and a draft-mode
    decode fall on opposite sides, so an entry point that decodes in draft mode gets a
    different top-1 (and ``zsindex eval`` a different accuracy).
    """
    a, b, shape = BLEND_PAIRS[pair]
    return Item(
        f"blend_{a}_{b}_{round(fraction * 1e9):010d}_1024x768.jpg",
        a,
        shape,
        (1024, 768),
        "JPEG",
        quality=30,
        seed=100 + pair,
        mix=(b, float(fraction)),
    )
