"""Taxonomy trees built from rank paths (taxonomy CSV, TreeOfLife names).

One node per distinct path prefix: ``Animalia,Chordata,Aves`` and ``Animalia,Chordata,Mammalia``
share the nodes ``Animalia`` and ``Animalia > Chordata``. A name under two different parents is two
distinct nodes. Nodes are numbered in the order first defined (row order, parents first within a
row). A row repeating an earlier row's full path is a duplicate: an error, or with
``allow_duplicates`` a distinct node (labels are identified by position).

Taxonomy CSV: the header names the ranks (e.g. ``kingdom,phylum,class,order,family,genus,species``);
each row is a path, cells stripped; empty trailing cells make a shorter path; an empty cell before
a non-empty one is an error. A node's template text is its own name (``node_text="name"``) or its
whole path joined by spaces (``node_text="path"``, as pybioclip: "Animalia Chordata … Corvus
corax").
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from typing import Literal

from zsindex.errors import InvalidInputError
from zsindex.labels._csv import csv_rows
from zsindex.labels._text import short
from zsindex.labels.spec import LabelSetSpec
from zsindex.labels.validate import Limits, check_count

NodeText = Literal["name", "path"]
NODE_TEXTS: tuple[str, ...] = ("name", "path")


class PathTreeBuilder:
    """Accumulates rank paths into a tree, column-wise (fast for 100k+ rows)."""

    def __init__(
        self,
        where: Callable[[int], str],
        *,
        allow_duplicates: bool = False,
        node_text: NodeText = "name",
        limits: Limits | None = None,
    ) -> None:
        """Start an empty tree.

        Args:
            where: row token (line number or row index) → location text for messages.
            allow_duplicates: a repeated full path makes a distinct node instead of an error.
            node_text: ``"name"`` or ``"path"`` (see the module docstring).
            limits: size limits; the node count is checked as the tree grows.
        """
        if node_text not in NODE_TEXTS:
            raise InvalidInputError(f"node_text must be 'name' or 'path', not {node_text!r}")
        self.names: list[str] = []
        self.parents: list[int | None] = []
        self.texts: list[str | None] | None = [] if node_text == "path" else None
        self.origins = array("q")
        self._where = where
        self._allow = allow_duplicates
        self._max = (limits or Limits()).max_labels
        self._index: dict[tuple[int, str], int] = {}
        self._explicit = bytearray()
        self._prev_cells: Sequence[str] = ()
        self._prev_nodes: list[int] = []

    def _new(self, name: str, parent: int, cells: Sequence[str], depth: int, origin: int) -> int:
        node = len(self.names)
        if node >= self._max:
            check_count(node + 1, self._where(origin), Limits(max_labels=self._max))
        self.names.append(name)
        self.parents.append(None if parent < 0 else parent)
        if self.texts is not None:
            # The whole path, built from the parent's (a root's text is its name).
            self.texts.append(name if parent < 0 else f"{self.texts[parent]} {name}")
        self.origins.append(origin)
        self._explicit.append(0)
        return node

    def add(self, cells: Sequence[str], origin: int) -> int:
        """Add one path (non-empty cells, root first); return the node for its last cell.

        Args:
            cells: the path.
            origin: row token for messages (a line number or a row index).

        Raises:
            InvalidInputError: a repeated path when duplicates are not allowed.
        """
        prev = self._prev_cells
        index = self._index
        n = len(cells)
        if n > 1 and n == len(prev) and prev[-1] != cells[-1] and prev[:-1] == cells[:-1]:
            # The common case in sorted files: a sibling of the previous row's last node.
            nodes = self._prev_nodes
            parent = nodes[-2]
            key = (parent, cells[-1])
            found = index.get(key)
            if found is None:
                found = index[key] = self._new(cells[-1], parent, cells, n - 1, origin)
            nodes[-1] = parent = found
        else:
            # Reuse the previous row's nodes for the shared prefix, then descend.
            shared = 0
            limit = min(len(prev), n)
            while shared < limit and prev[shared] == cells[shared]:
                shared += 1
            nodes = self._prev_nodes[:shared]
            parent = nodes[-1] if nodes else -1
            for depth in range(shared, n):
                key = (parent, cells[depth])
                found = index.get(key)
                if found is None:
                    found = index[key] = self._new(cells[depth], parent, cells, depth, origin)
                nodes.append(found)
                parent = found
            self._prev_nodes = nodes
        self._prev_cells = cells
        node = parent
        if self._explicit[node]:
            if not self._allow:
                raise InvalidInputError(
                    f"{self._where(origin)}: duplicate path {short(' > '.join(cells), 80)} "
                    f"(same as {self._where(self.origins[node])}): remove the row or allow "
                    "duplicates (--allow-duplicates)"
                )
            # A distinct node with the same parent; later rows still descend the first one.
            last = len(cells) - 1
            node = self._new(cells[last], nodes[-2] if last else -1, cells, last, origin)
        self._explicit[node] = 1
        return node


def clean_path(cells: Sequence[str], where: str, ranks: Sequence[str] | None = None) -> list[str]:
    """Strip cells, drop empty trailing ones, and reject gaps (an empty cell before a full one)."""
    path = [c.strip() for c in cells]
    while path and not path[-1]:
        path.pop()
    if "" in path:
        col = path.index("")
        column = f"column {col + 1}" + (f" ({ranks[col]})" if ranks and col < len(ranks) else "")
        raise InvalidInputError(
            f"{where}: {column} is empty but a later column is not: fill it in "
            "(only trailing cells may be empty)"
        )
    return path


def parse_taxonomy_csv(
    content: str,
    source: str,
    *,
    node_text: NodeText = "name",
    allow_duplicates: bool = False,
    limits: Limits | None = None,
) -> LabelSetSpec:
    """Parse a taxonomy CSV (header = rank names) into a tree spec (not yet validated).

    Args:
        content: the CSV text.
        source: file name for messages.
        node_text: ``"name"`` or ``"path"``.
        allow_duplicates: repeated rows become distinct nodes instead of an error.
        limits: size limits.

    Raises:
        InvalidInputError: missing/blank header, too many cells, a gap, a duplicate row.
    """
    header: list[str] | None = None
    builder = PathTreeBuilder(
        lambda line: f"{source}, line {line}",
        allow_duplicates=allow_duplicates,
        node_text=node_text,
        limits=limits,
    )
    add = builder.add
    for line, row in csv_rows(content, source):
        if header is None:
            if not any(c.strip() for c in row):
                continue
            header = [c.strip() for c in row]
            _check_header(header, f"{source}, line {line}")
            continue
        if len(row) > len(header):
            raise InvalidInputError(
                f"{source}, line {line}: {len(row)} cells but the header has "
                f"{len(header)} ranks: remove the extra cells"
            )
        path = [c.strip() for c in row]
        if not path or not path[-1] or "" in path:  # blank row, trailing empties or a gap
            path = clean_path(row, f"{source}, line {line}", header)
        if path:
            add(path, line)
    if header is None:
        raise InvalidInputError(f"{source}: empty file: write a header of rank names, then rows")
    return LabelSetSpec(
        names=tuple(builder.names),
        parents=tuple(builder.parents),
        texts=tuple(builder.texts) if builder.texts is not None else None,
        rank_names=tuple(header),
        source=source,
        allow_duplicates=allow_duplicates,
        lines=builder.origins,
    )


def _check_header(header: list[str], where: str) -> None:
    seen: dict[str, int] = {}
    for col, name in enumerate(header):
        if not name:
            raise InvalidInputError(f"{where}: header column {col + 1} is empty: name every rank")
        first = seen.setdefault(name.lower(), col)
        if first != col:
            raise InvalidInputError(
                f"{where}: header repeats the rank {name!r} (columns {first + 1} and {col + 1})"
            )
