"""A label set and images on which ``zsindex-tiny``'s zero-shot answer is wrong by construction.

The adaptation features (``labels tune``, ``calibrate``, ``--reject-below``, ``eval``'s ECE) are
only tested for what they are for where zero-shot errs, and the test must not depend on one
model's accidental mistakes (a retrained model that fixes them would make such tests vacuous or
failing). So the case is built so that even a perfect zero-shot model errs:

* the label names are shape words the model knows well (``circle``, ``square``, ``star``,
  ``cross``; :data:`TEAMS`), but each class is defined by a **colour** (think of teams named
  after their logo, recognised by their jersey colour);
* an image of a class shows its namesake shape one time in three; otherwise another shape,
  most often another label's namesake.

Zero-shot classifies by the shape the prompt names, so it is right on about a third of the
images and confidently wrong on the rest; a few labelled examples teach the colour (``tune``),
and the confident errors give ``calibrate`` an overconfident model to soften. How far zero-shot
is from the truth is measured in each test, never assumed. :data:`EXTRA` is a label without
examples (its class would be blue). Nothing here depends on the model's weights.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from zsindex.demo.render import encode_image, render_shape

#: Label name -> the colour that defines its class.
TEAMS: dict[str, str] = {"circle": "red", "square": "green", "star": "yellow", "cross": "white"}
EXTRA = "ring"
LABELS: list[str] = [*TEAMS, EXTRA]
#: Shapes an image of a class may show besides its namesake (a triangle belongs to no label).
_SHAPES = ("circle", "square", "star", "cross", "triangle")


def team_images(label: str, n: int, seed: int, size: int = 64) -> list[Image.Image]:
    """``n`` images of class ``label``: shapes of its colour, its namesake shape every third."""
    rng = np.random.default_rng(seed)
    others = [s for s in _SHAPES if s != label]
    out = []
    for i in range(n):
        shape = label if i % 3 == 0 else others[(i - 1 - i // 3) % len(others)]
        out.append(render_shape(shape, TEAMS[label], size, rng))
    return out


def team_pngs(label: str, n: int, seed: int, size: int = 64) -> list[bytes]:
    """:func:`team_images` as PNG bytes."""
    return [encode_image(img, "png") for img in team_images(label, n, seed, size)]
