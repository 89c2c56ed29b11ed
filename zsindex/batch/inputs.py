"""What a batch job reads: files, folders, globs, CSV/Parquet lists of paths, WebDataset shards.

Inputs are expanded once, at job start, into one ordered list of :class:`InputItem`, so the
job's parts (and a rerun's) cover the same images in the same order. Folders are walked as
``zsindex classify`` walks them (sorted, hidden entries skipped, every file taken: a file that is
not an image gets an error row), and images are named as ``classify`` names them, so the two
give the same ``source`` for the same file. A ``.tar`` shard is read in the img2dataset /
WebDataset layout: samples ``KEY.jpg`` (or another image extension) with optional
``KEY.json`` / ``KEY.txt``; each sample's image is named ``SHARD.tar/KEY`` and read later by
offset, so expanding a shard reads its headers, never its images.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from zsindex.errors import ImageTooLargeError, InvalidInputError

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"})
"""Tar members taken as a sample's image (WebDataset's own image keys)."""

MAX_MEMBER_BYTES = 256 * 1024 * 1024
"""A tar member larger than this gets an error row instead of being read into memory (files
on disk are decoded from the file, with the pixel limit checked from the header first)."""

PATH_COLUMNS = ("path", "image", "filepath", "file")
"""Columns of a CSV/Parquet list that may hold the image paths, in order of preference."""


@dataclass(frozen=True)
class InputItem:
    """One image of a job.

    Attributes:
        source: how results name it: the path as given (a folder's files: the folder as given
            joined with the path inside it), or ``SHARD.tar/KEY``.
        path: the file to read (the shard, for a tar member).
        offset: a tar member's data offset in the shard (``-1``: the whole file ``path``).
        size: a tar member's size in bytes.
    """

    source: str
    path: str
    offset: int = -1
    size: int = 0

    @property
    def in_shard(self) -> bool:
        return self.offset >= 0


def read_item(item: InputItem) -> Path | bytes:
    """The image to decode: a file stays a path (decoded from the file, header first); a tar
    member's bytes are read by offset."""
    if not item.in_shard:
        return Path(item.path)
    if item.size > MAX_MEMBER_BYTES:
        raise ImageTooLargeError(
            f"{item.source}: {item.size} bytes is over the {MAX_MEMBER_BYTES} byte limit of one "
            "image in a shard"
        )
    with open(item.path, "rb") as fh:
        fh.seek(item.offset)
        return fh.read(item.size)


def expand_inputs(inputs: Iterable[str]) -> list[InputItem]:
    """Every image the inputs name, in order (see the module's docstring).

    Raises:
        InvalidInputError: an input that does not exist (and is not a glob that matches), a
            list without a path column, an unreadable shard, or no images at all.
    """
    items: list[InputItem] = []
    for given in inputs:
        items.extend(_expand_one(given))
    if not items:
        raise InvalidInputError("no images found in " + ", ".join(inputs))
    return items


def _expand_one(given: str) -> Iterator[InputItem]:
    path = Path(given)
    if path.is_dir():
        yield from _walk_folder(given, path)
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".tar":
            yield from shard_items(given)
        elif suffix == ".csv":
            yield from _list_items(given, _csv_paths(path))
        elif suffix == ".parquet":
            yield from _list_items(given, _parquet_paths(path))
        else:
            yield InputItem(source=given, path=given)
    elif glob.has_magic(given):
        matches = sorted(glob.glob(given, recursive=True))
        if not matches:
            raise InvalidInputError(f"{given}: the pattern matches no files")
        for match in matches:
            yield from _expand_one(match)
    else:
        raise InvalidInputError(f"{given}: no such file, folder or matching pattern")


def _walk_folder(given: str, path: Path) -> Iterator[InputItem]:
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        inside = child.relative_to(path)
        if any(part.startswith(".") for part in inside.parts):
            continue
        yield InputItem(source=str(Path(given) / inside), path=str(child))


def shard_items(given: str) -> Iterator[InputItem]:
    """The samples of one WebDataset shard, in member order (one image per key: the first
    image member of that key)."""
    seen: set[str] = set()
    try:
        with tarfile.open(given, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = os.path.basename(member.name)
                if base.startswith("."):
                    continue
                stem, dot, ext = base.partition(".")
                # WebDataset: the key is everything before the first dot of the basename.
                key = os.path.join(os.path.dirname(member.name), stem)
                if not dot or ext.lower() not in IMAGE_EXTENSIONS or key in seen:
                    continue
                seen.add(key)
                yield InputItem(
                    source=f"{given}/{key}",
                    path=given,
                    offset=member.offset_data,
                    size=member.size,
                )
    except tarfile.TarError as exc:
        raise InvalidInputError(
            f"{given}: not a readable uncompressed tar shard ({exc}); give .tar files in the "
            "WebDataset layout (KEY.jpg + optional KEY.json/KEY.txt)"
        ) from None


def _pick_column(columns: list[str], given: str) -> str:
    lowered = {c.lower(): c for c in columns}
    for name in PATH_COLUMNS:
        if name in lowered:
            return lowered[name]
    raise InvalidInputError(
        f"{given}: no column of image paths; name it one of {', '.join(PATH_COLUMNS)} "
        f"(columns: {', '.join(columns) or 'none'})"
    )


def _csv_paths(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: cannot read the list ({exc})") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise InvalidInputError(f"{path}: the list is empty; its first line names the columns")
    column = header.index(_pick_column(header, str(path)))
    paths = []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if column >= len(row) or not row[column].strip():
            raise InvalidInputError(f"{path}, line {line}: no path in column {header[column]!r}")
        paths.append(row[column].strip())
    return paths


def _parquet_paths(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
        column = _pick_column(list(schema.names), str(path))
        values = pq.read_table(path, columns=[column]).column(column).to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InvalidInputError(f"{path}: not a readable Parquet list ({exc})") from None
    paths = []
    for row, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            raise InvalidInputError(f"{path}, row {row}: column {column!r} holds no path")
        paths.append(value.strip())
    return paths


def _list_items(given: str, paths: list[str]) -> Iterator[InputItem]:
    """A list's paths: relative ones are read relative to the list's folder and named as
    written in the list."""
    base = Path(given).parent
    for entry in paths:
        target = Path(entry) if os.path.isabs(entry) else base / entry
        yield InputItem(source=entry, path=str(target))
