"""Exact search from an int8 scan copy: a rigorous error bound decides what is re-scored in fp32.

The label matrix ``M`` is quantised once to ``C = round(M / g)`` (int8, one global step
``g = max|M| / 127``) and each query to ``p = round(q / h)`` (int8, ``h = max|q| / 127``). FAISS's
SIMD ``QT_8bit_direct_signed`` kernel scans the codes (a quarter of the fp32 bytes) and returns
the integer dot products ``p · c_i``, exact while ``d 127² < 2^24``; the approximate score is
``a_i = g h (p · c_i) = q̂ · m̂_i``. Since ``q·m_i - q̂·m̂_i = q·(m_i - m̂_i) + (q - q̂)·m̂_i``, by
Cauchy-Schwarz, for any summation order,

    |q · m_i - a_i| <= ||q|| E + ||q - q̂|| M̂ + g h γ_d ||p|| Cmax = delta(q)

with ``E = max_i ||m_i - g c_i||``, ``M̂ = max_i ||g c_i||``, ``Cmax = max_i ||c_i||`` and the
fp32-accumulation term ``γ_d = d u / (1 - d u)``, ``u = 2^-24`` (zero in exact integer
arithmetic, kept for kernels that sum in fp32), times ``1 + 1e-6``. The scan keeps the ``c``
best rows by ``a``; they are re-scored in float64 from the fp32 rows, and every other row's exact
score is at most ``t = a_c + delta``. Hence:

- **top-k**: when ``t < s_k`` (the k-th exact score among the candidates) no row outside the
  candidates can reach or tie the top k, so the top k is the exact one (lower id first on ties).
- **softmax normaliser**: ``Z`` lies in ``[Z_C, Z_C + U]`` with ``Z_C`` the exact sum over the
  candidates and ``U = (N - c) exp(scale t)``; the index reports ``Z_C + U / 2``, so every
  probability is within ``rho = (U / 2) / (Z_C + U / 2)`` relative of the exact one. A query
  whose ``rho`` exceeds the tolerance (``1e-3``, DESIGN.md §4) is retried with more candidates
  and then normalised by the exact fp32 pass (``rho = 0``); it is never returned silently.

Subsets, batches above :data:`SCAN_BATCH_MAX` queries (the per-query scan then reads more bytes
than one fp32 GEMM pass) and unproven queries are answered by the wrapped :class:`ExactIndex`.

Opt-in (index spec ``exact,int8``), not the default: on 1M x 512 with image-like queries at
logit scale 100 the normaliser bound exceeded 1e-3 for 19 of 32 queries (a diffuse query's
softmax mass sits in the bulk of the labels, which the bound can only cover as
``(N - c) exp(scale t)``), so the default softmax ran at 0.74x the fp32 pass; top-k-only
searches (``probabilities="topk"``, sigmoid) ran at 1.41x (benchmarks/RESULTS.md, issue 19).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import replace
from typing import Any

import numpy as np

from zsindex.index.exact import ExactIndex, make_result
from zsindex.index.int8_parts import QUANT_ROWS, Scan, lse, normaliser, quantise, release_pages
from zsindex.index.kernels import thread_pool
from zsindex.index.types import (
    IndexSpec,
    Mode,
    Probabilities,
    SearchResult,
    Subset,
    as_queries,
    check_k,
    check_logits,
    check_mode,
)

log = logging.getLogger(__name__)

COMPRESS_MIN_ROWS = 65536
"""Smallest label set :func:`compress` wraps by default (below it the fp32 scan is fast)."""

SCAN_BATCH_MAX = 4
"""Largest batch the int8 scan answers; bigger batches share one fp32 GEMM pass instead."""

CANDIDATES = (16384,)
"""Candidates kept per query by the scan, tried in order before falling back to exact (a
second, wider scan costs a whole scan and rarely rescues the normaliser: measured on 1M x 512,
the queries it fails are diffuse ones whose bound needs most rows)."""

RESCORE_FIRST = 2048
"""Candidates re-scored in fp32 first (beyond ``k``); the count grows 4x while unproven."""

EXACT_ROWS = 512
"""Best fp32-re-scored candidates (beyond ``k``) scored again in float64."""

TOLERANCE = 1e-3
"""Largest relative error bound allowed on a probability (DESIGN.md §4)."""

_SPEC = IndexSpec(kind="exact", storage="int8")
_U32 = 2.0**-24
_SAFETY = 1.0 + 1e-6


class CompressedIndex:
    """Exact top-k over an int8 scan copy, re-scored from the fp32 rows of ``exact``.

    Args:
        exact: the fp32 (or fp16) exact index; its rows re-score candidates and it answers
            subsets, large batches and unproven queries.
        tolerance: largest relative probability error bound accepted before the exact
            normaliser is computed (at most ``1e-3``).
        shards: row shards scanned in parallel (default: one per core).
    """

    backend = "int8-rescore"
    device = "cpu"

    def __init__(
        self, exact: ExactIndex, *, tolerance: float = TOLERANCE, shards: int | None = None
    ) -> None:
        import faiss

        if not 0.0 < tolerance <= TOLERANCE:
            raise ValueError(f"tolerance must be in (0, {TOLERANCE}], got {tolerance!r}")
        self.exact = exact
        self.tolerance = float(tolerance)
        matrix = exact.matrix
        n, dim = matrix.shape
        peak = max(float(np.abs(matrix[a : a + QUANT_ROWS]).max()) for a in range(0, n, QUANT_ROWS))
        self.step = peak / 127.0 if peak > 0 else 1.0
        workers = shards or max(1, min(8, os.cpu_count() or 1))
        edges = np.linspace(0, n, min(workers, n) + 1).astype(np.int64)
        self._shards: list[tuple[int, int, Any]] = []
        worst = np.zeros(4)
        qtype = faiss.ScalarQuantizer.QT_8bit_direct_signed
        for a, b in itertools.pairwise(edges):
            sub = faiss.IndexScalarQuantizer(dim, qtype, faiss.METRIC_INNER_PRODUCT)
            worst = np.maximum(worst, quantise(matrix[a:b], self.step, sub))
            self._shards.append((int(a), int(b), sub))
        self.err_max, self.recon_max, self.code_max, self.row_norm = (float(v) for v in worst)
        # Quantising read every fp32 row; a memory-mapped matrix (the index cache) now gives
        # those pages back, so only re-scored rows come back into this process's memory.
        self.released = release_pages(matrix)
        self.fallbacks = 0
        """Queries this index has handed to the exact fp32 pass (the bound was not met)."""
        self.gamma = dim * _U32 / (1.0 - dim * _U32)

    # -- the SearchIndex surface ---------------------------------------------------------------

    @property
    def count(self) -> int:
        """Number of labels."""
        return self.exact.count

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self.exact.dim

    @property
    def spec(self) -> IndexSpec:
        """``exact,int8``: the answers are the exact ones."""
        return _SPEC

    @property
    def matrix(self) -> np.ndarray:
        """The fp32 (or fp16) rows candidates are re-scored from (``exact.matrix``)."""
        return self.exact.matrix

    @property
    def nbytes(self) -> int:
        """Bytes of the int8 scan copy (the fp32 rows belong to ``exact``)."""
        return self.count * self.dim

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
        """Exact top-k; probabilities exact or within :attr:`tolerance` (``probability_bound``).

        Arguments as :meth:`ExactIndex.search`.
        """
        q = as_queries(queries, self.dim)
        k = check_k(k)
        scale, bias = check_logits(logit_scale, logit_bias)
        check_mode(mode, probabilities)
        n = self.count
        if subset is not None or len(q) > SCAN_BATCH_MAX or k > CANDIDATES[-1] or len(q) == 0:
            return self.exact.search(
                q,
                k,
                logit_scale=scale,
                logit_bias=bias,
                mode=mode,
                subset=subset,
                probabilities=probabilities,
            )
        k = min(k, n)
        want_lse = mode == "softmax" and probabilities == "exact"
        ids = np.zeros((len(q), k), np.int64)
        scores = np.zeros((len(q), k), np.float64)
        lse = np.full(len(q), np.nan)
        rho = np.zeros(len(q))
        todo = np.arange(len(q))
        norm_todo: list[int] = []  # top k proven, normaliser not: the exact lse pass
        for c in CANDIDATES:
            if todo.size == 0:
                break
            scan = self._candidates(q[todo], max(c, k))
            left = []
            for j, i in enumerate(todo):
                got = self._prove(q[i], scan, j, k, scale if want_lse else None)
                if got is None:
                    left.append(i)
                    continue
                ids[i], scores[i], lse[i], rho[i] = got
                if math.isinf(got[3]):
                    norm_todo.append(int(i))
            todo = np.asarray(left, dtype=np.int64)
        if norm_todo:
            # The bound on the normaliser is too wide (a diffuse query): sum it exactly (fp32).
            log.info(
                "int8 normaliser bound above %.0e for %d of %d queries: exact pass",
                self.tolerance,
                len(norm_todo),
                len(q),
            )
            self.fallbacks += len(norm_todo)
            rows = np.asarray(norm_todo)
            lse[rows] = self.exact.log_normalizer(q[rows], logit_scale=scale)
            rho[rows] = 0.0
        if todo.size:
            # Top k unproven after every candidate size: the exact fp32 pass answers these.
            log.info("int8 bound not met for %d of %d queries: exact pass", todo.size, len(q))
            self.fallbacks += int(todo.size)
            fallback = self.exact.search(
                q[todo],
                k,
                logit_scale=scale,
                logit_bias=bias,
                mode=mode,
                probabilities=probabilities,
            )
            ids[todo] = fallback.ids
            scores[todo] = self.rescore(q[todo], fallback.ids)
            if fallback.log_normalizer is not None and want_lse:
                lse[todo] = fallback.log_normalizer - bias
            rho[todo] = 0.0
        result = make_result(
            q,
            ids,
            scores,
            scale=scale,
            bias=bias,
            mode=mode,
            scaled_lse=lse if want_lse else None,
            exact_neighbors=True,
            num_searched=n,
            backend=self.backend,
        )
        return replace(result, probability_bound=rho if want_lse else None)

    # -- internals ---------------------------------------------------------------------------

    def quantise_queries(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """int8-valued fp32 codes ``p`` of the queries, their steps ``h`` and ``delta(q)``."""
        q64 = q.astype(np.float64)
        peak = np.abs(q64).max(axis=1)
        h = np.where(peak > 0, peak / 127.0, 1.0)
        p = np.clip(np.rint(q64 / h[:, None]), -127, 127)
        q_err = np.linalg.norm(q64 - h[:, None] * p, axis=1)
        delta = (
            np.linalg.norm(q64, axis=1) * self.err_max
            + q_err * self.recon_max
            + self.step * h * self.gamma * np.linalg.norm(p, axis=1) * self.code_max
        ) * _SAFETY
        return np.ascontiguousarray(p, dtype=np.float32), h, delta

    def _candidates(self, q: np.ndarray, c: int) -> Scan:
        """Scan every shard for its best ``c / shards`` rows per query, best first."""
        codes, h, delta = self.quantise_queries(q)
        per = max(1, -(-c // len(self._shards)))

        def scan(shard: tuple[int, int, Any]) -> tuple[np.ndarray, np.ndarray, int]:
            a, b, sub = shard
            take = min(per, b - a)
            dist, local = sub.search(codes, take)
            return local + a, dist, b - a - take

        parts = list(thread_pool().map(scan, self._shards))
        cand_ids = np.concatenate([p[0] for p in parts], axis=1).astype(np.int64)
        gh = self.step * h
        approx = gh[:, None] * np.concatenate([p[1] for p in parts], axis=1).astype(np.float64)
        order = np.argsort(-approx, axis=1, kind="stable")
        rest = np.array([p[2] for p in parts], dtype=np.int64)
        last = np.stack([p[1][:, -1] for p in parts], axis=1).astype(np.float64)
        outside = np.where(rest[None, :] > 0, gh[:, None] * last, -np.inf)
        return Scan(
            np.take_along_axis(cand_ids, order, axis=1),
            np.take_along_axis(approx, order, axis=1),
            outside,
            rest,
            delta,
        )

    def _prove(
        self, q: np.ndarray, scan: Scan, j: int, k: int, scale: float | None
    ) -> tuple[np.ndarray, np.ndarray, float, float] | None:
        """Re-score query ``j``'s best candidates until its top k (and, given ``scale``, its
        normaliser within the tolerance) is proven; ``None`` when all candidates do not suffice.

        Candidates are re-scored in fp32 (BLAS, error at most ``eps = γ_d ||q|| max||m_i||``
        in any summation order) in growing prefixes; the best ``k + EXACT_ROWS`` of them by
        fp32 score again in float64, which decides the top k and carries most of ``Z``.

        Returns:
            ``(ids [k], exact scores [k], scaled log-normaliser or nan, rho)``.
        """
        cand, approx, delta = scan.ids[j], scan.approx[j], float(scan.delta[j])
        m = cand.size
        outside = scan.outside[j]
        out_max = float(outside.max())
        eps = self.gamma * float(np.linalg.norm(q.astype(np.float64))) * self.row_norm * _SAFETY
        outer = np.empty(0)
        if scale is not None:
            with np.errstate(divide="ignore"):
                outer = np.log(scan.rest.astype(np.float64)) + scale * (outside + delta)
            outer = outer[np.isfinite(outer)]
        matrix = self.exact.matrix
        s32 = np.empty(m, np.float64)
        done = 0
        size = min(m, k + RESCORE_FIRST)
        while True:
            block = np.take(matrix, cand[done:size], axis=0).astype(np.float32, copy=False)
            s32[done:size] = block @ q
            done = size
            t64 = min(size, k + EXACT_ROWS)
            pick = np.argpartition(-s32[:size], t64 - 1)[:t64] if t64 < size else np.arange(size)
            exact = self.rescore(q[None, :], cand[None, pick])[0]
            order = np.lexsort((cand[pick], -exact))[:k]
            top_ids, top = cand[pick][order], exact[order]
            others = np.ones(size, bool)
            others[pick] = False
            fp32_rest = s32[:size][others]
            nxt = float(approx[size]) if size < m else -math.inf
            reach = max(
                float(fp32_rest.max()) + eps if fp32_rest.size else -math.inf,
                nxt + delta,
                out_max + delta,
            )
            if top[-1] > reach:
                if scale is None:
                    return top_ids, top, math.nan, 0.0
                upper = np.concatenate([scale * (fp32_rest + eps), scale * (approx[size:] + delta)])
                log_z, bound = normaliser(
                    scale * exact,
                    np.concatenate([scale * (fp32_rest - eps), scale * (approx[size:] - delta)]),
                    np.concatenate([upper, outer]),
                )
                if bound <= self.tolerance:
                    return top_ids, top, log_z, bound
                # Re-scoring more candidates cannot shrink the non-candidates' share: when that
                # alone exceeds the tolerance, the top k stands and the normaliser is exact's.
                log_hi = float(
                    np.logaddexp(lse(scale * exact), lse(np.concatenate([upper, outer])))
                )
                if size == m or lse(outer) - math.log(2.0) - log_hi > math.log(self.tolerance):
                    return top_ids, top, math.nan, math.inf
            if size == m:
                return None
            size = min(m, size * 4)

    def rescore(self, q: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """float64 scores of each query with its rows ``ids[i]`` (the fp32 rows, exactly).

        Each row is summed in the same order (a row-wise reduction, not BLAS, whose kernels may
        treat rows differently), so equal rows get equal scores and ties stay ties.
        """
        matrix = self.exact.matrix
        out = np.empty(ids.shape, np.float64)
        for i in range(len(q)):
            order = np.argsort(ids[i], kind="stable")
            rows = np.take(matrix, ids[i][order], axis=0).astype(np.float64)
            out[i, order] = (rows * q[i].astype(np.float64)).sum(axis=1)
        return out


def compress(exact: ExactIndex, *, min_rows: int | None = None) -> ExactIndex | CompressedIndex:
    """The index that serves ``exact`` on the CPU: an int8 scan copy from ``min_rows`` labels
    (default :data:`COMPRESS_MIN_ROWS`)."""
    if exact.count < (COMPRESS_MIN_ROWS if min_rows is None else min_rows):
        return exact
    peak = float(np.abs(exact.matrix[: min(exact.count, 65536)]).max())
    if not math.isfinite(peak) or peak > 1e15:  # absurd magnitudes: keep the plain fp32 scan
        return exact
    return CompressedIndex(exact)
