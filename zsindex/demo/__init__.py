"""The synthetic shapes world of ``zsindex-tiny``: rendered images and evaluation prompts.

Used by ``zsindex demo``, the tests, the benchmarks and the model's training and evaluation
scripts (``scripts/``). Only Pillow and numpy are imported (no torch).
"""

from __future__ import annotations

from zsindex.demo.render import (
    Sample,
    all_combos,
    check_combo,
    encode_image,
    jitter_color,
    pick_background,
    render_dataset,
    render_shape,
    write_image_folder,
)
from zsindex.demo.templates import EVAL_COLOR_TEMPLATES, EVAL_TEMPLATES

__all__ = [
    "EVAL_COLOR_TEMPLATES",
    "EVAL_TEMPLATES",
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
