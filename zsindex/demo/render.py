"""Deterministic renderer of the synthetic shapes world of ``zsindex-tiny``.

Every image shows ONE solid shape (see :data:`zsindex.labels.demo_vocab.SHAPES`) of a named colour
(see :data:`zsindex.labels.demo_vocab.COLORS`) at a varied size, position and rotation, on a plain
or lightly noisy grey/pastel background that always stays clearly distinct from the shape's colour.
The shade of the colour is jittered around its reference RGB, so a colour name means "a person's
idea of that colour", robust to shade.

The same renderer produces a fifth of the training data of ``scripts/train_tiny_model.py`` (the
rest, on hard backgrounds, comes from ``scripts/tiny_train_render.py``; captions from
``scripts/tiny_captions.py``), the demo-renderer evaluation of ``scripts/eval_tiny_model.py`` and
the images of ``zsindex demo`` and the tests. All randomness comes from the
:class:`numpy.random.Generator` passed in, so a seed reproduces images exactly. Only Pillow and
numpy are used (no torch).
"""

from __future__ import annotations

import colorsys
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from zsindex.labels.demo_vocab import COLOR_NAMES, COLORS, SHAPES

__all__ = [
    "Sample",
    "all_combos",
    "check_combo",
    "encode_image",
    "jitter_color",
    "pick_background",
    "render_dataset",
    "render_shape",
    "write_image_folder",
]

_GREY_RANGE = (40, 235)
_MIN_BG_DISTANCE = 110.0


@dataclass(frozen=True)
class Sample:
    """One rendered image with its ground truth.

    Attributes:
        image: The RGB image.
        shape: Name of the shape drawn (one of ``SHAPES``).
        color: Name of the shape's colour (one of ``COLOR_NAMES``).
    """

    image: Image.Image
    shape: str
    color: str


def all_combos() -> list[tuple[str, str]]:
    """Return all 48 ``(color, shape)`` pairs in vocabulary order (colours outer, shapes inner)."""
    return [(c, s) for c in COLOR_NAMES for s in SHAPES]


