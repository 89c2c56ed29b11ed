"""``pruned`` mode: flat search's exact top k, found by scoring only the groups that can hold it.

The groups of a loaded label set are built once, on its first pruned search, and kept with it:

- a tree: its leaves grouped under their parent nodes (the tree's own internal nodes);
- a flat set: k-means clusters (2√N of them, k-means++ seeds) of its rows; a set under
  :data:`MIN_ROWS` rows has none (flat search over it is already cheap).

The search itself is :func:`zsindex.index.pruned.pruned_search`. Where it cannot apply — no
groups, an index that is not the CPU exact index (a GPU serves flat search faster), a ``within``
restriction — ``pruned`` answers with flat exact search, which is the same top k.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref

import numpy as np

from zsindex.classify.loaded import LoadedLabelSet
from zsindex.index.exact import ExactIndex
from zsindex.index.groups import Groups, kmeans_groups, tree_groups
from zsindex.index.pruned import PrunedResult, pruned_search
from zsindex.index.types import SearchResult

log = logging.getLogger(__name__)

MIN_ROWS = 16_384
"""Flat sets smaller than this are searched flat (one dense pass costs well under 1 ms/query)."""

NORMALISER_TOLERANCE = 1e-3
"""Expand past the certain top k while the normaliser's bounded tail is above this share of it
(DESIGN.md §4 allows 1e-3 relative for probabilities that are not exact), within the budget."""

_GROUPS: dict[int, Groups | None] = {}
_LOCK = threading.Lock()
_BUILDING: dict[int, threading.Lock] = {}


def groups_for(loaded: LoadedLabelSet) -> Groups | None:
    """The loaded set's groups (built on first use, once per loaded version), or ``None``."""
    key = id(loaded)
    with _LOCK:
        if key in _GROUPS:
            return _GROUPS[key]
        lock = _BUILDING.setdefault(key, threading.Lock())
    with lock:  # one build per loaded set; other label sets are not held up
        with _LOCK:
            if key in _GROUPS:
                return _GROUPS[key]
        start = time.perf_counter()
        groups = _build(loaded)
        with _LOCK:
            _GROUPS[key] = groups
            _BUILDING.pop(key, None)
        weakref.finalize(loaded, _GROUPS.pop, key, None)
    if groups is not None:
        log.info(
            "pruned-search groups of %s@%d: %d %s groups in %.1f s",
            loaded.name,
            loaded.version,
            groups.count,
            groups.kind,
            time.perf_counter() - start,
        )
    return groups


def _build(loaded: LoadedLabelSet) -> Groups | None:
    matrix = loaded.matrix
    tree = loaded.tree
    if tree is not None:
        return tree_groups(matrix, tree.leaves, tree.parents)
    if loaded.num_labels < MIN_ROWS:
        return None
    return kmeans_groups(matrix)


def search(
    loaded: LoadedLabelSet, emb: np.ndarray, k: int, *, within_leaves: np.ndarray | None
) -> tuple[SearchResult, np.ndarray]:
    """Top ``k`` of flat search and the probabilities' error bound per query (0: exact).

    Args:
        loaded: the label set.
        emb: unit query embeddings ``[Q, dim]``.
        k: labels per query.
        within_leaves: the leaves of a ``within`` subtree (then flat search answers).
    """
    flat_subset = loaded.leaf_ids if within_leaves is None else within_leaves
    index = loaded.index
    groups = (
        groups_for(loaded)
        if within_leaves is None and isinstance(index, ExactIndex) and loaded.host_matrix is None
        else None
    )
    if groups is None or not isinstance(index, ExactIndex):
        res = index.search(
            emb,
            k,
            logit_scale=loaded.logit_scale,
            logit_bias=loaded.logit_bias,
            subset=flat_subset,
        )
        return res, np.zeros(len(res.ids))
    found: PrunedResult = pruned_search(
        index,
        groups,
        emb,
        k,
        logit_scale=loaded.logit_scale,
        logit_bias=loaded.logit_bias,
        tolerance=NORMALISER_TOLERANCE,
        flat_subset=flat_subset,
    )
    return found.result, found.probability_error
