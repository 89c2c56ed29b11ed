"""Label files: ``text``, ``csv``, ``json``, ``yaml`` and ``taxonomy-csv``, parsed and validated.

- ``text``: one label per line; surrounding spaces/tabs removed; blank lines and lines whose
  first non-space character is ``#`` skipped (a ``#`` inside a label is kept).
- ``csv``: a header is required, with a ``label`` (alias ``name``) column and optional ``prompt``
  and ``parent`` columns, in any order. With a ``prompt`` column, rows sharing the same label and
  parent are one label whose prompts are the non-empty ``prompt`` cells (CuPL as CSV); a label
  with only empty prompts uses the templates. ``parent`` names another label of the file (before
  or after); empty means a root. A parent that is not in the file, or whose name several labels
  share, is an error naming the line.
- ``json`` / ``yaml``: see :mod:`zsindex.labels.structured`.
- ``taxonomy-csv``: see :mod:`zsindex.labels.taxonomy`.

Detection (:func:`detect_format`) when no format is forced: ``.txt``/``.text``/``.lst`` → text;
``.json``; ``.yaml``/``.yml``; ``.csv`` → ``csv`` when the header has a ``label`` or ``name``
column, else ``taxonomy-csv`` (the header names ranks); other extensions → ``json`` if the content
starts with ``[`` or ``{``, else ``text``.
"""

from __future__ import annotations

import csv
import io
from array import array
from pathlib import Path

from zsindex.errors import InvalidInputError
from zsindex.labels._csv import csv_rows
from zsindex.labels._text import short
from zsindex.labels.spec import LabelSetSpec
from zsindex.labels.structured import load_json, load_yaml, spec_from_document
from zsindex.labels.taxonomy import NodeText, parse_taxonomy_csv
from zsindex.labels.validate import DEFAULT_LIMITS, Limits, validate_spec

LABEL_FORMATS: tuple[str, ...] = ("text", "csv", "json", "yaml", "taxonomy-csv")
CSV_COLUMNS: dict[str, str] = {
    "label": "label",
    "name": "label",
    "prompt": "prompt",
    "parent": "parent",
}

_EXTENSIONS = {
    ".txt": "text",
    ".text": "text",
    ".lst": "text",
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
}


