"""The user's files, read by the CLI and handed down as content (and the export written).

Nothing below the CLI opens a path that a caller named: label files, template files, names
files and ``.npy`` matrices are read here, and their errors name the file and line.
"""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import numpy as np

from zsindex.errors import InvalidInputError
from zsindex.options import LabelNames, LabelSource, NodeText


def label_file(
    path: Path, format: str | None, *, node_text: NodeText, allow_duplicates: bool
) -> LabelSource:
    """``labels add --file``: the file's text with its format (given, or detected); ``-`` reads
    standard input (the format then comes from ``--format`` or the content)."""
    from zsindex.labels.formats import detect_format, read_text_file

    stdin = str(path) == "-"
    content = read_text_file(Path("/dev/stdin") if stdin else path)
    return LabelSource(
        content=content,
        format=format or detect_format(path, content),
        content_name="stdin" if stdin else str(path),
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


MAX_STREAM_BYTES = 256 * 1024 * 1024
"""Most bytes read from a pipe or device given as an image (a file is read by the pipeline)."""


def image_input(path: Path) -> Path | bytes:
    """An image argument as the pipeline takes it: a regular file stays a path; a pipe or
    device (``/dev/stdin``), which cannot seek back after the format is sniffed, is read whole.

    Raises:
        InvalidInputError: unreadable, or a stream over :data:`MAX_STREAM_BYTES`.
    """
    try:
        if stat.S_ISREG(os.stat(path).st_mode) or path.is_dir():
            return path
        with open(path, "rb") as fh:
            data = fh.read(MAX_STREAM_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > MAX_STREAM_BYTES:
        raise InvalidInputError(
            f"{path}: more than {MAX_STREAM_BYTES // 2**20} MiB from a stream: save the image "
            "to a file and classify that"
        )
    return data


NPY_MAGIC = b"\x93NUMPY"


def read_npy(path: Path) -> np.ndarray:
    """Memory-map a ``.npy`` matrix of float16/float32/float64 (pickles are never loaded)."""
    source: Path | io.BytesIO = path
    try:
        with open(path, "rb") as fh:
            if stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                magic = fh.read(len(NPY_MAGIC))
            else:  # a pipe cannot be opened twice or memory-mapped: read it whole
                source = io.BytesIO(fh.read())
                magic = source.getvalue()[: len(NPY_MAGIC)]
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if magic != NPY_MAGIC:
        # np.load takes any other file for a pickle and would say so.
        raise InvalidInputError(
            f"{path}: not a NumPy .npy file (no .npy header): save the matrix with "
            "numpy.save(path, array)"
        )
    try:
        if isinstance(source, Path):
            arr = np.load(source, mmap_mode="r", allow_pickle=False)
        else:
            arr = np.load(source, allow_pickle=False)
    except (ValueError, OSError) as exc:
        text = str(exc)
        if "object" in text.lower() or "pickle" in text.lower():
            raise InvalidInputError(
                f"{path}: holds Python objects (pickled), which are never loaded: save a "
                "float16/float32 matrix"
            ) from None
        raise InvalidInputError(f"{path}: not a readable .npy array ({text})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 2:
        raise InvalidInputError(
            f"{path}: expected a 2-D array, got shape {getattr(arr, 'shape', '?')}"
        )
    if arr.dtype not in (np.float16, np.float32, np.float64):
        raise InvalidInputError(f"{path}: dtype {arr.dtype} is not float16, float32 or float64")
    return arr


def write_export(directory: Path, matrix: np.ndarray, listing: list[object]) -> None:
    """``labels export``: ``DIR/embeddings.npy`` and ``DIR/names.json`` (DIR created).

    Raises:
        InvalidInputError: DIR cannot be a folder or cannot be written (one line naming it).
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "embeddings.npy", matrix)
        text = json.dumps(listing, ensure_ascii=False)
        (directory / "names.json").write_text(text, encoding="utf-8")
    except (NotADirectoryError, FileExistsError):
        raise InvalidInputError(
            f"{directory}: a part of this path is a file, not a folder: choose another folder"
        ) from None
    except OSError as exc:
        raise InvalidInputError(
            f"{directory}: cannot write the export there ({exc.strerror or exc}): choose a "
            "folder you can write to"
        ) from None
