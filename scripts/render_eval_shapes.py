#!/usr/bin/env python
"""An evaluation renderer of coloured shapes that shares no choice with the training renderers.

``zsindex-tiny`` is trained on images from :mod:`zsindex.demo.render` and
``scripts/tiny_train_render.py`` (Pillow polygons, colours jittered in HSV around
``demo_vocab.COLORS``). Measuring it on images from the same code would measure how well it
learned that code. This module draws the same vocabulary of 6 shapes and 8 colour names with
independent choices:

* **geometry**: analytic inside-tests on a numpy sub-pixel grid (no Pillow drawing), its own
  proportions (square corners, star inner radius, cross arm width, ring hole); circles, rings,
  triangles and stars at any rotation, squares and crosses within ±25° of upright
  (:data:`UPRIGHT_SHAPES`; ``any_rotation`` turns them freely too, into diamonds and x's);
* **colours**: fixed RGB values of CSS/X11 named colours (``PALETTE``), never the training
  reference values nor their jitter;
* **backgrounds**: solid colours of every kind (dark ones, navy and dark blue, shades of the
  other label colours), linear and radial gradients, stripes, checkerboards, smooth noise and
  speckle, always at a minimum RGB distance from the object's colour so the object stays visible;
* **sizes**: 80, 120, 200, 300 and 420 px (training renders 64–192 px and the demo 64–512);
  the object's bounding box covers 10–60 % of the image area.

All randomness comes from the seed, so a seed reproduces the set exactly. Only numpy and Pillow.

Example::

    .venv/bin/python scripts/render_eval_shapes.py --out /tmp/eval-shapes --per-combo 4
"""

from __future__ import annotations

import argparse
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")

#: Named-colour RGB values (CSS / X11), chosen independently of the training references.
PALETTE: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((255, 0, 0), (178, 34, 34), (220, 20, 60), (205, 38, 38)),
    "green": ((0, 128, 0), (34, 139, 34), (50, 205, 50), (0, 170, 60)),
    "blue": ((0, 0, 255), (65, 105, 225), (0, 0, 205), (30, 90, 255)),
    "yellow": ((255, 255, 0), (255, 215, 0), (255, 234, 0), (250, 230, 60)),
    "purple": ((128, 0, 128), (138, 43, 226), (153, 50, 204), (112, 40, 160)),
    "orange": ((255, 165, 0), (255, 140, 0), (255, 127, 0), (240, 120, 20)),
    "white": ((255, 255, 255), (248, 248, 255), (245, 245, 245), (255, 250, 250)),
    "black": ((0, 0, 0), (28, 28, 28), (16, 16, 24), (40, 36, 32)),
}
COLOR_NAMES: tuple[str, ...] = tuple(PALETTE)

#: Background kinds, cycled so every combo meets every kind.
BACKGROUNDS: tuple[str, ...] = (
    "solid",
    "dark",
    "navy",
    "label-shade",
    "linear",
    "radial",
    "stripes",
    "checker",
    "noise",
    "speckle",
)
SIZES: tuple[int, ...] = (80, 120, 200, 300, 420)
MIN_DISTANCE = 85.0  # RGB distance between the object's colour and every background pixel
#: Largest turn (degrees) of the shapes whose name depends on orientation: a square turned 45° is
#: a "diamond" and a cross an "x", names outside the vocabulary. Other shapes turn freely.
UPRIGHT_SHAPES: dict[str, float] = {"square": 25.0, "cross": 25.0}


@dataclass(frozen=True)
class EvalImage:
    """One rendered evaluation image and its ground truth."""

    image: Image.Image
    shape: str
    color: str
    background: str
    size: int


def _grid(size: int, ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel sample centres in [0, 1) image coordinates, shape [size*ss, size*ss]."""
    t = (np.arange(size * ss, dtype=np.float64) + 0.5) / (size * ss)
    return np.meshgrid(t, t)


def _inside_polygon(x: np.ndarray, y: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Even-odd crossing test of every sample point against a closed polygon."""
    inside = np.zeros(x.shape, dtype=bool)
    n = len(pts)
    for i in range(n):
        x1, y1 = pts[i]
        x2, y2 = pts[(i + 1) % n]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < xi)
    return inside


