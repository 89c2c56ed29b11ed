"""Exact fp32 scores straight from fp16 label rows, without an fp32 copy of the matrix.

Label sets are stored as fp16 by default, so an fp16 matrix *is* the label set, and widening it
to fp32 is exact. The C kernel ``_f16scan`` widens each row in registers and multiplies in fp32:
a scan reads 2 bytes per value instead of the fp32 copy's 4 and the matrix takes half the
memory, with the same fp32 rounding as the BLAS path (only the summation order differs).

For a few queries the kernel scores rows directly (memory-bound: one read of each row serves
every query of the pass). For many queries BLAS's fp32 GEMM is faster, so the rows are widened a
block at a time into a buffer for it (compute-bound there; the widening is amortised).

Without a compiled kernel (no C compiler at install time) or on a CPU without AVX2/FMA/F16C,
:func:`available` is False and the exact index keeps its fp32 copy, as before.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import numpy as np

from zsindex.index.pools import LazyPool

DOT_MAX_QUERIES = 128
"""Most queries scored by the kernel directly; above, rows are widened for BLAS's GEMM."""

SPLIT_MIN_ROWS = 4096
"""Fewest rows per thread when a block is split across cores."""


def _load_kernel() -> ModuleType | None:
    try:
        from zsindex.index import _f16scan  # type: ignore[attr-defined]
    except ImportError:
        return None
    kernel: ModuleType = _f16scan
    return kernel


_KERNEL = _load_kernel()
_POOL = LazyPool("zsindex-f16")


def available() -> bool:
    """True when the compiled kernel is installed and this CPU runs its vector path."""
    return _KERNEL is not None and bool(_KERNEL.vectorised())


def compiled() -> bool:
    """True when the compiled kernel is installed (vectorised or not)."""
    return _KERNEL is not None


def _pool() -> ThreadPoolExecutor:
    # Its own pool, not kernels.thread_pool(): callers already running on that pool (tree and
    # pruned scoring) may call in here, and waiting on one's own pool can deadlock.
    return _POOL.get()


def _spans(rows: int) -> list[tuple[int, int]]:
    parts = max(1, min(os.cpu_count() or 1, rows // SPLIT_MIN_ROWS))
    cuts = np.linspace(0, rows, parts + 1).astype(int).tolist()
    return list(itertools.pairwise(cuts))


def _run(spans: list[tuple[int, int]], fn: Callable[[int, int], None]) -> None:
    if len(spans) == 1:
        fn(*spans[0])
    else:
        for fut in [_pool().submit(fn, a, b) for a, b in spans]:
            fut.result()


def _kernel() -> ModuleType:
    if _KERNEL is None:
        raise RuntimeError("the fp16 scan kernel (zsindex.index._f16scan) is not installed")
    return _KERNEL


def dot_into(rows: np.ndarray, queries: np.ndarray, out: np.ndarray) -> None:
    """``out[j, i] = queries[j] · rows[i]`` in fp32 for fp16 ``rows`` ``[R, dim]``.

    ``queries`` is float32 ``[Q, dim]``; ``out`` a C-contiguous float32 ``[Q, R]`` array.
    """
    kernel = _kernel()
    rows = np.ascontiguousarray(rows, dtype=np.float16)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    nq, dim = q.shape
    if out.shape != (nq, rows.shape[0]) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous float32 [queries, rows] array")
    width = rows.shape[0]
    _run(_spans(width), lambda a, b: kernel.dot(rows[a:b], q, out, dim, nq, width, a))


def widen_into(rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Exact fp32 copy of fp16 ``rows`` written into ``out`` (same shape, C-contiguous)."""
    kernel = _kernel()
    rows = np.ascontiguousarray(rows, dtype=np.float16)
    if out.shape != rows.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous float32 array of the rows' shape")
    _run(_spans(rows.shape[0]), lambda a, b: kernel.widen(rows[a:b], out[a:b]))
    return out


def widen(rows: np.ndarray) -> np.ndarray:
    """fp32 copy of fp16 (or fp32) ``rows``: the kernel when available, numpy otherwise."""
    if rows.dtype == np.float32:
        return np.ascontiguousarray(rows)
    if not available():
        return np.asarray(rows, dtype=np.float32)
    return widen_into(rows, np.empty(rows.shape, dtype=np.float32))


def scores(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float32 ``[Q, R]`` scores of float32 ``queries`` ``[Q, dim]`` against ``rows`` ``[R, dim]``
    (fp16 or fp32), exact to fp32 rounding either way."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if rows.dtype == np.float16 and available() and q.shape[0] <= DOT_MAX_QUERIES:
        out = np.empty((q.shape[0], rows.shape[0]), dtype=np.float32)
        dot_into(rows, q, out)
        return out
    return np.asarray(q @ widen(rows).T)
