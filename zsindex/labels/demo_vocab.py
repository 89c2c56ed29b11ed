"""The vocabulary of the synthetic shapes world that ``zsindex-tiny`` was trained on.

Shared by the training data renderer, the built-in demo label sets and the demo.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")

# A person's idea of each colour, as RGB; the renderer jitters shade around these.
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

COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
