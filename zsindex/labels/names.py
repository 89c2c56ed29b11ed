"""Names files for ``labels import`` (precomputed embeddings, one row per name or per leaf).

Accepted (detected from the extension and content; ``format`` forces one of :data:`NAMES_FORMATS`):

- ``text``: one name per line — every line is a row (no comments; a blank line is an error, so
  rows can never silently shift against the embeddings).
- ``json``: a list of names; a list of ``{"name": str, "parent": str | int | null,
  "rank"?: str}`` (what ``labels export`` writes for trees: ``parent`` is the parent's name, or
  its row index when names repeat; null = a root; ``rank`` the node's rank, from which the rank
  names by depth are rebuilt); or pybioclip's TreeOfLife names
  ``[[[kingdom, phylum, class, order, family, genus, species], common_name], ...]``.
- ``csv``: header ``name,parent`` (or just ``name``); an empty parent makes a root.

Rows map to nodes through :attr:`NamesSpec.row_nodes`: the identity for every format except
TreeOfLife, where each row is a LEAF (its path's last non-empty rank) and the internal nodes
(kingdom … genus) are built from the paths and have no embedding row.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zsindex.errors import InvalidInputError
from zsindex.labels._csv import csv_rows
from zsindex.labels._text import short
from zsindex.labels.formats import read_text_file
from zsindex.labels.spec import LabelSetSpec
from zsindex.labels.structured import load_json
from zsindex.labels.taxonomy import PathTreeBuilder, clean_path
from zsindex.labels.validate import DEFAULT_LIMITS, Limits, check_count, validate_spec

NAMES_FORMATS: tuple[str, ...] = ("text", "json", "csv")
_NODE_KEYS = frozenset({"name", "parent", "rank"})
TOL_RANKS: tuple[str, ...] = ("kingdom", "phylum", "class", "order", "family", "genus", "species")


@dataclass(frozen=True)
class NamesSpec:
    """A parsed names file.

    Attributes:
        spec: the validated label set (flat, or a tree).
        row_nodes: ``row_nodes[r]`` is the node index of input row ``r`` (= embeddings row ``r``).
            Nodes not in it (TreeOfLife internal nodes) have no embedding row.
        kind: ``"names"``, ``"tree"`` or ``"treeoflife"``.
    """

    spec: LabelSetSpec
    row_nodes: Sequence[int]
    kind: str

    @property
    def num_rows(self) -> int:
        """How many embedding rows the file describes."""
        return len(self.row_nodes)


def _text(content: str, source: str) -> LabelSetSpec:
    rows = content.removeprefix("\ufeff").split("\n")
    if rows and rows[-1].strip(" \t\r") == "":
        rows.pop()  # the final newline
    names = tuple(row.rstrip("\r") for row in rows)
    return LabelSetSpec(names=names, source=source, lines=range(1, len(names) + 1))


def resolve_parent_refs(
    names: Sequence[str], refs: Sequence[object], where: Callable[[int], str], source: str
) -> tuple[int | None, ...]:
    """Turn per-row parent references into node indices.

    Args:
        names: the row names.
        refs: per row, the parent's name, its row index, or ``None``/``""`` for a root.
        where: row index → location text for messages (e.g. ``"file.csv, line 3"``).
        source: the file or field name.

    Raises:
        InvalidInputError: an unknown or ambiguous parent name, a row index out of range, or a
            reference of the wrong type (cycles are left to the validator).
    """
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        index[name] = -1 if name in index else i
    out: list[int | None] = []
    for i, ref in enumerate(refs):
        if ref is None or ref == "":
            out.append(None)
        elif type(ref) is int:
            if not 0 <= ref < len(names):
                raise InvalidInputError(
                    f"{where(i)}: parent row {ref} does not exist (parent rows are numbered "
                    f"from 0, as embedding rows: 0..{len(names) - 1})"
                )
            out.append(ref)
        elif isinstance(ref, str):
            node = index.get(ref)
            if node is None:
                raise InvalidInputError(
                    f"{where(i)}: parent {short(ref)} is not a name in this file: add it or fix it"
                )
            if node < 0:
                raise InvalidInputError(
                    f"{where(i)}: parent {short(ref)} is ambiguous (several rows have that name): "
                    "give the parent's row index instead"
                )
            out.append(node)
        else:
            raise InvalidInputError(
                f"{where(i)}: parent must be a name, a row index or null, not {type(ref).__name__}"
            )
    return tuple(out)


def _csv(content: str, source: str) -> LabelSetSpec:
    header: list[str] | None = None
    names: list[str] = []
    refs: list[str] = []
    lines = array("q")
    for line, row in csv_rows(content, source):
        if header is None:
            header = [c.strip().lower() for c in row]
            if header not in (["name"], ["name", "parent"]):
                raise InvalidInputError(
                    f"{source}, line 1: the header must be 'name,parent' (or 'name'), not "
                    f"{short(','.join(row))}"
                )
            continue
        if not row:
            row = [""]
        if len(row) > len(header):
            raise InvalidInputError(
                f"{source}, line {line}: {len(row)} cells for {len(header)} "
                "columns: quote names that contain commas"
            )
        names.append(row[0])
        refs.append(row[1].strip() if len(row) > 1 else "")
        lines.append(line)
    if header is None:
        raise InvalidInputError(f"{source}: empty file: write the header 'name,parent', then rows")
    parents = None
    if len(header) == 2:
        parents = resolve_parent_refs(names, refs, lambda i: f"{source}, line {lines[i]}", source)
    return LabelSetSpec(names=tuple(names), parents=parents, source=source, lines=lines)


def _is_tol_row(row: object) -> bool:
    return (
        isinstance(row, list)
        and len(row) == 2
        and isinstance(row[0], list)
        and (row[1] is None or isinstance(row[1], str))
    )


def _treeoflife(
    data: list[Any], source: str, allow_duplicates: bool, limits: Limits
) -> tuple[LabelSetSpec, array[int]]:
    builder = PathTreeBuilder(
        lambda r: f"{source}: row {r + 1}", allow_duplicates=allow_duplicates, limits=limits
    )
    row_nodes = array("q")
    common: dict[int, str] = {}
    add, max_ranks = builder.add, len(TOL_RANKS)
    for r, row in enumerate(data):
        try:
            ranks, common_name = row
            "".join(ranks)  # a C-level check that every cell is a string
            ok = type(ranks) is list and 0 < len(ranks) <= max_ranks
        except (TypeError, ValueError):
            ok = False
        if not ok or (common_name is not None and type(common_name) is not str):
            raise InvalidInputError(
                f"{source}: row {r + 1}: expected [[kingdom, ..., species], common_name] with at "
                f"most {max_ranks} rank strings, like the other rows"
            )
        if not ranks[-1] or "" in ranks:
            ranks = clean_path(ranks, f"{source}: row {r + 1}", TOL_RANKS)
            if not ranks:
                raise InvalidInputError(f"{source}: row {r + 1}: the taxonomy is empty")
        node = add(ranks, r)
        row_nodes.append(node)
        if common_name:
            common[node] = common_name
    n = len(builder.names)
    spec = LabelSetSpec(
        names=tuple(builder.names),
        parents=tuple(builder.parents),
        rank_names=TOL_RANKS,
        source=source,
        allow_duplicates=allow_duplicates,
        node_meta={"common_name": tuple(common.get(i) for i in range(n))},
    )
    return spec, row_nodes


def _json(
    content: str, source: str, allow_duplicates: bool, limits: Limits
) -> tuple[LabelSetSpec, Sequence[int], str]:
    data = load_json(content, source)
    if not isinstance(data, list) or not data:
        raise InvalidInputError(
            f"{source}: expected a non-empty JSON list of names, of {{name, parent}} objects, "
            "or TreeOfLife rows"
        )
    check_count(len(data), source, limits)
    first = data[0]
    if _is_tol_row(first):
        spec, rows = _treeoflife(data, source, allow_duplicates, limits)
        return spec, rows, "treeoflife"
    if isinstance(first, dict):
        names: list[str] = []
        refs: list[object] = []
        ranks: list[str | None] = []
        for r, item in enumerate(data):
            if not isinstance(item, dict) or "name" not in item or set(item) - _NODE_KEYS:
                raise InvalidInputError(
                    f"{source}: item {r + 1}: expected an object with 'name', 'parent' and "
                    "optionally 'rank', like the others"
                )
            names.append(item["name"])
            refs.append(item.get("parent"))
            ranks.append(item.get("rank"))
        if not all(isinstance(n, str) for n in names):
            bad = next(r for r, n in enumerate(names) if not isinstance(n, str))
            raise InvalidInputError(f"{source}: item {bad + 1}: name must be a string")
        parents = resolve_parent_refs(names, refs, lambda i: f"{source}: item {i + 1}", source)
        has_ranks = any(rank is not None for rank in ranks)
        spec = LabelSetSpec(
            names=tuple(names),
            parents=parents,
            ranks=tuple(ranks) if has_ranks else None,  # validated (and named by depth) later
            source=source,
        )
        return spec, range(len(names)), "tree"
    return LabelSetSpec(names=tuple(data), source=source), range(len(data)), "names"


def parse_names_text(
    content: str,
    format: str,
    source_name: str,
    *,
    allow_duplicates: bool = False,
    limits: Limits | None = None,
) -> NamesSpec:
    """Parse and validate a names file's text; see :func:`parse_names_file`."""
    limits = limits or DEFAULT_LIMITS
    if format not in NAMES_FORMATS:
        raise InvalidInputError(
            f"unknown names format {format!r}: use one of {', '.join(NAMES_FORMATS)}"
        )
    rows: Sequence[int]
    if format == "json":
        spec, rows, kind = _json(content, source_name, allow_duplicates, limits)
    else:
        spec = _text(content, source_name) if format == "text" else _csv(content, source_name)
        rows, kind = range(len(spec.names)), "tree" if spec.parents is not None else "names"
    spec = validate_spec(spec, allow_duplicates=allow_duplicates, limits=limits)
    return NamesSpec(spec=spec, row_nodes=rows, kind=kind)


def detect_names_format(name: str, content: str) -> str:
    """``.json``/``.csv`` by the name's extension, else JSON when the content starts with
    ``[``, else text."""
    suffix = Path(name).suffix.lower()
    if suffix in (".json", ".csv"):
        return suffix[1:]
    return "json" if content.lstrip("\ufeff \t\r\n")[:1] == "[" else "text"


def parse_names_file(
    path: str | Path,
    format: str | None = None,
    *,
    allow_duplicates: bool = False,
    limits: Limits | None = None,
) -> NamesSpec:
    """Read a names file for ``labels import`` (see the module docstring).

    Args:
        path: the file.
        format: ``text``, ``json`` or ``csv``; ``None`` detects it (``.json``, ``.csv``, else
            JSON when the content starts with ``[``, else text).
        allow_duplicates: accept duplicate names (identified by position).
        limits: size limits.

    Returns:
        A :class:`NamesSpec`: the validated spec and the row → node mapping.

    Raises:
        InvalidInputError: naming the file and line or row.
    """
    path = Path(path)
    content = read_text_file(path)
    format = format or detect_names_format(str(path), content)
    return parse_names_text(
        content, format, str(path), allow_duplicates=allow_duplicates, limits=limits
    )