def check_combo(shape: str, color: str) -> None:
    """Raise :class:`ValueError` unless ``shape`` and ``color`` are in the vocabulary."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    if color not in COLORS:
        raise ValueError(f"unknown colour {color!r}; expected one of {', '.join(COLOR_NAMES)}")


def jitter_color(color: str, rng: np.random.Generator) -> tuple[int, int, int]:
    """Return a shade of the named colour: its reference RGB with jittered hue, saturation, value.

    Args:
        color: A colour name from ``COLORS``.
        rng: Source of randomness.

    Returns:
        An RGB triple that a person would still call ``color``.
    """
    if color not in COLORS:
        raise ValueError(f"unknown colour {color!r}; expected one of {', '.join(COLOR_NAMES)}")
    if color == "white":
        v = rng.uniform(232, 255)
        rgb = np.array([v, v, v]) + rng.uniform(-6, 6, size=3)
    elif color == "black":
        v = rng.uniform(0, 42)
        rgb = np.array([v, v, v]) + rng.uniform(-5, 5, size=3)
    else:
        r, g, b = (x / 255.0 for x in COLORS[color])
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        h = (h + rng.uniform(-0.022, 0.022)) % 1.0
        s = float(np.clip(s * rng.uniform(0.78, 1.08), 0.0, 1.0))
        # Dark yellow reads as olive and dark orange as brown: keep those bright.
        v_low = 0.88 if color in ("yellow", "orange") else 0.78
        v = float(np.clip(v * rng.uniform(v_low, 1.08), 0.0, 1.0))
        rgb = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0 + rng.uniform(-6, 6, size=3)
    out = np.clip(np.rint(rgb), 0, 255).astype(int)
    return int(out[0]), int(out[1]), int(out[2])


def pick_background(fg: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    """Pick a grey or pastel background colour clearly distinct from the foreground colour.

    Args:
        fg: The shape's RGB colour.
        rng: Source of randomness.

    Returns:
        An RGB triple at least a fixed RGB distance away from ``fg`` (so white and black shapes
        stay visible too).
    """
    fg_arr = np.asarray(fg, dtype=float)
    for _ in range(100):
        if rng.random() < 0.55:
            g = rng.uniform(*_GREY_RANGE)
            rgb = np.array([g, g, g]) + rng.uniform(-4, 4, size=3)
        else:
            h = rng.random()
            s = rng.uniform(0.06, 0.3)
            v = rng.uniform(0.72, 0.97)
            rgb = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0
        if float(np.linalg.norm(rgb - fg_arr)) >= _MIN_BG_DISTANCE:
            out = np.clip(np.rint(rgb), 0, 255).astype(int)
            return int(out[0]), int(out[1]), int(out[2])
    # Unreachable in practice: a mid grey is far from every jittered colour of the vocabulary.
    return (128, 128, 128)


def _polygon(
    points: Sequence[tuple[float, float]], cx: float, cy: float, angle: float
) -> list[tuple[float, float]]:
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in points]


def _draw_mask(
    shape: str, ss_size: int, cx: float, cy: float, r: float, rng: np.random.Generator
) -> Image.Image:
    """Draw the shape's coverage mask (255 inside) on a supersampled canvas."""
    mask = Image.new("L", (ss_size, ss_size), 0)
    d = ImageDraw.Draw(mask)
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "ring":
        inner = r * rng.uniform(0.5, 0.68)
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        d.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif shape == "square":
        h = r * 0.82
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
        d.polygon(_polygon(pts, cx, cy, math.radians(rng.uniform(-15, 15))), fill=255)
    elif shape == "triangle":
        pts = [
            (r * math.cos(math.radians(-90 + 120 * k)), r * math.sin(math.radians(-90 + 120 * k)))
            for k in range(3)
        ]
        # Centre the triangle's bounding box rather than its centroid.
        pts = [(x, y + r * 0.25) for x, y in pts]
        angle = math.radians(rng.uniform(-20, 20) + (180 if rng.random() < 0.2 else 0))
        d.polygon(_polygon(pts, cx, cy, angle), fill=255)
    elif shape == "star":
        inner = r * rng.uniform(0.38, 0.5)
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else inner
            a = math.radians(-90 + 36 * k)
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        d.polygon(_polygon(pts, cx, cy, math.radians(rng.uniform(-36, 36))), fill=255)
    elif shape == "cross":
        t = r * rng.uniform(0.28, 0.4)
        pts = [
            (-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t),
            (t, r), (-t, r), (-t, t), (-r, t), (-r, -t), (-t, -t),
        ]  # fmt: skip
        d.polygon(_polygon(pts, cx, cy, math.radians(rng.uniform(-12, 12))), fill=255)
    else:  # pragma: no cover - validated by callers
        raise ValueError(f"unknown shape {shape!r}")
    return mask


