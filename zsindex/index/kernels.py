"""Blocked exact scoring: fp32 GEMM per block of labels, a running top-k and a running logsumexp.

One pass over the label matrix computes, for every query, the exact top-k by score and the exact
``logsumexp(logit_scale * score)`` over all searched labels, never holding more than one
``[Q, block]`` score buffer. Pure numpy: BLAS does the GEMM on
every core; the per-block bookkeeping (chunk maxima, candidate extraction, ``exp``) runs in a small
thread pool split by query rows, since numpy releases the GIL inside those loops.

Top-k without sorting every block: each block's columns are cut into chunks of ``CHUNK`` columns
and the chunk maxima taken. The k-th largest chunk maximum is a lower bound on the block's k-th
largest score (k chunk maxima are k distinct scores), and the running k-th best is another; only
chunks whose maximum reaches the bound can hold a top-k score, so only those few chunks are
gathered and merged. Ties rank the lower row id first.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from zsindex.index.pools import LazyPool

CHUNK = 32
"""Columns per chunk for the candidate filter."""

BLOCK_ELEMENTS = 1 << 23
"""Target size of one ``[Q, block]`` fp32 score buffer (32 MiB)."""

MIN_BLOCK_ROWS = 16384
"""Fewest labels per block: OpenBLAS GEMM efficiency drops with narrow blocks (measured at 256
queries x 512 dims: 2,048-label blocks ran at 1/4 of full-GEMM speed, 16,384+ at ~full speed)."""

_POOL = LazyPool("zsindex")


def thread_pool() -> ThreadPoolExecutor:
    """The shared worker pool (one thread per core), created on first use."""
    return _POOL.get()


def block_rows(num_queries: int, total: int, block_elements: int) -> int:
    """Labels per block for ``num_queries`` queries: a multiple of ``CHUNK``."""
    rows = max(MIN_BLOCK_ROWS, block_elements // max(1, num_queries))
    rows = (rows // CHUNK) * CHUNK
    return max(1, min(rows, total))


@dataclass
class _State:
    """Running top-k and logsumexp for a slice of query rows (rows are disjoint per thread)."""

    best_s: np.ndarray  # float32 [R, k], descending; -inf where not yet filled
    best_i: np.ndarray  # int64 [R, k], local positions; -1 where not yet filled
    run_max: np.ndarray  # float64 [R]
    run_sum: np.ndarray  # float64 [R]


def _new_state(rows: int, k: int) -> _State:
    return _State(
        best_s=np.full((rows, k), -np.inf, dtype=np.float32),
        best_i=np.full((rows, k), -1, dtype=np.int64),
        run_max=np.full(rows, -np.inf, dtype=np.float64),
        run_sum=np.zeros(rows, dtype=np.float64),
    )


def _chunk_max(w: np.ndarray) -> np.ndarray:
    """Max of every chunk of ``w``'s columns (see :func:`_chunk_columns`), ``[R, chunks]``."""
    rows, cols = w.shape
    full = cols // CHUNK
    parts = []
    if full:
        # Chunk c holds columns c, c + full, c + 2 * full, ...: a reduction over the outer axis
        # of a [R, CHUNK, full] view, which numpy runs as contiguous vector maxima (7x faster
        # than reducing CHUNK adjacent columns).
        parts.append(w[:, : full * CHUNK].reshape(rows, CHUNK, full).max(axis=1))
    if cols % CHUNK:
        parts.append(w[:, full * CHUNK :].max(axis=1, keepdims=True))
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def _chunk_columns(chunks: np.ndarray, cols: int) -> np.ndarray:
    """Column ids ``[M, CHUNK]`` of the given chunks; ids >= ``cols`` pad the short tail chunk."""
    full = cols // CHUNK
    offs = np.arange(CHUNK, dtype=np.int64)
    c = chunks.astype(np.int64)[:, None]
    return np.where(c < full, c + full * offs, full * CHUNK + offs)


def _update_topk(w: np.ndarray, cmax: np.ndarray, st: _State, col0: int) -> None:
    rows, cols = w.shape
    k = st.best_s.shape[1]
    nchunks = cmax.shape[1]
    thr = st.best_s[:, k - 1].copy()
    if nchunks >= k:
        bound = np.partition(cmax, nchunks - k, axis=1)[:, nchunks - k]
        np.maximum(thr, bound, out=thr)
    rr, cc = np.nonzero(cmax >= thr[:, None])
    if rr.size == 0:
        return
    cand_cols = _chunk_columns(cc, cols)  # [M, CHUNK]
    valid = cand_cols < cols
    vals = w[rr[:, None], np.minimum(cand_cols, cols - 1)]
    keep = (vals >= thr[rr][:, None]) & valid
    cand_r = np.broadcast_to(rr[:, None], keep.shape)[keep]
    cand_s = vals[keep]
    cand_i = cand_cols[keep] + col0
    all_r = np.concatenate([np.repeat(np.arange(rows), k), cand_r])
    all_s = np.concatenate([st.best_s.ravel(), cand_s])
    all_i = np.concatenate([st.best_i.ravel(), cand_i])
    # Sort by row, then score descending, then id ascending (unfilled -1 slots hold -inf).
    order = np.lexsort((np.where(all_i < 0, np.iinfo(np.int64).max, all_i), -all_s, all_r))
    counts = np.bincount(all_r, minlength=rows)
    starts = np.cumsum(counts) - counts
    sorted_r = all_r[order]
    rank = np.arange(order.size) - starts[sorted_r]
    sel = order[rank < k]
    st.best_s[...] = all_s[sel].reshape(rows, k)
    st.best_i[...] = all_i[sel].reshape(rows, k)


