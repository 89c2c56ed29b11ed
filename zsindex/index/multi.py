"""Searching many queries that each have their own subset (hierarchical per-level search).

Queries whose subsets are equal are batched into one search (one GEMM), so a beam search where
many images keep the same nodes costs one pass per distinct subset, not one per image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from zsindex.errors import InvalidInputError
from zsindex.index.types import SearchIndex, SearchResult, as_queries


def search_per_query(
    index: SearchIndex,
    queries: np.ndarray,
    subsets: Sequence[np.ndarray | range | slice | None],
    k: int = 5,
    *,
    logit_scale: float,
    **options: Any,
) -> list[SearchResult]:
    """Search query ``i`` within ``subsets[i]``; return one single-row result per query.

    Args:
        index: any loaded index.
        queries: ``[Q, dim]``.
        subsets: one subset per query (row ids, a range/slice, or ``None`` for all labels).
        k: top-k per query (capped at each subset's size).
        logit_scale: the model's ``logit_scale.exp()`` (required: never an assumed 100).
        **options: passed to ``index.search`` (``logit_bias``, ``mode``, ``probabilities``).

    Returns:
        ``Q`` results in query order, each with arrays of shape ``[1, k_i]``.
    """
    q = as_queries(queries, index.dim)
    if len(subsets) != len(q):
        raise InvalidInputError(f"{len(subsets)} subsets for {len(q)} queries")
    groups: dict[bytes, list[int]] = {}
    for i, subset in enumerate(subsets):
        groups.setdefault(_key(subset), []).append(i)
    out: list[SearchResult | None] = [None] * len(q)
    for members in groups.values():
        res = index.search(
            q[members], k, logit_scale=logit_scale, subset=subsets[members[0]], **options
        )
        for row, i in enumerate(members):
            out[i] = _row(res, row)
    return [r for r in out if r is not None]


def _key(subset: np.ndarray | range | slice | None) -> bytes:
    if subset is None:
        return b"all"
    if isinstance(subset, range | slice):
        return repr((type(subset).__name__, subset.start, subset.stop, subset.step)).encode()
    arr = np.ascontiguousarray(subset)
    return (
        b"ids" + str(arr.dtype).encode() + hashlib.blake2b(arr.tobytes(), digest_size=16).digest()
    )


def _row(res: SearchResult, row: int) -> SearchResult:
    pick = slice(row, row + 1)
    return SearchResult(
        ids=res.ids[pick],
        scores=res.scores[pick],
        logits=res.logits[pick],
        probabilities=res.probabilities[pick],
        log_normalizer=None if res.log_normalizer is None else res.log_normalizer[pick],
        mode=res.mode,
        exact_probabilities=res.exact_probabilities,
        exact_neighbors=res.exact_neighbors,
        num_searched=res.num_searched,
        backend=res.backend,
    )
