"""Prompt templates for zero-shot evaluation of ``zsindex-tiny``, none of them a training caption.

Used by ``scripts/eval_tiny_model.py``, the training script's accuracy monitor and the tests;
keeping them out of the training captions (``scripts/tiny_captions.py``) is what makes them a
zero-shot measure.
"""

from __future__ import annotations

__all__ = ["EVAL_COLOR_TEMPLATES", "EVAL_TEMPLATES"]

#: Prompt templates NOT used in training, for zero-shot evaluation of shapes and colour+shape
#: labels (``{}`` is the label, e.g. ``"circle"`` or ``"red circle"``).
EVAL_TEMPLATES: tuple[str, ...] = (
    "an image of a {}.",
    "a picture showing a {}.",
    "a rendering of a {}.",
)

#: Prompt templates NOT used in training, for zero-shot evaluation of colour labels.
EVAL_COLOR_TEMPLATES: tuple[str, ...] = (
    "an image of something {}.",
    "a picture showing something {}.",
    "a rendering of something {}.",
)
