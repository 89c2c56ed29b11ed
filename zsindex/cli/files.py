"""The user's files, read by the CLI and handed down as content.

Nothing below the CLI opens a path that a caller named: label files, template files, names
files and ``.npy`` matrices are read here, and their errors name the file and line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zsindex.errors import InvalidInputError
from zsindex.options import LabelNames, LabelSource, NodeText


def label_file(
    path: Path, format: str | None, *, node_text: NodeText, allow_duplicates: bool
) -> LabelSource:
    """``labels add --file``: the file's text with its format (given, or detected)."""
    from zsindex.labels.formats import detect_format, read_text_file

    content = read_text_file(path)
    return LabelSource(
        content=content,
        format=format or detect_format(path, content),
        content_name=str(path),
        node_text=node_text,
        allow_duplicates=allow_duplicates,
    )


def inline_labels(text: str, *, allow_duplicates: bool) -> LabelSource:
    """``labels add --labels "a,b,c"``: comma-separated labels, surrounding spaces removed."""
    from zsindex.labels.formats import split_inline

    return LabelSource(labels=split_inline(text), allow_duplicates=allow_duplicates)


def templates_option(value: str | None) -> tuple[str, ...] | str | None:
    """``--templates``: a named set is passed on by name; anything else is a template file,
    read here (a JSON list, or one template per line)."""
    from zsindex.labels.templates import TEMPLATE_SET_NAMES, resolve_templates

    if value is None or value in TEMPLATE_SET_NAMES:
        return value
    return resolve_templates(value, allow_files=True)


def names_file(path: Path) -> LabelNames:
    """``labels import --names``: the names file's text (its format detected from it)."""
    from zsindex.labels.formats import read_text_file

    return LabelNames(content=read_text_file(path), content_name=str(path))


def read_npy(path: Path) -> np.ndarray:
    """Memory-map a ``.npy`` matrix of float16/float32/float64 (pickles are never loaded)."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InvalidInputError(f"{path}: not a readable .npy array ({exc})") from exc
    if not isinstance(arr, np.ndarray) or arr.ndim != 2:
        raise InvalidInputError(
            f"{path}: expected a 2-D array, got shape {getattr(arr, 'shape', '?')}"
        )
    if arr.dtype not in (np.float16, np.float32, np.float64):
        raise InvalidInputError(f"{path}: dtype {arr.dtype} is not float16, float32 or float64")
    return arr
