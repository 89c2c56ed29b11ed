"""Approximate indexes (FAISS IVF and HNSW, optionally scalar-quantised) with exact scores.

An approximate index only proposes the top-k ids. Their scores are then recomputed exactly in fp32
from the label matrix (and the k re-sorted), and probabilities are exact by default: the softmax
normaliser comes from a blocked fp32 pass over every label (:meth:`ExactIndex.log_normalizer`),
which costs a full pass; ``probabilities="topk"`` normalises over the returned k instead, and the
result says so (``exact_probabilities=False``). Subset searches always run exactly (they are
small, and exactness is cheap there). When the tuner found no setting that beats exact search at
the recall target, ``search_param`` is ``None`` and every search runs exactly.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from zsindex.errors import InvalidInputError
from zsindex.index import f16
from zsindex.index.exact import ExactIndex, make_result
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

RERANK_QUANTIZED = 4
"""Quantised (sq8/fp16) indexes fetch this many times k candidates, re-ranked in exact fp32."""

TRAIN_POINTS_PER_LIST = 48
"""Training sample for IVF k-means: this many points per list (faiss wants >= 39)."""

KMEANS_ITERATIONS = 12
"""k-means iterations for the IVF coarse quantizer (faiss default 25; halves build time)."""


def _faiss() -> Any:
    import faiss

    return faiss


def build_faiss(matrix: np.ndarray, spec: IndexSpec, *, seed: int = 0) -> Any:
    """Build the faiss index for ``spec`` over fp32 ``matrix`` (ids = row positions)."""
    faiss = _faiss()
    n, dim = matrix.shape
    metric = faiss.METRIC_INNER_PRODUCT
    qtype = {"sq8": faiss.ScalarQuantizer.QT_8bit, "fp16": faiss.ScalarQuantizer.QT_fp16}
    if spec.kind == "ivf":
        nlist = spec.params["nlist"]
        if nlist > n:
            raise InvalidInputError(f"{spec}: nlist {nlist} exceeds the {n} labels")
        quantizer = faiss.IndexFlatIP(dim)
        if spec.storage == "flat":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
        else:
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, dim, nlist, qtype[spec.storage], metric
            )
        index.cp.seed = seed
        index.cp.niter = KMEANS_ITERATIONS
        rng = np.random.default_rng(seed)
        sample = min(n, nlist * TRAIN_POINTS_PER_LIST)
        rows = np.sort(rng.choice(n, size=sample, replace=False)) if sample < n else slice(None)
        index.train(f16.widen(matrix[rows]))
    elif spec.kind == "hnsw":
        m = spec.params["m"]
        if spec.storage == "flat":
            index = faiss.IndexHNSWFlat(dim, m, metric)
        else:
            index = faiss.IndexHNSWSQ(dim, qtype[spec.storage], m, metric)
            index.train(f16.widen(matrix[: min(n, 65536)]))
        index.hnsw.efConstruction = spec.params["ef_construction"]
    else:
        raise InvalidInputError(f"{spec} is not an approximate index")
    step = 65536
    for start in range(0, n, step):
        index.add(f16.widen(matrix[start : start + step]))
    return index


class AnnIndex:
    """An approximate index over an :class:`ExactIndex`.

    Args:
        exact: the exact index over the same matrix (scores, normalisers, subsets, fallback).
        spec: the approximate spec (``ivf…``/``hnsw…``).
        faiss_index: the built faiss index, or ``None`` when falling back to exact search.
        search_param: ``nprobe`` (IVF) or ``efSearch`` (HNSW); ``None``: search exactly.
        tuning: the tuner's report (JSON-able), kept for logs and the cache manifest.
    """

    def __init__(
        self,
        exact: ExactIndex,
        spec: IndexSpec,
        faiss_index: Any,
        search_param: int | None,
        tuning: dict[str, Any] | None = None,
    ) -> None:
        if spec.is_exact:
            raise InvalidInputError("AnnIndex needs an approximate spec")
        self.exact = exact
        self._spec = spec
        self.faiss_index = faiss_index if search_param is not None else None
        self.search_param = search_param
        self.tuning = tuning or {}
        self.rerank = RERANK_QUANTIZED if spec.storage != "flat" else 1

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
        """The approximate spec."""
        return self._spec

    @property
    def device(self) -> str:
        """Always ``cpu`` (FAISS CPU indexes over a CPU exact index)."""
        return "cpu"

    @property
    def uses_exact(self) -> bool:
        """True when searches fall back to exact search (the tuner found nothing faster)."""
        return self.faiss_index is None

    @property
    def backend(self) -> str:
        """Which path answers full-set searches."""
        return ExactIndex.backend if self.uses_exact else f"faiss-{self._spec.kind}"

    def approximate_ids(self, q: np.ndarray, k: int, param: int | None = None) -> np.ndarray:
        """Raw faiss top-k ids (``-1`` where fewer were found) with ``param`` (default: tuned)."""
        faiss = _faiss()
        value = self.search_param if param is None else param
        if self.faiss_index is None or value is None:
            raise InvalidInputError("this index searches exactly (no approximate setting)")
        fetch = min(self.count, k * self.rerank)
        if self._spec.kind == "ivf":
            params = faiss.SearchParametersIVF(nprobe=int(value))
        else:
            params = faiss.SearchParametersHNSW(efSearch=int(max(value, fetch)))
        _, found = self.faiss_index.search(q, fetch, params=params)
        ids = np.asarray(found, dtype=np.int64)
        if fetch == k:
            return ids
        # Quantised codes mis-rank near neighbours: re-rank the candidates by exact fp32 score.
        scores = self.exact.row_scores(q, np.maximum(ids, 0))
        scores[ids < 0] = -np.inf
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(ids, best, axis=1)

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
        """Approximate top-k; exact scores; exact or top-k-normalised probabilities.

        Arguments as :meth:`ExactIndex.search`. ``subset`` searches run exactly.
        """
        if subset is not None or self.uses_exact:
            return self.exact.search(
                queries,
                k,
                logit_scale=logit_scale,
                logit_bias=logit_bias,
                mode=mode,
                subset=subset,
                probabilities=probabilities,
            )
        q = as_queries(queries, self.dim)
        k = min(check_k(k), self.count)
        scale, bias = check_logits(logit_scale, logit_bias)
        check_mode(mode, probabilities)
        ids = self.approximate_ids(q, k)
        missing = (ids < 0).any(axis=1)
        if missing.any():
            # Too few candidates in the probed lists: answer those queries exactly.
            target = self.exact.resolve_subset(None)
            res = self.exact.pass_(
                q[missing], target, k=k, scale=scale, want_topk=True, want_lse=False
            )
            assert res.ids is not None
            ids[missing] = res.ids
        lse = None
        if mode == "softmax" and probabilities == "exact":
            lse = self.exact.log_normalizer(q, logit_scale=scale)
        return make_result(
            q,
            ids,
            self.exact.row_scores(q, ids),
            scale=scale,
            bias=bias,
            mode=mode,
            scaled_lse=lse,
            exact_neighbors=False,
            num_searched=self.count,
            backend=self.backend,
        )
