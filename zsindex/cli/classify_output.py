"""How ``zsindex classify`` prints results: a table, one JSON array, or CSV rows.

Every image gets its place in every format, an image that could not be classified included
(its ``error``), so a run's output always accounts for each file it was given.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from zsindex.classify.tree import path_of, unique_labels
from zsindex.errors import NotFoundError
from zsindex.results import ClassificationResult, LabelTree

if TYPE_CHECKING:
    from zsindex.backend import Backend

CSV_HEADER = [
    "image",
    "labelset",
    "version",
    "rank",
    "label",
    "probability",
    "score",
    "path",
    "error",
    "rejected",
]

PathOf = Callable[[ClassificationResult, str], str]
"""(result, prediction label) → that prediction's own path (``""`` for flat sets)."""


class NodePaths:
    """Each prediction's own path (``circle > red``), read from the label set's structure.

    Predictions name nodes by :func:`~zsindex.classify.tree.unique_labels`, so the label finds
    the node; the structure of exactly the result's version is read once per version.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._by_version: dict[tuple[str, int], tuple[LabelTree, dict[str, int]] | None] = {}

    def _load(self, labelset: str, version: int) -> tuple[LabelTree, dict[str, int]] | None:
        from zsindex.labels.refs import parse_ref, pinned_key

        name, _ = parse_ref(labelset)
        try:  # exactly the version the result came from, current or pinned
            tree = self.backend.tree(pinned_key(name, version))
        except NotFoundError:  # deleted mid-run: no path to show
            return None
        if not tree.is_tree:
            return None
        labels = unique_labels(tree.names, tree.parents)
        return tree, {label: i for i, label in enumerate(labels)}

    def __call__(self, result: ClassificationResult, label: str) -> str:
        key = (result.labelset, result.version)
        if key not in self._by_version:
            self._by_version[key] = self._load(*key)
        found = self._by_version[key]
        if found is None or label not in found[1]:
            return ""
        tree, node_of = found
        return " > ".join(tree.names[a] for a in path_of(tree.parents, node_of[label]))


class ResultWriter:
    """Streams results as a JSON array, CSV rows or a table, one batch at a time."""

    def __init__(self, fmt: str, path_of: PathOf | None = None) -> None:
        self.fmt = fmt
        self.path_of = path_of
        self.count = 0
        self.csv: Any = None
        self.started = False

    def _start(self) -> None:
        # Nothing is printed before the first result: a run that fails at once prints no
        # half-open JSON array or lone CSV header.
        if self.started:
            return
        self.started = True
        if self.fmt == "csv":
            self.csv = csv.writer(sys.stdout)
            self.csv.writerow(CSV_HEADER)
        elif self.fmt == "json":
            click.echo("[", nl=False)

    def write(self, result: ClassificationResult) -> None:
        self._start()
        if self.fmt == "json":
            click.echo(
                ("," if self.count else "")
                + "\n"
                + json.dumps(result.to_dict(), ensure_ascii=False),
                nl=False,
            )
        elif self.csv is not None:
            self._csv_rows(result)
        else:
            self._table(result)
        self.count += 1

    def _csv_rows(self, result: ClassificationResult) -> None:
        head = [result.image, result.labelset, result.version]
        if result.error is not None:
            self.csv.writerow([*head, "", "", "", "", "", result.error, ""])
            return
        for i, p in enumerate(result.predictions, 1):
            path = self.path_of(result, p.label) if self.path_of else ""
            self.csv.writerow(
                [
                    *head,
                    i,
                    p.label,
                    f"{p.probability:.6f}",
                    f"{p.score:.6f}",
                    path,
                    "",
                    "true" if result.rejected else "false",
                ]
            )

    @staticmethod
    def _table(result: ClassificationResult) -> None:
        rejected = "  rejected: none of these" if result.rejected else ""
        click.echo(f"{result.image}  ({result.labelset} v{result.version}){rejected}")
        if result.error is not None:
            click.echo(f"  error: {result.error}")
            return
        if result.path:
            click.echo(
                "  path: " + " > ".join(f"{s.label} ({s.probability:.2f})" for s in result.path)
            )
        for p in result.predictions:
            bar = "#" * round(p.probability * 20)
            click.echo(f"  {p.probability:6.1%}  {bar:<20}  {p.label}")

    def close(self) -> None:
        self._start()
        if self.fmt == "json":
            click.echo("\n]" if self.count else "]")
