"""Auto-tuning of approximate search on image-like queries, with fallback to exact search.

Image embeddings sit far from text embeddings (cosine ≈ 0.3 to the right label: the modality
gap), which makes them much harder for text-built ANN indexes than text queries. Without real
image embeddings, queries are simulated as ``normalize(0.3 * label + 0.95 * random unit vector)``.

The tuner sweeps ``nprobe`` (IVF) or ``efSearch`` (HNSW) upward, measures recall@k against exact
search and the time of both on the same query batch (top-k only: the exact softmax normaliser
costs a full pass either way), and picks the cheapest setting reaching the target recall. If that
setting is not faster than exact search, or none reaches the target, the index falls back to
exact search.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from zsindex.errors import InvalidInputError
from zsindex.index.ann import AnnIndex
from zsindex.index.exact import ExactIndex

log = logging.getLogger(__name__)

DEFAULT_TARGET_RECALL = 0.99


def simulate_image_queries(
    matrix: np.ndarray,
    n: int,
    *,
    seed: int = 0,
    label_weight: float = 0.3,
    noise_weight: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Image-like queries: ``normalize(label_weight * row + noise_weight * random unit)``.

    Returns:
        (queries float32 ``[n, dim]``, the row id each query was made from).
    """
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, matrix.shape[0], size=n)
    noise = rng.standard_normal((n, matrix.shape[1])).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    base = np.asarray(matrix[rows], dtype=np.float32)
    q = label_weight * base + noise_weight * noise
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.astype(np.float32), rows


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` (exact top-k ids) present in ``found``."""
    if truth.size == 0:
        return 1.0
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


@dataclass
class TunePoint:
    """One measured setting."""

    param: int
    recall: float
    seconds: float
    speedup: float


@dataclass
class TuneReport:
    """What the tuner measured and chose.

    Attributes:
        spec: canonical spec tuned.
        param_name: ``nprobe`` or ``ef_search``.
        chosen: the chosen value, or ``None`` when falling back to exact search.
        target_recall: the recall@k target.
        k: the k recall was measured at.
        exact_seconds: exact top-k time for the query batch.
        num_queries: size of the held-out query batch.
        curve: every setting measured, in order.
        reason: why this choice.
    """

    spec: str
    param_name: str
    chosen: int | None
    target_recall: float
    k: int
    exact_seconds: float
    num_queries: int
    curve: list[TunePoint] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the cache manifest)."""
        return asdict(self)


def _candidates(index: AnnIndex, k: int) -> list[int]:
    if index.spec.kind == "ivf":
        nlist = index.spec.params["nlist"]
        values = [1 << p for p in range(0, 16) if (1 << p) < nlist] + [nlist]
        return values
    return [v for v in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if v >= k] or [k]


def _best_time(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def tune(
    index: AnnIndex,
    queries: np.ndarray,
    *,
    k: int = 5,
    target_recall: float = DEFAULT_TARGET_RECALL,
    repeats: int = 2,
    min_speedup: float = 1.0,
) -> TuneReport:
    """Choose ``index.search_param`` for ``target_recall`` on ``queries``; set it and report.

    Args:
        index: the approximate index (its faiss index must be built).
        queries: held-out image-like queries ``[Q, dim]`` (real samples or simulated).
        k: recall@k is measured at this k.
        target_recall: recall@k vs exact search to reach (default 0.99).
        repeats: timing repeats per setting (best taken).
        min_speedup: the chosen setting must be at least this much faster than exact search,
            otherwise the index falls back to exact search.
    """
    if not 0 < target_recall <= 1:
        raise InvalidInputError(f"target recall must be in (0, 1], got {target_recall}")
    if index.faiss_index is None:
        raise InvalidInputError("index has no approximate structure to tune")
    exact: ExactIndex = index.exact
    q = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, index.count)
    target = exact.resolve_subset(None)

    def run_exact() -> np.ndarray:
        res = exact.pass_(q, target, k=k, scale=1.0, want_topk=True, want_lse=False)
        assert res.ids is not None
        return res.ids

    truth = run_exact()
    exact_s = _best_time(run_exact, repeats)
    name = "nprobe" if index.spec.kind == "ivf" else "ef_search"
    report = TuneReport(
        spec=index.spec.canonical(),
        param_name=name,
        chosen=None,
        target_recall=target_recall,
        k=k,
        exact_seconds=exact_s,
        num_queries=len(q),
    )
    for value in _candidates(index, k):
        found = index.approximate_ids(q, k, value)
        seconds = _best_time(lambda v=value: index.approximate_ids(q, k, v), repeats)
        point = TunePoint(value, recall_at_k(found, truth), seconds, exact_s / max(seconds, 1e-9))
        report.curve.append(point)
        log.info("tune %s %s=%d recall@%d=%.4f %.1fx", report.spec, name, value, k, point.recall,
                 point.speedup)  # fmt: skip
        if point.recall >= target_recall:
            if point.speedup >= min_speedup:
                report.chosen = value
                report.reason = f"{name}={value} reaches recall {point.recall:.4f}"
            else:
                report.reason = (
                    f"{name}={value} reaches recall {point.recall:.4f} but is only "
                    f"{point.speedup:.2f}x exact speed: falling back to exact search"
                )
            break
        if point.speedup < min_speedup:
            report.reason = (
                f"recall {point.recall:.4f} at {name}={value} is already slower than exact "
                "search: falling back to exact search"
            )
            break
    else:
        report.reason = f"no {name} reaches recall {target_recall}: falling back to exact search"
    index.search_param = report.chosen
    if report.chosen is None:
        index.faiss_index = None
    log.info("tuned %s: %s", report.spec, report.reason)
    return report