def read_text_file(path: Path) -> str:
    """Read a UTF-8 file (a BOM is dropped); errors name the file and line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInputError(
            f"{path}, line {line}: not valid UTF-8 (byte {exc.start}): save the file as UTF-8"
        ) from None


def _csv_header_is_labels(content: str) -> bool:
    for row in csv.reader(io.StringIO(content.removeprefix("\ufeff"), newline="")):
        cells = [c.strip().lower() for c in row]
        if any(cells):
            return "label" in cells or "name" in cells
    return True


def detect_format(path: str | Path, content: str) -> str:
    """Pick a label format from a file name and its content (see the module docstring)."""
    suffix = Path(path).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if suffix == ".csv":
        return "csv" if _csv_header_is_labels(content) else "taxonomy-csv"
    return "json" if content.lstrip("\ufeff \t\r\n")[:1] in ("[", "{") else "text"


def parse_text(content: str, source: str) -> LabelSetSpec:
    """Parse the ``text`` format (not yet validated)."""
    names: list[str] = []
    lines = array("q")
    skipped = False
    # split("\n"), not splitlines(): other line breaks are control characters to report.
    for number, raw in enumerate(content.removeprefix("\ufeff").split("\n"), start=1):
        text = raw.strip(" \t\r")
        if not text or text.startswith("#"):
            skipped = True
            continue
        names.append(text)
        lines.append(number)
    line_info = range(1, len(names) + 1) if not skipped else lines
    return LabelSetSpec(names=tuple(names), source=source, lines=line_info)


def parse_csv(content: str, source: str) -> LabelSetSpec:
    """Parse the ``csv`` format (``label[,prompt][,parent]``; not yet validated)."""
    columns: dict[str, int] | None = None
    names: list[str] = []
    parent_names: list[str] = []
    prompts: list[list[str]] = []
    lines = array("q")
    merge: dict[tuple[str, str], int] = {}
    for line, row in csv_rows(content, source):
        if columns is None:
            if any(c.strip() for c in row):
                columns = _csv_columns(row, f"{source}, line {line}")
            continue
        if not any(c.strip() for c in row):
            continue
        if len(row) > len(columns):
            raise InvalidInputError(
                f"{source}, line {line}: {len(row)} cells but the header has "
                f"{len(columns)} columns: quote cells that contain commas"
            )
        cells = {k: (row[i].strip(" \t") if i < len(row) else "") for k, i in columns.items()}
        label, parent, prompt = cells["label"], cells.get("parent", ""), cells.get("prompt", "")
        if "prompt" in columns:
            node = merge.get((label, parent))
            if node is not None:
                if prompt:
                    prompts[node].append(prompt)
                continue
            merge[(label, parent)] = len(names)
        names.append(label)
        parent_names.append(parent)
        prompts.append([prompt] if prompt else [])
        lines.append(line)
    if columns is None:
        raise InvalidInputError(
            f"{source}: empty file: write a header (label[,prompt][,parent]), then rows"
        )
    parents = _resolve_parents(names, parent_names, lines, source) if "parent" in columns else None
    return LabelSetSpec(
        names=tuple(names),
        parents=parents,
        prompts=tuple(tuple(p) if p else None for p in prompts) if any(prompts) else None,
        source=source,
        lines=lines,
    )


def _csv_columns(header: list[str], where: str) -> dict[str, int]:
    columns: dict[str, int] = {}
    for i, cell in enumerate(header):
        key = CSV_COLUMNS.get(cell.strip().lower())
        if key is None:
            raise InvalidInputError(
                f"{where}: unknown column {short(cell.strip())}: the header may name label "
                "(or name), prompt and parent; for a taxonomy use --format taxonomy-csv"
            )
        if key in columns:
            raise InvalidInputError(f"{where}: column {key!r} appears twice in the header")
        columns[key] = i
    if "label" not in columns:
        raise InvalidInputError(f"{where}: the header has no 'label' column")
    return columns


def _resolve_parents(
    names: list[str], parent_names: list[str], lines: array[int], source: str
) -> tuple[int | None, ...]:
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        index[name] = -1 if name in index else i  # -1: shared by several labels
    out: list[int | None] = []
    for i, parent in enumerate(parent_names):
        if not parent:
            out.append(None)
            continue
        node = index.get(parent)
        if node is None:
            raise InvalidInputError(
                f"{source}, line {lines[i]}: parent {short(parent)} is not a label of this "
                "file: add a row for it or fix the name"
            )
        if node < 0:
            raise InvalidInputError(
                f"{source}, line {lines[i]}: parent {short(parent)} is ambiguous (several "
                "labels have that name): use a taxonomy CSV or a nested JSON tree"
            )
        out.append(node)
    return tuple(out)


def parse_labels_text(
    content: str,
    format: str,
    source_name: str,
    *,
    allow_duplicates: bool = False,
    node_text: NodeText = "name",
    limits: Limits | None = None,
) -> LabelSetSpec:
    """Parse and validate a label file's text (the HTTP API's ``{"format", "content"}``).

    Args:
        content: the file's text.
        format: one of :data:`LABEL_FORMATS`.
        source_name: the name used in error messages (a file name or ``"content"``).
        allow_duplicates: accept duplicate labels (identified by position).
        node_text: ``taxonomy-csv`` only: ``"name"`` or ``"path"`` (ignored by other formats).
        limits: size limits (default :data:`~zsindex.labels.validate.DEFAULT_LIMITS`).

    Returns:
        A validated :class:`LabelSetSpec`.

    Raises:
        InvalidInputError: unknown format, or any parse/validation problem (naming the line).
    """
    limits = limits or DEFAULT_LIMITS
    if format not in LABEL_FORMATS:
        raise InvalidInputError(
            f"unknown label format {format!r}: use one of {', '.join(LABEL_FORMATS)}"
        )
    if format == "json":
        return spec_from_document(
            load_json(content, source_name),
            source_name,
            allow_duplicates=allow_duplicates,
            limits=limits,
        )
    if format == "yaml":
        return spec_from_document(
            load_yaml(content, source_name),
            source_name,
            allow_duplicates=allow_duplicates,
            limits=limits,
            yaml_hints=True,
        )
    if format == "text":
        spec = parse_text(content, source_name)
    elif format == "csv":
        spec = parse_csv(content, source_name)
    else:
        spec = parse_taxonomy_csv(
            content,
            source_name,
            node_text=node_text,
            allow_duplicates=allow_duplicates,
            limits=limits,
        )
    return validate_spec(spec, allow_duplicates=allow_duplicates, limits=limits)


def parse_labels_file(
    path: str | Path,
    format: str | None = None,
    *,
    allow_duplicates: bool = False,
    node_text: NodeText = "name",
    limits: Limits | None = None,
) -> LabelSetSpec:
    """Read, parse and validate a label file (``labels add --file``).

    Args:
        path: the file.
        format: force a format (``--format``); ``None`` detects it (:func:`detect_format`).
        allow_duplicates: accept duplicate labels.
        node_text: ``taxonomy-csv`` only: ``"name"`` or ``"path"``.
        limits: size limits.

    Returns:
        A validated :class:`LabelSetSpec` whose ``source`` is the path.

    Raises:
        InvalidInputError: unreadable file, unknown format, or a problem naming file and line.
    """
    path = Path(path)
    content = read_text_file(path)
    fmt = format or detect_format(path, content)
    return parse_labels_text(
        content,
        fmt,
        str(path),
        allow_duplicates=allow_duplicates,
        node_text=node_text,
        limits=limits,
    )


def split_inline(text: str, source: str = "--labels") -> list[str]:
    """``"a, b,c"`` → ``["a", "b", "c"]``: commas separate, surrounding spaces go.

    A label containing a comma needs a file. An empty item (``"a,,b"``) is an error naming it.
    """
    items = [item.strip(" \t") for item in text.split(",")]
    if len(items) > 1 and not items[-1]:
        items.pop()  # a trailing comma is harmless
    for i, item in enumerate(items):
        if not item:
            raise InvalidInputError(
                f"{source}: item {i + 1} is empty: separate labels with single commas"
            )
    return items


def parse_inline(
    text: str,
    *,
    allow_duplicates: bool = False,
    limits: Limits | None = None,
    source: str = "--labels",
) -> LabelSetSpec:
    """Parse ``--labels "a,b,c"`` (see :func:`split_inline`) into a validated spec.

    Raises:
        InvalidInputError: naming the item.
    """
    spec = LabelSetSpec(names=tuple(split_inline(text, source)), source=source)
    return validate_spec(spec, allow_duplicates=allow_duplicates, limits=limits)