def _update_lse(w: np.ndarray, row_max: np.ndarray, st: _State, scale: float) -> None:
    """Fold ``sum(exp(scale * (w - max)))`` into the running (max, sum); overwrites ``w``."""
    new_max = np.maximum(st.run_max, row_max.astype(np.float64))
    np.subtract(w, new_max.astype(np.float32)[:, None], out=w)
    np.multiply(w, np.float32(scale), out=w)
    np.exp(w, out=w)
    block_sum = w.sum(axis=1, dtype=np.float32).astype(np.float64)
    st.run_sum *= np.exp(scale * (st.run_max - new_max))
    st.run_sum += block_sum
    st.run_max = new_max


def _process(
    w: np.ndarray, st: _State, col0: int, scale: float, want_topk: bool, want_lse: bool
) -> None:
    cmax = _chunk_max(w)
    if want_topk:
        _update_topk(w, cmax, st, col0)
    if want_lse:
        _update_lse(w, cmax.max(axis=1), st, scale)


BlockSource = Callable[[int, int, np.ndarray | None], np.ndarray]
"""``source(start, stop, buffer) -> float32 [stop - start, dim]`` rows of the searched set."""

BlockScorer = Callable[[int, int, np.ndarray, np.ndarray], None]
"""``score(start, stop, queries, out)`` writes the float32 scores ``[Q, stop - start]`` of rows
``[start, stop)`` into ``out`` (a source that computes scores itself, e.g. from fp16 rows)."""


@dataclass
class PassResult:
    """Output of :func:`blocked_pass`."""

    ids: np.ndarray | None  # int64 [Q, k] local positions (0..total-1), best first
    scores: np.ndarray | None  # float32 [Q, k] their scores (the same GEMM values as the lse)
    lse: np.ndarray | None  # float64 [Q] logsumexp(scale * score) over all `total` rows


def blocked_pass(
    queries: np.ndarray,
    total: int,
    source: BlockSource,
    *,
    k: int,
    scale: float,
    want_topk: bool = True,
    want_lse: bool = True,
    needs_buffer: bool = False,
    block_elements: int | None = None,
    score: BlockScorer | None = None,
) -> PassResult:
    """One blocked pass over ``total`` rows served by ``source``.

    Args:
        queries: float32 ``[Q, dim]``.
        total: number of rows in the searched set.
        source: returns fp32 rows ``[start, stop)``; it may fill the buffer it is given (gather,
            fp16 conversion) or return a view.
        k: top-k size (``k <= total``).
        scale: logit scale (> 0) for the logsumexp.
        want_topk: track the top k.
        want_lse: track ``logsumexp(scale * score)``.
        needs_buffer: allocate a reusable ``[block, dim]`` fp32 buffer for ``source``.
        block_elements: target size of the ``[Q, block]`` score buffer (default
            :data:`BLOCK_ELEMENTS`).
        score: computes each block's scores itself (``source`` is then not called).
    """
    nq, dim = queries.shape
    qs = np.ascontiguousarray(queries, dtype=np.float32)
    rows_per_block = block_rows(nq, total, block_elements or BLOCK_ELEMENTS)
    k_state = max(1, min(k, total))
    workers = max(1, os.cpu_count() or 1)
    split = workers if nq >= 2 * workers and nq * rows_per_block >= (1 << 16) else 1
    bounds = np.linspace(0, nq, split + 1).astype(int)
    states = [_new_state(int(b - a), k_state) for a, b in itertools.pairwise(bounds)]
    row_buf = np.empty((rows_per_block, dim), dtype=np.float32) if needs_buffer else None
    score_buf = np.empty((nq, rows_per_block), dtype=np.float32)
    pool = thread_pool() if split > 1 else None
    for start in range(0, total, rows_per_block):
        stop = min(total, start + rows_per_block)
        width = stop - start
        w = score_buf if width == rows_per_block else np.empty((nq, width), dtype=np.float32)
        if score is not None:
            score(start, stop, qs, w)
        else:
            block = source(start, stop, row_buf)
            if nq == 1:
                np.matmul(block, qs[0], out=w[0])
            else:
                np.matmul(qs, block.T, out=w)
        if pool is None:
            _process(w, states[0], start, scale, want_topk, want_lse)
        else:
            futures = [
                pool.submit(_process, w[a:b], st, start, scale, want_topk, want_lse)
                for (a, b), st in zip(itertools.pairwise(bounds), states, strict=True)
            ]
            for fut in futures:
                fut.result()
    ids = np.concatenate([st.best_i for st in states]) if want_topk else None
    scores = np.concatenate([st.best_s for st in states]) if want_topk else None
    lse = None
    if want_lse:
        run_max = np.concatenate([st.run_max for st in states])
        run_sum = np.concatenate([st.run_sum for st in states])
        lse = scale * run_max + np.log(run_sum)
    return PassResult(ids=ids, scores=scores, lse=lse)
