"""Shared types of the index layer: search results, index specs, input validation.

Only numpy is imported here; faiss and torch load lazily where they are needed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from zsindex.errors import InvalidInputError

Mode = Literal["softmax", "sigmoid"]
"""``softmax``: one probability distribution over the searched labels; ``sigmoid``: independent
per-label probabilities ``sigmoid(logit)`` (multi-label, SigLIP-style)."""

Probabilities = Literal["exact", "topk"]
"""``exact``: softmax normaliser over every searched label; ``topk``: normalised over the returned
top k only (cheaper for approximate indexes; the result says which one it is)."""

Subset = np.ndarray | range | slice | None


@dataclass(frozen=True)
class SearchResult:
    """Top-k answer of one search call for a batch of ``Q`` queries.

    Attributes:
        ids: int64 ``[Q, k']`` row ids (positions in the label matrix), best first, where
            ``k' = min(k, number of searched labels)``. Equal scores rank the lower id first.
        scores: float32 ``[Q, k']`` cosine similarities (dot products of query and row, taken in
            float64 for the returned ids; the top-k set itself is chosen with fp32 GEMM scores).
        logits: float32 ``[Q, k']`` ``logit_scale * score + logit_bias``.
        probabilities: float32 ``[Q, k']``; in ``softmax`` mode ``exp(logit - log_normalizer)``,
            in ``sigmoid`` mode ``sigmoid(logit)``.
        log_normalizer: float64 ``[Q]`` ``logsumexp`` of the logits over the normalising set
            (all searched labels when ``exact_probabilities``, else the returned top k); ``None``
            in ``sigmoid`` mode.
        mode: ``softmax`` or ``sigmoid``.
        exact_probabilities: True when probabilities are exactly the softmax over every searched
            label (always True in ``sigmoid`` mode, where no normaliser is involved).
        exact_neighbors: True when ``ids`` are the exact top k (exact search); False for an
            approximate index, whose ids may miss some of the true top k.
        num_searched: number of labels searched (the whole set, or the subset's size).
        backend: which path answered (``numpy-blocked``, ``torch-cuda``, ``faiss-gpu-flat``,
            ``faiss-ivf``, ``int8-rescore`` …).
        probability_bound: float64 ``[Q]`` bound on the relative error of each query's
            probabilities when the normaliser was bounded rather than summed exactly (the int8
            scan copy: at most 1e-3; 0 where that query was normalised exactly); ``None`` when
            every probability is exact (or no normaliser is involved).
    """

    ids: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    probabilities: np.ndarray
    log_normalizer: np.ndarray | None
    mode: Mode
    exact_probabilities: bool
    exact_neighbors: bool
    num_searched: int
    backend: str
    probability_bound: np.ndarray | None = None


@runtime_checkable
class SearchIndex(Protocol):
    """What every loaded index offers (``ExactIndex``, ``AnnIndex``, ``GpuFlatIndex``,
    ``TorchIndex``).

    ``logit_scale`` has no default on purpose: it is the model's own ``logit_scale.exp()``
    (from the store), never an assumed 100.
    """

    @property
    def backend(self) -> str:
        """Which path answers full-set searches (``numpy-blocked``, ``torch-cuda`` …)."""

    @property
    def device(self) -> str:
        """Where the label matrix lives and is searched: ``cpu`` or ``cuda:N``."""

    @property
    def count(self) -> int:
        """Number of labels (rows)."""

    @property
    def dim(self) -> int:
        """Embedding dimension."""

    @property
    def spec(self) -> IndexSpec:
        """The spec this index answers for."""

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
        """Search ``queries`` (``[Q, dim]`` or ``[dim]``) for their top ``k`` labels."""


_STORAGE = ("flat", "sq8", "fp16", "int8")
_KIND_RE = re.compile(r"^(exact|flat|ivf|hnsw)(\d*)(?::(.*))?$")


@dataclass(frozen=True)
class IndexSpec:
    """A parsed index spec string.

    Grammar: ``KIND[N][:key=value][,key=value|,STORAGE]...`` where KIND is ``exact`` (alias
    ``flat``), ``ivf`` (N = nlist) or ``hnsw`` (N = M) and STORAGE is ``flat`` (default),
    ``sq8`` or ``fp16`` (approximate kinds), or ``int8`` for ``exact`` (still exact: an int8
    scan copy whose error bound decides what is re-scored in fp32, see
    :mod:`zsindex.index.compressed`). Keys: ``nlist``, ``m``, ``ef_construction``, ``nprobe``,
    ``ef_search``.
    Examples: ``exact``, ``ivf1024``, ``ivf:nlist=1024,sq8``, ``hnsw32,fp16``,
    ``ivf4096,nprobe=64`` (a fixed search parameter; no auto-tuning).
    """

    kind: Literal["exact", "ivf", "hnsw"] = "exact"
    storage: Literal["flat", "sq8", "fp16", "int8"] = "flat"
    params: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | IndexSpec) -> IndexSpec:
        """Parse ``spec``; raise :class:`InvalidInputError` naming what is wrong."""
        if isinstance(spec, IndexSpec):
            return spec
        text = spec.strip().lower().replace(" ", "")
        if not text:
            raise InvalidInputError("index spec is empty: use e.g. 'exact', 'ivf1024', 'hnsw32'")
        head, *rest = text.split(",")
        match = _KIND_RE.match(head)
        if match is None:
            raise InvalidInputError(
                f"index spec {spec!r}: unknown kind {head!r} (use exact, ivfN, hnswN)"
            )
        raw_kind, number, inline = match.groups()
        kind = "exact" if raw_kind in ("exact", "flat") else raw_kind
        tokens = ([inline] if inline else []) + rest
        storage = "flat"
        params: dict[str, int] = {}
        if number:
            params["nlist" if kind == "ivf" else "m"] = int(number)
        for token in tokens:
            if token in _STORAGE:
                storage = token
                continue
            key, sep, value = token.partition("=")
            if not sep or not value.isdigit() or int(value) <= 0:
                raise InvalidInputError(f"index spec {spec!r}: bad option {token!r}")
            if key not in _ALLOWED[kind]:
                raise InvalidInputError(
                    f"index spec {spec!r}: {key!r} does not apply to {kind} "
                    f"(allowed: {', '.join(sorted(_ALLOWED[kind])) or 'none'})"
                )
            params[key] = int(value)
        if kind == "exact" and storage not in ("flat", "int8"):
            raise InvalidInputError(
                f"index spec {spec!r}: exact search takes no quantizer (only 'int8': an int8"
                " scan copy with exact re-scoring, 'exact,int8')"
            )
        if kind != "exact" and storage == "int8":
            raise InvalidInputError(f"index spec {spec!r}: int8 is for exact search (use sq8)")
        if kind == "ivf":
            params.setdefault("nlist", 1024)
        if kind == "hnsw":
            params.setdefault("m", 32)
            params.setdefault("ef_construction", 80)
        return cls(kind=kind, storage=storage, params=params)  # type: ignore[arg-type]  # the Literal values are checked while parsing

    def canonical(self) -> str:
        """A stable string for this spec (cache keys, logs): ``ivf:nlist=1024,sq8``."""
        if self.kind == "exact":
            return "exact" if self.storage == "flat" else f"exact,{self.storage}"
        opts = ",".join(f"{key}={self.params[key]}" for key in sorted(self.params))
        suffix = "" if self.storage == "flat" else f",{self.storage}"
        return f"{self.kind}:{opts}{suffix}"

    @property
    def is_exact(self) -> bool:
        """Whether this is exact search."""
        return self.kind == "exact"

    @property
    def fixed_search_param(self) -> int | None:
        """``nprobe``/``ef_search`` given in the spec (then the tuner is skipped)."""
        return self.params.get("nprobe" if self.kind == "ivf" else "ef_search")

    def __str__(self) -> str:
        return self.canonical()


_ALLOWED: dict[str, set[str]] = {
    "exact": set(),
    "ivf": {"nlist", "nprobe"},
    "hnsw": {"m", "ef_construction", "ef_search"},
}


def as_queries(queries: Any, dim: int) -> np.ndarray:
    """Return ``queries`` as a C-contiguous float32 ``[Q, dim]`` array; validate shape/values."""
    arr = np.asarray(queries)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InvalidInputError(
            f"query embeddings must have shape [n, {dim}], got {list(np.shape(queries))}"
        )
    if arr.dtype.kind not in "fiu":
        raise InvalidInputError(f"query embeddings must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InvalidInputError("query embeddings contain NaN or infinity")
    return arr


def check_k(k: int) -> int:
    """Validate ``k`` (a positive integer)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_logits(logit_scale: float, logit_bias: float) -> tuple[float, float]:
    """Validate the logit scale (a finite multiplier > 0, e.g. ``model.logit_scale.exp()``)."""
    scale, bias = float(logit_scale), float(logit_bias)
    if not math.isfinite(scale) or scale <= 0:
        raise InvalidInputError(f"logit_scale must be finite and > 0, got {logit_scale!r}")
    if not math.isfinite(bias):
        raise InvalidInputError(f"logit_bias must be finite, got {logit_bias!r}")
    return scale, bias


def check_mode(mode: str, probabilities: str) -> None:
    """Validate the probability options."""
    if mode not in ("softmax", "sigmoid"):
        raise InvalidInputError(f"mode must be 'softmax' or 'sigmoid', got {mode!r}")
    if probabilities not in ("exact", "topk"):
        raise InvalidInputError(f"probabilities must be 'exact' or 'topk', got {probabilities!r}")


def check_matrix(matrix: Any) -> np.ndarray:
    """Validate a label matrix: 2-D, float16/float32, at least one row, finite."""
    arr = np.asarray(matrix)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidInputError(f"label matrix must be [N >= 1, dim >= 1], got {list(arr.shape)}")
    if arr.dtype not in (np.float16, np.float32):
        if arr.dtype.kind != "f":
            raise InvalidInputError(f"label matrix must be float16/float32, got {arr.dtype}")
        arr = arr.astype(np.float32)
    return arr
