"""Provably exact top-k from a low-precision candidate pass (GPU indexes).

A GPU pass scores every label with a reduced-precision GEMM (fp32, TF32, or fp16 storage) and
keeps ``c > k`` candidates per query. The candidates are rescored in float64 and the ``k`` best
kept (lower id first on equal scores). The GEMM's error is bounded for any summation order:
``|fl(q·m) - q·m| <= delta = ((2 u + u²)(1 + γ) + γ) ||q|| max||m||`` with ``u`` the unit
roundoff of the inputs' rounding (0 for fp32 inputs, ``2^-11`` for TF32 or fp16, ``2^-8`` for
bf16) and ``γ = d 2^-24 / (1 - d 2^-24)`` for fp32 accumulation over ``d`` dimensions (a factor 2
on top for safety). Every row outside the candidates scored at most ``a_c``, the lowest candidate
GEMM score, so its exact score is at most ``a_c + delta``; when ``a_c + delta < s_k`` (the k-th
exact score among the candidates) no row outside can reach or tie the top k, and the top k is
the exact one. Queries that fail the check are searched again with more candidates.
"""

from __future__ import annotations

import numpy as np

TF32_ROUNDOFF = 2.0**-11
"""Unit roundoff of TF32 and fp16 inputs (10 explicit mantissa bits)."""

BF16_ROUNDOFF = 2.0**-8
"""Unit roundoff of bf16 inputs (7 explicit mantissa bits)."""

SAFETY = 2.0
"""Factor on the error bound (covers the float64 rescoring and conversion details)."""


def matmul_error_bound(dim: int, input_roundoff: float = 0.0) -> float:
    """Bound on ``|fl(q·m) - q·m| / (||q|| ||m||)`` for a GEMM over ``dim`` dimensions.

    Args:
        dim: the inner dimension (embedding size).
        input_roundoff: unit roundoff the inputs are rounded with before multiplying (0 when
            they are used as fp32; :data:`TF32_ROUNDOFF` for TF32 or fp16 storage).
    """
    u = 2.0**-24
    gamma = dim * u / (1.0 - dim * u)
    r = input_roundoff
    return SAFETY * ((2.0 * r + r * r) * (1.0 + gamma) + gamma)


def select_verified(
    approx: np.ndarray,
    ids: np.ndarray,
    exact: np.ndarray,
    k: int,
    delta: np.ndarray,
    *,
    complete: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best candidates by exact score, and whether each query's top k is proven.

    Args:
        approx: ``[Q, c]`` GEMM scores of the candidates (the pass's own numbers).
        ids: ``[Q, c]`` int64 row ids of the candidates; ``-1`` marks a missing candidate.
        exact: ``[Q, c]`` float64 scores of the same candidates.
        k: how many to keep (``<= c``).
        delta: ``[Q]`` bound on the GEMM error of each query (:func:`matmul_error_bound` times
            the norms).
        complete: the candidates are every searched row (then every query is proven).

    Returns:
        ``(ids [Q, k], exact scores [Q, k], proven [Q] bool)``, best first, lower id first on
        equal exact scores.
    """
    missing = ids < 0
    key = np.where(missing, -np.inf, exact)
    order = np.lexsort((np.where(missing, np.iinfo(np.int64).max, ids), -key), axis=-1)[:, :k]
    top_ids = np.take_along_axis(ids, order, axis=1)
    top = np.take_along_axis(key, order, axis=1)
    if complete:
        return top_ids, top, np.ones(len(ids), dtype=bool)
    lowest = np.where(missing, np.inf, approx.astype(np.float64)).min(axis=1)
    proven = (lowest + delta < top[:, -1]) & ~(top_ids < 0).any(axis=1)
    return top_ids, top, proven
