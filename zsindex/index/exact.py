"""Exact search over a label matrix (the default at every size) and result assembly.

Scores are fp32 products. An fp16 matrix (label sets are stored as fp16 by default) is scanned as
it is, by the ``_f16scan`` kernel (:mod:`zsindex.index.f16`): widening fp16 to fp32 is exact, so
the scores are the fp32 path's to rounding, while the index holds and reads half the bytes.
Without that kernel (numpy fp16 matmul is ~500x slower than fp32 BLAS, and numpy's fp16 cast
~0.4 G values/s) the index keeps an fp32 copy of an fp16 source when it fits the memory budget
(half the machine's RAM); ``keep_fp32=True`` forces that copy, ``keep_fp32=False`` forbids it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from zsindex.errors import InvalidInputError
from zsindex.index import f16
from zsindex.index.kernels import BlockScorer, PassResult, blocked_pass, thread_pool
from zsindex.index.types import (
    IndexSpec,
    Mode,
    Probabilities,
    SearchResult,
    Subset,
    as_queries,
    check_k,
    check_logits,
    check_matrix,
    check_mode,
)

log = logging.getLogger(__name__)

GATHER_DENSE_MAX = 4096
"""Subsets up to this size are gathered into one dense block."""


def memory_budget_bytes() -> int:
    """Bytes an fp32 copy may take by default: half of physical memory (4 GiB if unknown)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def to_float32(matrix: np.ndarray) -> np.ndarray:
    """fp32 copy of ``matrix``, converted in row chunks on every core (fp16 casts are slow)."""
    if matrix.dtype == np.float32:
        return np.ascontiguousarray(matrix)
    if f16.available():
        return f16.widen(matrix)
    out = np.empty(matrix.shape, dtype=np.float32)
    step = max(1, (8 << 20) // max(1, matrix.shape[1]))
    starts = range(0, matrix.shape[0], step)

    def convert(a: int) -> None:
        np.copyto(out[a : a + step], matrix[a : a + step], casting="unsafe")

    list(thread_pool().map(convert, starts))
    return out


@dataclass(frozen=True)
class Target:
    """A resolved subset: ``total`` rows, either ``start + 0..total`` or the row ids ``rows``."""

    total: int
    start: int  # contiguous range start, or -1 for a gathered subset
    rows: np.ndarray | None  # sorted unique row ids for a gathered subset


def resolve_subset(subset: Subset, n: int) -> Target:
    """Validate ``subset`` of ``n`` rows (None, range/slice, or row ids) into a target."""
    if subset is None:
        return Target(total=n, start=0, rows=None)
    if isinstance(subset, range | slice):
        start, stop, step = (
            subset.indices(n) if isinstance(subset, slice) else (subset.start, subset.stop, 1)
        )
        if isinstance(subset, range):
            step = subset.step
        if step != 1 or not 0 <= start <= stop <= n:
            raise InvalidInputError(f"subset range {subset!r} is not within 0..{n} (step 1)")
        if stop == start:
            raise InvalidInputError("subset is empty")
        return Target(total=stop - start, start=int(start), rows=None)
    ids = np.asarray(subset)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise InvalidInputError("subset must be a 1-D integer array of row ids")
    if ids.size == 0:
        raise InvalidInputError("subset is empty")
    ids = ids.astype(np.int64, copy=False)
    if ids.size > 1 and not bool((ids[1:] > ids[:-1]).all()):
        ids = np.unique(ids)
    if ids[0] < 0 or ids[-1] >= n:
        raise InvalidInputError(f"subset row ids must be within 0..{n - 1}")
    if int(ids[-1] - ids[0]) + 1 == ids.size:
        return Target(total=int(ids.size), start=int(ids[0]), rows=None)
    return Target(total=int(ids.size), start=-1, rows=ids)


class ExactIndex:
    """Exact inner-product search with exact softmax normalisers (CPU, numpy blocked GEMM).

    Args:
        matrix: ``[N, dim]`` float16/float32 L2-normalised label embeddings; row i is label id i.
        keep_fp32: keep an fp32 copy of an fp16 matrix (``None``: only without the fp16 kernel,
            and when it fits the memory budget).
        check_finite: verify every value is finite (skip for a matrix read from a verified cache).
    """

    backend = "numpy-blocked"
    device = "cpu"

    def __init__(
        self,
        matrix: np.ndarray,
        *,
        keep_fp32: bool | None = None,
        check_finite: bool = True,
    ) -> None:
        arr = check_matrix(matrix)
        if check_finite and not _all_finite(arr):
            raise InvalidInputError("label matrix contains NaN or infinity")
        self.source_dtype = np.dtype(arr.dtype)
        if keep_fp32 is None:
            keep_fp32 = arr.dtype == np.float32 or (
                not f16.available() and arr.size * 4 <= memory_budget_bytes()
            )
        self.matrix: np.ndarray = to_float32(arr) if keep_fp32 else np.ascontiguousarray(arr)
        self._spec = IndexSpec()

    @property
    def count(self) -> int:
        """Number of labels."""
        return int(self.matrix.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.matrix.shape[1])

    @property
    def spec(self) -> IndexSpec:
        """Always ``exact``."""
        return self._spec

    @property
    def nbytes(self) -> int:
        """Bytes held by the label matrix."""
        return int(self.matrix.nbytes)

    # -- subsets -----------------------------------------------------------------------------

    def resolve_subset(self, subset: Subset) -> Target:
        """Validate ``subset`` (None, range/slice, or an array of row ids) into a target."""
        return resolve_subset(subset, self.count)

    def _source(self, target: Target, num_queries: int) -> tuple[object, bool, BlockScorer | None]:
        """How a pass reads ``target``: (fp32 row source, whether it needs a buffer, scorer).

        fp16 rows with the kernel: a few queries are scored from the fp16 rows directly; more are
        widened into the buffer for BLAS. Without it, numpy converts each block.
        """
        m = self.matrix
        fp32 = m.dtype == np.float32
        fast16 = not fp32 and f16.available()
        rows = target.rows
        base = target.start

        def block16(a: int, b: int) -> np.ndarray:
            return m[base + a : base + b] if rows is None else m[rows[a:b]]

        if fast16 and num_queries <= f16.DOT_MAX_QUERIES:

            def score(a: int, b: int, q: np.ndarray, out: np.ndarray) -> None:
                f16.dot_into(block16(a, b), q, out)

            return None, False, score
        if fast16:

            def widened(a: int, b: int, buf: np.ndarray | None) -> np.ndarray:
                assert buf is not None
                return f16.widen_into(block16(a, b), buf[: b - a])

            return widened, True, None
        if rows is None:
            if fp32:
                return (lambda a, b, buf: m[base + a : base + b]), False, None

            def convert(a: int, b: int, buf: np.ndarray | None) -> np.ndarray:
                assert buf is not None
                out = buf[: b - a]
                np.copyto(out, m[base + a : base + b], casting="unsafe")
                return out

            return convert, True, None

        def gather(a: int, b: int, buf: np.ndarray | None) -> np.ndarray:
            assert buf is not None and rows is not None
            out = buf[: b - a]
            if fp32:
                np.take(m, rows[a:b], axis=0, out=out)
            else:
                np.copyto(out, m[rows[a:b]], casting="unsafe")
            return out

        return gather, True, None

    # -- search ------------------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int = 5,
        *,
        logit_scale: float,
        logit_bias: float = 0.0,
        mode: Mode = "softmax",
        subset: Subset = None,
        probabilities: Probabilities = "exact",
    ) -> SearchResult:
        """Exact top-k with exact probabilities.

        Args:
            queries: ``[Q, dim]`` (or ``[dim]``) L2-normalised query embeddings.
            k: how many labels to return per query (capped at the number searched).
            logit_scale: the multiplier ``model.logit_scale.exp()`` (> 0).
            logit_bias: added to every logit (SigLIP-style models; 0 otherwise).
            mode: ``softmax`` (one distribution) or ``sigmoid`` (independent per label).
            subset: restrict the search (and the softmax) to these row ids, a ``range`` or a
                ``slice``.
            probabilities: ``exact`` (normalise over every searched label) or ``topk``.
        """
        q = as_queries(queries, self.dim)
        k = check_k(k)
        scale, bias = check_logits(logit_scale, logit_bias)
        check_mode(mode, probabilities)
        target = self.resolve_subset(subset)
        want_lse = mode == "softmax" and probabilities == "exact"
        res = self.pass_(q, target, k=k, scale=scale, want_topk=True, want_lse=want_lse)
        assert res.ids is not None and res.scores is not None
        ids = self.to_row_ids(target, res.ids)
        scores = self.row_scores(q, ids)
        lse = res.lse
        if lse is not None:
            # The fp32 GEMM's rounding (~1e-7 per score, x logit_scale) dominates the error of
            # the normaliser through its largest terms: swap the top-k terms for float64 ones.
            fp32_terms = np.exp(scale * res.scores.astype(np.float64) - lse[:, None])
            fp64_terms = np.exp(scale * scores - lse[:, None])
            lse = lse + np.log1p((fp64_terms - fp32_terms).sum(axis=1))
        return make_result(
            q,
            ids,
            scores,
            scale=scale,
            bias=bias,
            mode=mode,
            scaled_lse=lse,
            exact_neighbors=True,
            num_searched=target.total,
            backend=self.backend,
        )

    def pass_(
        self,
        q: np.ndarray,
        target: Target,
        *,
        k: int,
        scale: float,
        want_topk: bool,
        want_lse: bool,
    ) -> PassResult:
        """Run one blocked pass: local top-k positions and scores, logsumexp of scaled scores."""
        if target.rows is not None and target.total <= GATHER_DENSE_MAX:
            block = f16.widen(self.matrix[target.rows])
            res = blocked_pass(
                q,
                target.total,
                lambda a, b, buf: block[a:b],
                k=min(k, target.total),
                scale=scale,
                want_topk=want_topk,
                want_lse=want_lse,
            )
            return res
        source, needs_buffer, score = self._source(target, q.shape[0])
        res = blocked_pass(
            q,
            target.total,
            source,  # type: ignore[arg-type]  # a memory map or an array: both index like arrays
            k=min(k, target.total),
            scale=scale,
            want_topk=want_topk,
            want_lse=want_lse,
            needs_buffer=needs_buffer,
            score=score,
        )
        return res

    def log_normalizer(
        self, queries: np.ndarray, *, logit_scale: float, subset: Subset = None
    ) -> np.ndarray:
        """``logsumexp(logit_scale * scores)`` over the searched set (no bias), float64 ``[Q]``."""
        q = as_queries(queries, self.dim)
        scale, _ = check_logits(logit_scale, 0.0)
        res = self.pass_(
            q, self.resolve_subset(subset), k=1, scale=scale, want_topk=False, want_lse=True
        )
        assert res.lse is not None
        return res.lse

    @staticmethod
    def to_row_ids(target: Target, local: np.ndarray) -> np.ndarray:
        """Map local positions of a target back to row ids."""
        if target.rows is not None:
            return np.asarray(target.rows[local])
        return np.asarray(local + target.start)

    def row_scores(self, q: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Float64 dot products of each query with its own rows ``ids[i]`` (``[Q, k]``)."""
        rows = self.matrix[ids.reshape(-1)].astype(np.float64)
        rows = rows.reshape(ids.shape[0], ids.shape[1], self.dim)
        return np.asarray(np.matmul(rows, q.astype(np.float64)[:, :, None])[:, :, 0])


def _all_finite(arr: np.ndarray) -> bool:
    step = max(1, (16 << 20) // max(1, arr.shape[1] * arr.itemsize))
    return all(bool(np.isfinite(arr[a : a + step]).all()) for a in range(0, arr.shape[0], step))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def make_result(
    q: np.ndarray,
    ids: np.ndarray,
    scores: np.ndarray,
    *,
    scale: float,
    bias: float,
    mode: Mode,
    scaled_lse: np.ndarray | None,
    exact_neighbors: bool,
    num_searched: int,
    backend: str,
) -> SearchResult:
    """Sort each row by (score desc, id asc) and attach logits and probabilities.

    ``scaled_lse`` is ``logsumexp(scale * score)`` over the whole searched set, or ``None``
    to normalise over the returned ids only (``softmax`` mode) or for ``sigmoid``.
    """
    order = np.lexsort((ids, -scores), axis=-1) if ids.size else np.zeros_like(ids)
    ids = np.take_along_axis(ids, order, axis=1).astype(np.int64, copy=False)
    scores = np.take_along_axis(scores, order, axis=1)
    logits64 = scale * scores.astype(np.float64) + bias
    lse: np.ndarray | None = None
    exact = True
    if mode == "sigmoid":
        probs = _sigmoid(logits64)
    else:
        if scaled_lse is not None:
            lse = scaled_lse + bias
        else:
            top = logits64.max(axis=1, keepdims=True)
            lse = (top + np.log(np.exp(logits64 - top).sum(axis=1, keepdims=True)))[:, 0]
            exact = ids.shape[1] >= num_searched
        probs = np.exp(logits64 - lse[:, None])
    return SearchResult(
        ids=ids,
        scores=scores.astype(np.float32),
        logits=logits64.astype(np.float32),
        probabilities=probs.astype(np.float32),
        log_normalizer=lse,
        mode=mode,
        exact_probabilities=exact,
        exact_neighbors=exact_neighbors,
        num_searched=num_searched,
        backend=backend,
    )