def render_shape(
    shape: str,
    color: str,
    size: int,
    rng: np.random.Generator,
    *,
    background: tuple[int, int, int] | None = None,
    noise: float | None = None,
    scale: tuple[float, float] = (0.36, 0.86),
) -> Image.Image:
    """Render one solid shape of a named colour on a plain or lightly noisy background.

    Args:
        shape: A shape name from ``SHAPES``.
        color: A colour name from ``COLORS``; its shade is jittered (see :func:`jitter_color`).
        size: Side of the square output image in pixels (at least 16).
        rng: Source of randomness (shade, background, size, position, rotation, noise).
        background: A fixed background RGB; by default a grey or pastel distinct from the shape.
        noise: Standard deviation of the Gaussian pixel noise; by default 0 half of the time,
            otherwise drawn from [1.5, 7].
        scale: Range of the shape's outer diameter as a fraction of ``size``.

    Returns:
        An RGB image of ``size`` × ``size`` pixels.
    """
    check_combo(shape, color)
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    fg = jitter_color(color, rng)
    bg = background if background is not None else pick_background(fg, rng)
    ss = 4 if size <= 128 else 2
    big = size * ss
    r = 0.5 * rng.uniform(*scale) * big
    margin = 0.03 * big
    cx = rng.uniform(r + margin, big - r - margin) if big - 2 * (r + margin) > 0 else big / 2
    cy = rng.uniform(r + margin, big - r - margin) if big - 2 * (r + margin) > 0 else big / 2
    mask = _draw_mask(shape, big, cx, cy, r, rng).resize((size, size), Image.Resampling.BOX)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] * np.float32(1.0 / 255.0)
    bg_arr = np.asarray(bg, np.float32)
    img = bg_arr + alpha * (np.asarray(fg, np.float32) - bg_arr)
    sigma = noise if noise is not None else (0.0 if rng.random() < 0.5 else rng.uniform(1.5, 7.0))
    if sigma > 0:
        img += rng.standard_normal(size=img.shape, dtype=np.float32) * np.float32(sigma)
    img += np.float32(0.5)  # round half up on the cast below
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def encode_image(image: Image.Image, fmt: str, quality: int = 85) -> bytes:
    """Encode an image as PNG or JPEG bytes.

    Args:
        image: The image to encode.
        fmt: ``"png"`` or ``"jpeg"`` (``"jpg"`` accepted).
        quality: JPEG quality.

    Returns:
        The encoded file's bytes.
    """
    buf = io.BytesIO()
    f = fmt.lower()
    if f == "png":
        image.save(buf, format="PNG")
    elif f in ("jpeg", "jpg"):
        image.save(buf, format="JPEG", quality=quality)
    else:
        raise ValueError(f"fmt must be 'png' or 'jpeg', got {fmt!r}")
    return buf.getvalue()


def render_dataset(
    n: int,
    size: int | tuple[int, int],
    seed: int,
    *,
    combos: Sequence[tuple[str, str]] | None = None,
) -> Iterator[Sample]:
    """Render ``n`` images, cycling through the colour–shape combinations in a fixed order.

    Args:
        n: Number of images.
        size: Side in pixels, or an inclusive ``(low, high)`` range to draw each side from.
        seed: Seed of the generator; the same arguments always give the same images.
        combos: ``(color, shape)`` pairs to cycle through; all 48 by default.

    Yields:
        :class:`Sample` objects.
    """
    rng = np.random.default_rng(seed)
    pairs = list(combos) if combos is not None else all_combos()
    if not pairs:
        raise ValueError("combos must not be empty")
    for i in range(n):
        color, shape = pairs[i % len(pairs)]
        side = size if isinstance(size, int) else int(rng.integers(size[0], size[1] + 1))
        yield Sample(render_shape(shape, color, side, rng), shape, color)


def write_image_folder(
    root: str | Path,
    task: str,
    per_class: int,
    size: int,
    seed: int,
    *,
    fmt: str = "png",
) -> list[Path]:
    """Write an ImageFolder-layout data set (one sub-folder per class) of rendered images.

    Args:
        root: Folder to create the class folders in.
        task: ``"shape"`` (folders named after shapes), ``"color"`` (after colours) or
            ``"combo"`` (``"<color> <shape>"``, 48 folders).
        per_class: Images per class.
        size: Image side in pixels.
        seed: Seed; the same arguments always give the same files.
        fmt: ``"png"`` or ``"jpeg"``.

    Returns:
        The paths written, in order.
    """
    if task not in ("shape", "color", "combo"):
        raise ValueError(f"task must be 'shape', 'color' or 'combo', got {task!r}")
    rng = np.random.default_rng(seed)
    ext = "png" if fmt.lower() == "png" else "jpg"
    out: list[Path] = []
    root = Path(root)
    for i in range(per_class):
        for color, shape in all_combos():
            if task == "shape":
                if i % len(COLOR_NAMES) != COLOR_NAMES.index(color):
                    continue
                label = shape
            elif task == "color":
                if i % len(SHAPES) != SHAPES.index(shape):
                    continue
                label = color
            else:
                label = f"{color} {shape}"
            img = render_shape(shape, color, size, rng)
            path = root / label / f"{label.replace(' ', '_')}_{i:04d}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_image(img, fmt))
            out.append(path)
    return out
