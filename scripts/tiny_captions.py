"""The training captions of ``zsindex-tiny`` (used by ``scripts/train_tiny_model.py``).

Each image of the synthetic world (:mod:`zsindex.demo.render`) is captioned with its colour and
shape, its shape alone or its colour alone, from the templates below; some colour–shape
combinations (:data:`HELD_OUT_COMBOS`) never get a colour+shape caption, to measure composition.
``scripts/eval_tiny_model.py`` reads the templates too, to check that no evaluation prompt is a
training caption. All randomness comes from the :class:`numpy.random.Generator` passed in, so a
seed reproduces the captions exactly.
"""

from __future__ import annotations

import numpy as np

from zsindex.demo.render import check_combo

#: Colour–shape combinations never shown with a colour+shape caption during training (images of
#: them do appear with shape-only and colour-only captions); used to measure composition.
HELD_OUT_COMBOS: tuple[tuple[str, str], ...] = (
    ("red", "star"),
    ("blue", "ring"),
    ("white", "triangle"),
    ("orange", "square"),
)

#: Caption templates naming colour and shape; ``{c}`` is the colour, ``{s}`` the shape and
#: ``{a}`` the article ("a"/"an") before the colour.
COMBO_TEMPLATES: tuple[str, ...] = (
    "a photo of {a} {c} {s}.",
    "{a} {c} {s}",
    "{a} {c} {s}.",
    "a drawing of {a} {c} {s}.",
    "a photo of the {c} {s}.",
    "the {c} {s}",
    "{c} {s}",
    "a sketch of {a} {c} {s}.",
    "{a} {c} {s} on a plain background.",
    "this is {a} {c} {s}.",
    "a {s} that is {c}.",
    "a {c} colored {s}",
    "a {s} in {c}",
)

#: Caption templates naming the shape alone (``{s}``; ``{a}`` is its article).
SHAPE_TEMPLATES: tuple[str, ...] = (
    "{a} {s}",
    "{a} {s}.",
    "a photo of {a} {s}.",
    "a drawing of {a} {s}.",
    "the {s}",
    "{s}",
    "a sketch of {a} {s}.",
    "this is {a} {s}.",
    "a {s} shape",
    "{a} {s} on a plain background.",
)

#: Caption templates naming the colour alone (``{c}``; ``{a}`` is its article).
COLOR_TEMPLATES: tuple[str, ...] = (
    "something {c}",
    "something {c}.",
    "{a} {c} object",
    "{a} {c} shape.",
    "a photo of something {c}.",
    "the colour {c}",
    "the color {c}.",
    "{c}",
    "an object that is {c}.",
    "a drawing of something {c}.",
    "it is {c}.",
)


def _article(word: str, rng: np.random.Generator | None) -> str:
    proper = "an" if word[0] in "aeiou" else "a"
    # Prompts such as "a photo of a {}." put "a" before every label, so "a orange" is seen too.
    if proper == "an" and rng is not None and rng.random() < 0.3:
        return "a"
    return proper


def _fill(
    template: str, shape: str | None, color: str | None, rng: np.random.Generator | None
) -> str:
    if "{a} {c}" in template and color is not None:
        art = _article(color, rng)
    elif "{a} {s}" in template and shape is not None:
        art = _article(shape, rng)
    else:
        art = "a"
    return template.format(a=art, c=color or "", s=shape or "")


def captions_for(
    shape: str,
    color: str,
    rng: np.random.Generator | None = None,
    *,
    include_combo: bool = True,
) -> list[str]:
    """Return every caption that truthfully describes an image of ``color`` ``shape``.

    Args:
        shape: A shape name from ``SHAPES``.
        color: A colour name from ``COLORS``.
        rng: If given, the list is shuffled with it and some "an" articles become "a".
        include_combo: Include the captions naming both colour and shape (training leaves them
            out for :data:`HELD_OUT_COMBOS`).

    Returns:
        Colour+shape captions (when ``include_combo``), then shape-only and colour-only captions
        (shuffled together when ``rng`` is given).
    """
    check_combo(shape, color)
    caps = [_fill(t, shape, color, rng) for t in COMBO_TEMPLATES] if include_combo else []
    caps += [_fill(t, shape, None, rng) for t in SHAPE_TEMPLATES]
    caps += [_fill(t, None, color, rng) for t in COLOR_TEMPLATES]
    if rng is not None:
        rng.shuffle(caps)
    return caps


def sample_caption(
    shape: str,
    color: str,
    rng: np.random.Generator,
    *,
    kind: str | None = None,
) -> tuple[str, str | None, str | None]:
    """Sample one caption for an image of ``color`` ``shape``.

    Args:
        shape: A shape name from ``SHAPES``.
        color: A colour name from ``COLORS``.
        rng: Source of randomness.
        kind: ``"combo"``, ``"shape"`` or ``"color"``; by default combo half of the time, else
            shape-only or colour-only. Held-out combos never get a combo caption by default.

    Returns:
        ``(caption, shape_or_None, color_or_None)``: the caption and the attributes it names.
    """
    check_combo(shape, color)
    if kind is None:
        u = rng.random()
        kind = "combo" if u < 0.5 else ("shape" if u < 0.75 else "color")
        if kind == "combo" and (color, shape) in HELD_OUT_COMBOS:
            kind = "shape" if rng.random() < 0.5 else "color"
    if kind == "combo":
        t = COMBO_TEMPLATES[int(rng.integers(len(COMBO_TEMPLATES)))]
        return _fill(t, shape, color, rng), shape, color
    if kind == "shape":
        t = SHAPE_TEMPLATES[int(rng.integers(len(SHAPE_TEMPLATES)))]
        return _fill(t, shape, None, rng), shape, None
    if kind == "color":
        t = COLOR_TEMPLATES[int(rng.integers(len(COLOR_TEMPLATES)))]
        return _fill(t, None, color, rng), None, color
    raise ValueError(f"kind must be 'combo', 'shape' or 'color', got {kind!r}")
