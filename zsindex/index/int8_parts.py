"""Helpers of the int8 scan copy (:mod:`zsindex.index.compressed`): quantising the label
matrix with its error norms, the normaliser's bound, and giving back memory-mapped pages."""

from __future__ import annotations

import math
import mmap
from dataclasses import dataclass
from typing import Any

import numpy as np

from zsindex.index import f16

QUANT_ROWS = 32768
"""Rows quantised per chunk."""


def quantise(matrix: np.ndarray, step: float, dst: Any) -> np.ndarray:
    """Add ``round(matrix / step)`` to the FAISS index ``dst`` in chunks.

    Norms are taken in fp32 and then rounded up: ``(1 + 1e-5)`` covers the norm's own relative
    rounding, and ``sqrt(d) peak 2^-22`` the rounding of each ``m - step c`` (both ≥ the
    float64 values they stand for).

    Returns:
        float64 ``[E, M̂, Cmax, max ||m_i||]``: the largest quantisation error norm,
        reconstruction norm, code norm and row norm over the rows (upper bounds).
    """
    dim = matrix.shape[1]
    worst = np.zeros(4)
    step32 = np.float32(step)
    for a in range(0, matrix.shape[0], QUANT_ROWS):
        rows = f16.widen(matrix[a : a + QUANT_ROWS])
        codes = np.clip(np.rint(rows / step32), -127, 127)
        code_norm = float(np.linalg.norm(codes, axis=1).max())
        err = float(np.linalg.norm(rows - step32 * codes, axis=1).max())
        norm = float(np.linalg.norm(rows, axis=1).max())
        slack = math.sqrt(dim) * 127.0 * step * 2.0**-22
        found = [err + slack, step * code_norm + slack, code_norm, norm + slack]
        worst = np.maximum(worst, np.asarray(found) * (1.0 + 1e-5))
        dst.add(codes)
    return worst


@dataclass(frozen=True)
class Scan:
    """One scan's candidates for ``Q`` queries over ``S`` shards, best approximate first."""

    ids: np.ndarray  # int64 [Q, m] candidate row ids
    approx: np.ndarray  # float64 [Q, m] approximate scores a_i, descending
    outside: np.ndarray  # float64 [Q, S] highest a_i of a non-candidate row per shard (-inf: none)
    rest: np.ndarray  # int64 [S] non-candidate rows per shard
    delta: np.ndarray  # float64 [Q] bound on |exact - approx|


def lse(x: np.ndarray) -> float:
    """``log(sum(exp(x)))`` in float64 (``-inf`` for an empty array)."""
    if x.size == 0:
        return -math.inf
    top = float(x.max())
    if not math.isfinite(top):
        return top
    return top + math.log(float(np.exp(x - top).sum()))


def normaliser(exact: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[float, float]:
    """The reported scaled log-normaliser and its relative bound ``rho`` (one query).

    Args:
        exact: scaled exact scores of the rows re-scored in float64.
        lower: scaled lower bounds of every other candidate's score.
        upper: scaled upper bounds of the same candidates, then the log bounds of the summed
            terms of the non-candidate rows (one per shard).

    ``Z`` lies in ``[Z_E + L, Z_E + H]`` (``Z_E`` the float64 sum, ``L = sum exp(lower)``,
    ``H = sum exp(upper)``); the midpoint is reported and ``rho = ((H - L) / 2) / midpoint``.
    """
    log_known = float(np.logaddexp(lse(exact), lse(lower)))
    log_hi = lse(upper)
    if math.isinf(log_hi):
        return log_known, 0.0
    log_lo = lse(lower)
    log_w = log_hi + math.log1p(-math.exp(min(0.0, log_lo - log_hi)))  # log(H - L)
    log_mid = float(np.logaddexp(log_known, log_w - math.log(2.0)))
    return log_mid, math.exp(log_w - math.log(2.0) - log_mid)


def release_pages(array: np.ndarray) -> bool:
    """Drop the pages of the file mapping behind ``array`` (if any) from this process's
    resident set (``MADV_DONTNEED`` on a read-only file mapping: the data stays in the page
    cache and is read back on the next touch); whether there was one."""
    obj: Any = array
    for _ in range(16):
        if isinstance(obj, mmap.mmap):
            if not hasattr(obj, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
                return False
            try:
                obj.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):  # a closed or unusual mapping: keep its pages
                return False
            return True
        if isinstance(obj, memoryview):
            obj = obj.obj
        elif isinstance(obj, np.ndarray) and obj.base is not None:
            obj = obj.base
        else:
            return False
    return False
