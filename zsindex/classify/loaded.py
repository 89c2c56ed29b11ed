"""A label-set version loaded for classification: names, tree, matrix and search index.

A loaded label set is immutable: hot swapping replaces the whole object, so a request that
resolved one answers from exactly one version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from zsindex.classify.tree import Tree, bfs_order

if TYPE_CHECKING:
    from zsindex.index.types import SearchIndex
    from zsindex.store.records import LabelColumns, ModelRecord, VersionRecord


@dataclass(frozen=True)
class LoadedLabelSet:
    """Everything classification needs from one version, in storage (BFS for trees) order.

    Attributes:
        record: the version's store record (name, number, digest, model).
        names: each row's own name.
        tree: the tree over rows (``None`` for a flat set).
        index: search index over all rows (``index.matrix`` rows are ``names`` rows).
        order: original registration position of each row.
        host_matrix: the rows in host memory when the index keeps its own copy elsewhere (a
            GPU); ``None`` when the index is the CPU exact index itself.
    """

    record: VersionRecord
    names: list[str]
    tree: Tree | None
    index: SearchIndex
    order: np.ndarray = field(repr=False)
    host_matrix: np.ndarray | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.record.labelset

    @property
    def version(self) -> int:
        return self.record.version

    @property
    def model(self) -> ModelRecord:
        return self.record.model

    @property
    def model_key(self) -> tuple[str, str, str]:
        m = self.record.model
        return (m.name, m.pretrained or "", m.weights_sha256)

    @property
    def num_labels(self) -> int:
        return len(self.names)

    @property
    def matrix(self) -> np.ndarray:
        """fp32 (or fp16) rows ``[N, dim]`` in host memory (tree modes score them directly)."""
        if self.host_matrix is not None:
            return self.host_matrix
        matrix: np.ndarray = getattr(self.index, "matrix")  # noqa: B009 - CPU indexes have one
        return matrix

    @property
    def temperature(self) -> float:
        """The version's calibrated temperature (1.0 unless ``zsindex calibrate`` fitted one)."""
        return float(self.record.temperature)

    @property
    def logit_scale(self) -> float:
        """The model's logit scale divided by the version's temperature: every probability
        (flat and tree modes) is softmax(logit_scale / T · cosine); the ranking is the same
        for every T > 0."""
        return float(self.record.model.logit_scale) / self.temperature

    @property
    def logit_bias(self) -> float:
        bias = self.record.model.logit_bias
        return float(bias) / self.temperature if bias is not None else 0.0

    @property
    def index_backend(self) -> str:
        """What serves this label set's search (``numpy-blocked``, ``faiss-gpu-flat`` …)."""
        return str(getattr(self.index, "backend", type(self.index).__name__))

    @property
    def index_device(self) -> str:
        """Where the search runs (``cpu`` or ``cuda:N``)."""
        return str(getattr(self.index, "device", "cpu"))

    @property
    def index_exact(self) -> bool:
        """Whether the index finds the exact top k (approximate indexes only when asked)."""
        return bool(self.index.spec.is_exact)

    @cached_property
    def leaf_ids(self) -> np.ndarray | None:
        """Row ids of the leaves (``None`` for a flat set: every row)."""
        return None if self.tree is None else self.tree.leaves

    def leaf_names(self) -> list[str]:
        ids = self.leaf_ids
        return list(self.names) if ids is None else [self.names[i] for i in ids]


def arrange(columns: LabelColumns, rank_names: tuple[str, ...]) -> tuple[np.ndarray, Tree | None]:
    """Storage order for a version's labels: identity for flat sets, BFS order for trees.

    Returns:
        (order: original position of each row, tree in row ids or None)
    """
    n = len(columns)
    if not columns.is_tree:
        return np.arange(n, dtype=np.int64), None
    order = bfs_order(columns.parents)
    row_of = np.empty(n, dtype=np.int64)
    row_of[order] = np.arange(n)
    original_parents = columns.parents[order]
    parents = np.where(original_parents >= 0, row_of[np.maximum(original_parents, 0)], -1)
    return order, Tree.from_bfs_parents(parents, rank_names)
