"""Training images of ``zsindex-tiny`` with hard backgrounds (used by ``train_tiny_model.py``).

:mod:`zsindex.demo.render` draws every shape on a grey or pastel background kept far from the
shape's colour. A model trained only on that learns the image's overall colour, and calls a white
shape on a dark-blue background "blue". This module draws the same shapes (the demo renderer's
Pillow masks) with:

* colours spread over the whole range a person gives each name (hue, saturation and value
  ranges per name in :data:`HUE_RANGES`, wider than the demo's jitter);
* backgrounds of every kind: any solid colour, dark colours, shades of the other label colours
  and of the object's own colour name, linear and radial gradients, stripes, checkerboards,
  smooth noise, speckle; every background pixel stays at least :data:`MIN_DISTANCE` (RGB) from
  the object so the object is visible;
* objects at any rotation, whose outer diameter is 25–80 % of the side (about 6–64 % of the
  image area).

A share of the images (``demo_share``) still comes from :func:`zsindex.demo.render_shape`, the
distribution of ``zsindex demo`` and the tests. All randomness comes from the generator passed in.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image

from zsindex.demo import render_shape
from zsindex.demo.render import _draw_mask  # the demo's shape masks: one drawing of each shape

#: Per colour name: hue range in degrees (may wrap below 0), saturation range, value range.
HUE_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "red": ((-10.0, 8.0), (0.65, 1.0), (0.55, 1.0)),
    "orange": ((22.0, 38.0), (0.75, 1.0), (0.85, 1.0)),
    "yellow": ((47.0, 61.0), (0.7, 1.0), (0.85, 1.0)),
    "green": ((95.0, 150.0), (0.6, 1.0), (0.4, 0.9)),
    "blue": ((208.0, 245.0), (0.6, 1.0), (0.55, 1.0)),
    "purple": ((266.0, 298.0), (0.55, 1.0), (0.4, 0.9)),
}
MIN_DISTANCE = 60.0
BACKGROUND_KINDS: tuple[str, ...] = (
    "solid",
    "dark",
    "label",
    "linear",
    "radial",
    "stripes",
    "checker",
    "noise",
    "speckle",
)


def sample_color(color: str, rng: np.random.Generator) -> np.ndarray:
    """A random RGB (float) that a person would call ``color``."""
    if color == "white":
        return np.clip(rng.uniform(228, 255) + rng.uniform(-8, 8, size=3), 0, 255)
    if color == "black":
        return np.clip(rng.uniform(0, 45) + rng.uniform(-6, 6, size=3), 0, 255)
    (h0, h1), (s0, s1), (v0, v1) = HUE_RANGES[color]
    h = (rng.uniform(h0, h1) / 360.0) % 1.0
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(s0, s1), rng.uniform(v0, v1))
    return np.asarray(rgb) * 255.0


def _two_colors(rng: np.random.Generator, color: str) -> list[np.ndarray]:
    return [_one_color(rng, color), _one_color(rng, color)]


def _one_color(rng: np.random.Generator, color: str) -> np.ndarray:
    """A background colour: uniform RGB, or a dark one, or a shade of some label colour."""
    u = rng.random()
    if u < 0.4:
        return rng.uniform(0, 255, size=3)
    if u < 0.6:
        return rng.uniform(0, 90, size=3)
    names = (*HUE_RANGES, "white", "black")
    return sample_color(names[int(rng.integers(len(names)))], rng) * rng.uniform(0.45, 1.0)


def _background(kind: str, color: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A float RGB background [size, size, 3] of ``kind``."""
    if kind in ("solid", "dark", "label"):
        if kind == "solid":
            c = rng.uniform(0, 255, size=3)
        elif kind == "dark":
            c = rng.uniform(0, 80, size=3)
        else:  # a shade of any label colour, the object's own name included
            names = (*HUE_RANGES, "white", "black")
            c = sample_color(names[int(rng.integers(len(names)))], rng) * rng.uniform(0.35, 1.0)
        return np.broadcast_to(c, (size, size, 3)).astype(np.float32)
    c0, c1 = _two_colors(rng, color)
    t1 = np.linspace(0.0, 1.0, size, dtype=np.float32)
    gx, gy = np.meshgrid(t1, t1)
    if kind == "linear":
        a = rng.uniform(0, 2 * math.pi)
        t = gx * math.cos(a) + gy * math.sin(a)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == "radial":
        ox, oy = rng.uniform(-0.2, 1.2, size=2)
        t = np.hypot(gx - ox, gy - oy)
        t = t / max(float(t.max()), 1e-6)
    elif kind == "stripes":
        a = rng.uniform(0, math.pi)
        period = rng.uniform(0.05, 0.3)
        t = (((gx * math.cos(a) + gy * math.sin(a)) / period) % 1.0 < 0.5).astype(np.float32)
    elif kind == "checker":
        cell = rng.uniform(0.06, 0.25)
        t = ((np.floor(gx / cell) + np.floor(gy / cell)) % 2).astype(np.float32)
    elif kind == "noise":
        n = int(rng.integers(3, 9))
        small = Image.fromarray((rng.uniform(0, 1, (n, n)) * 255).astype(np.uint8))
        t = np.asarray(small.resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255
    else:  # speckle
        t = rng.uniform(0, 1, (size, size)).astype(np.float32)
    return (c0 + t[..., None] * (c1 - c0)).astype(np.float32)


def render_hard(shape: str, color: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One shape of ``color`` on a background of a random kind, far enough from the object."""
    fg = sample_color(color, rng).astype(np.float32)
    kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    bg = None
    for _ in range(50):
        cand = _background(kind, color, size, rng)
        if float(np.sqrt(((cand - fg) ** 2).sum(-1)).min()) >= MIN_DISTANCE:
            bg = cand
            break
    if bg is None:  # e.g. dark backgrounds for a black shape: fall back to any solid colour
        while bg is None:
            c = rng.uniform(0, 255, size=3)
            if float(np.linalg.norm(c - fg)) >= MIN_DISTANCE * 1.5:
                bg = np.broadcast_to(c, (size, size, 3)).astype(np.float32)
    ss = 4 if size <= 128 else 2
    big = size * ss
    # Any rotation: a turned square or cross keeps its name. Corners reach 1.17 r from the centre.
    r = 0.5 * rng.uniform(0.25, 0.80) * big
    reach = 1.17 * r + 0.03 * big
    cx = rng.uniform(reach, big - reach)
    cy = rng.uniform(reach, big - reach)
    mask = _draw_mask(shape, big, cx, cy, r, rng)
    mask = mask.rotate(rng.uniform(0, 360), Image.Resampling.BILINEAR, center=(cx, cy))
    mask = mask.resize((size, size), Image.Resampling.BOX)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / np.float32(255.0)
    img = bg + alpha * (fg - bg)
    if rng.random() < 0.4:
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(1, 8))
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


def render_training_image(
    shape: str, color: str, size: int, rng: np.random.Generator, demo_share: float
) -> Image.Image:
    """A training image: the demo renderer's with probability ``demo_share``, else a hard one."""
    if rng.random() < demo_share:
        return render_shape(shape, color, size, rng)
    return render_hard(shape, color, size, rng)