def _coverage(shape: str, size: int, rng: np.random.Generator, any_rotation: bool) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of one shape whose bbox covers 10–60 % of the area."""
    area = rng.uniform(0.10, 0.60)
    half = 0.5 * math.sqrt(area)  # half side of the bounding box, image = 1
    cx = rng.uniform(half + 0.02, 1 - half - 0.02)
    cy = rng.uniform(half + 0.02, 1 - half - 0.02)
    ss = 3 if size >= 200 else 4
    gx, gy = _grid(size, ss)
    theta = rng.uniform(-math.pi, math.pi)
    if shape in UPRIGHT_SHAPES and not any_rotation:
        theta *= UPRIGHT_SHAPES[shape] / 180.0
    ct, st = math.cos(theta), math.sin(theta)
    # Local coordinates of the shape, unit = half the bbox side.
    u = ((gx - cx) * ct + (gy - cy) * st) / half
    v = (-(gx - cx) * st + (gy - cy) * ct) / half
    if shape == "circle":
        m = u * u + v * v <= 1.0
    elif shape == "ring":
        d = u * u + v * v
        m = (d <= 1.0) & (d >= rng.uniform(0.40, 0.58) ** 2)
    elif shape == "square":
        m = np.maximum(np.abs(u), np.abs(v)) <= 0.72  # rotated square fits the circle
    elif shape == "triangle":
        a = np.radians([90.0, 210.0, 330.0])
        m = _inside_polygon(u, v, np.stack([np.cos(a), np.sin(a)], 1))
    elif shape == "star":
        inner = rng.uniform(0.40, 0.46)
        a = np.radians(90.0 + 36.0 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        m = _inside_polygon(u, v, np.stack([r * np.cos(a), r * np.sin(a)], 1))
    elif shape == "cross":
        w = rng.uniform(0.26, 0.34)
        lim = 0.92
        m = ((np.abs(u) <= w) & (np.abs(v) <= lim)) | ((np.abs(v) <= w) & (np.abs(u) <= lim))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return m.reshape(size, ss, size, ss).mean(axis=(1, 3))


def _random_rgb(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def _background_colors(kind: str, color: str, rng: np.random.Generator) -> list[np.ndarray]:
    """The one or two colours a background of ``kind`` is made of."""
    if kind == "dark":
        return [rng.uniform(0, 70, size=3)]
    if kind == "navy":
        return [np.array([rng.uniform(0, 30), rng.uniform(0, 40), rng.uniform(70, 150)])]
    if kind == "label-shade":
        other = [c for c in COLOR_NAMES if c != color]
        ref = PALETTE[other[int(rng.integers(len(other)))]]
        base = np.asarray(ref[int(rng.integers(len(ref)))], dtype=np.float64)
        return [np.clip(base * rng.uniform(0.7, 1.0) + rng.uniform(-20, 20, size=3), 0, 255)]
    if kind == "solid":
        return [_random_rgb(rng)]
    return [_random_rgb(rng), _random_rgb(rng)]


def _background(
    kind: str, cols: list[np.ndarray], size: int, rng: np.random.Generator
) -> np.ndarray:
    """A float RGB background [size, size, 3] of ``kind`` from its colours."""
    gx, gy = _grid(size, 1)
    if len(cols) == 1:
        return np.broadcast_to(cols[0], (size, size, 3)).astype(np.float64)
    c0, c1 = cols
    if kind == "linear":
        a = rng.uniform(0, 2 * math.pi)
        t = (gx - 0.5) * math.cos(a) + (gy - 0.5) * math.sin(a)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-9)
    elif kind == "radial":
        ox, oy = rng.uniform(0, 1, size=2)
        t = np.hypot(gx - ox, gy - oy)
        t = t / max(float(t.max()), 1e-9)
    elif kind == "stripes":
        a = rng.uniform(0, math.pi)
        period = rng.uniform(0.04, 0.2)
        t = ((gx * math.cos(a) + gy * math.sin(a)) / period) % 1.0 < 0.5
    elif kind == "checker":
        cell = rng.uniform(0.05, 0.2)
        t = ((np.floor(gx / cell) + np.floor(gy / cell)) % 2).astype(bool)
    elif kind == "noise":
        coarse = rng.uniform(0, 1, size=(6, 6))
        img = Image.fromarray((coarse * 255).astype(np.uint8)).resize(
            (size, size), Image.Resampling.BICUBIC
        )
        t = np.asarray(img, dtype=np.float64) / 255.0
    elif kind == "speckle":
        t = rng.uniform(0, 1, size=(size, size))
    else:
        raise ValueError(f"unknown background kind {kind!r}")
    t = np.asarray(t, dtype=np.float64)[..., None]
    return c0 + t * (c1 - c0)


def render_one(
    shape: str,
    color: str,
    kind: str,
    size: int,
    rng: np.random.Generator,
    any_rotation: bool = False,
) -> Image.Image:
    """Render one image; the background is redrawn until it is far enough from the object."""
    options = PALETTE[color]
    fg = np.asarray(options[int(rng.integers(len(options)))], dtype=np.float64)
    for _ in range(200):
        bg = _background(kind, _background_colors(kind, color, rng), size, rng)
        if float(np.linalg.norm(bg - fg, axis=-1).min()) >= MIN_DISTANCE:
            break
    else:  # a dark or navy draw can never be far from black: fall back to mid grey
        bg = np.full((size, size, 3), 128.0)
    alpha = _coverage(shape, size, rng, any_rotation)[..., None]
    img = bg + alpha * (fg - bg)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


def render_eval_set(seed: int, per_combo: int, any_rotation: bool = False) -> Iterator[EvalImage]:
    """Yield ``per_combo`` images of each of the 48 colour–shape combos × every background kind.

    Sizes cycle through :data:`SIZES`; the same arguments always give the same images.
    """
    rng = np.random.default_rng([seed, 4242])
    k = 0
    for rep in range(per_combo):
        for kind in BACKGROUNDS:
            for color in COLOR_NAMES:
                for shape in SHAPES:
                    size = SIZES[(k + rep) % len(SIZES)]
                    k += 1
                    yield EvalImage(
                        render_one(shape, color, kind, size, rng, any_rotation),
                        shape,
                        color,
                        kind,
                        size,
                    )


def save_eval_set(
    root: Path, seed: int, per_combo: int, any_rotation: bool = False
) -> list[tuple[Path, EvalImage]]:
    """Render the set to ``root`` (alternating PNG and JPEG quality 80–92); returns the files."""
    rows = []
    for i, item in enumerate(render_eval_set(seed, per_combo, any_rotation)):
        buf = io.BytesIO()
        if i % 2 == 0:
            item.image.save(buf, format="PNG")
        else:
            item.image.save(buf, format="JPEG", quality=80 + (i * 7) % 13)
        ext = "png" if i % 2 == 0 else "jpg"
        path = root / item.background / f"{item.color}_{item.shape}_{i:05d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
        rows.append((path, item))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=31337)
    p.add_argument("--per-combo", type=int, default=1, help="images per combo and background")
    p.add_argument("--any-rotation", action="store_true", help="turn squares and crosses freely")
    args = p.parse_args()
    rows = save_eval_set(args.out, args.seed, args.per_combo, args.any_rotation)
    print(f"wrote {len(rows)} images to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
