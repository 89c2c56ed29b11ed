"""Calibration: a fitted temperature, and the measures that say how well probabilities match.

Probabilities are softmax(logit_scale / T · cosine): one temperature ``T`` per version, fitted
by minimising the negative log-likelihood of labelled images (the loss is convex in ``1/T``, so
a bounded golden-section search over ``log T`` finds its minimum). Dividing every logit by the
same positive number never changes the ranking.

The measures (``zsindex eval``): ECE with 15 equal-width confidence bins, NLL, Brier score,
and accuracy against coverage for "none of these" thresholds. Pure numpy; nothing here reads
the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zsindex.errors import InvalidInputError

ECE_BINS = 15
MIN_CALIBRATION_IMAGES = 10
"""Fewer labelled images than this cannot fit a temperature worth storing."""
T_MIN, T_MAX = 0.01, 100.0
"""The temperatures searched (a fit at a bound says the set is separable or uninformative)."""
PRECISIONS = (0.9, 0.95, 0.99)
"""Target precisions ``calibrate`` suggests a ``reject_below`` for (besides the caller's)."""
COVERAGE_THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
EPS = 1e-12


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (max-shifted)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def nll(probs: np.ndarray, truth: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (probabilities floored at 1e-12)."""
    p = probs[np.arange(len(truth)), truth]
    return float(-np.mean(np.log(np.maximum(p, EPS))))


def brier(probs: np.ndarray, truth: np.ndarray) -> float:
    """Mean over images of half the sum over classes of (p - one_hot)²: the multi-class Brier
    score halved, so it lies in [0, 1] like the other eval keys (0 perfect, 1 worst)."""
    onehot = np.zeros_like(probs, dtype=np.float64)
    onehot[np.arange(len(truth)), truth] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)) / 2)


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: Σ_b (n_b / n)·|accuracy_b − mean confidence_b| over
    ``bins`` equal-width bins of [0, 1] (a bin holds (lo, hi]; confidence 0 goes to the
    first)."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if len(conf) == 0:
        return 0.0
    index = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.sum() / len(conf) * abs(hit[mask].mean() - conf[mask].mean())
    return float(total)


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram."""

    lo: float
    hi: float
    count: int
    accuracy: float
    confidence: float


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> list[ReliabilityBin]:
    """The bins :func:`ece` sums over (empty ones with count 0)."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    index = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        out.append(
            ReliabilityBin(
                lo=b / bins,
                hi=(b + 1) / bins,
                count=n,
                accuracy=float(hit[mask].mean()) if n else 0.0,
                confidence=float(conf[mask].mean()) if n else 0.0,
            )
        )
    return out


def selective_curve(
    confidence: np.ndarray, correct: np.ndarray, thresholds: tuple[float, ...] = COVERAGE_THRESHOLDS
) -> list[dict[str, float | int]]:
    """Accuracy against coverage: for each ``reject_below`` P, the share of images kept (top
    probability ≥ P) and the accuracy among them (``None``-free: 0 kept gives accuracy 0)."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=bool)
    out: list[dict[str, float | int]] = []
    for p in thresholds:
        kept = conf >= p
        n = int(kept.sum())
        out.append(
            {
                "reject_below": float(p),
                "coverage": n / len(conf) if len(conf) else 0.0,
                "accuracy": float(hit[kept].mean()) if n else 0.0,
                "kept": n,
            }
        )
    return out


def suggest_threshold(
    confidence: np.ndarray, correct: np.ndarray, precision: float
) -> float | None:
    """The lowest ``reject_below`` whose kept images reach ``precision`` accuracy (most
    coverage), or ``None`` when no threshold does."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    order = np.argsort(-conf, kind="stable")
    running = np.cumsum(hit[order]) / np.arange(1, len(conf) + 1)
    # Only cut between distinct confidences: a threshold keeps every image at or above it.
    sorted_conf = conf[order]
    cut_ok = np.r_[sorted_conf[1:] < sorted_conf[:-1], True]
    good = np.flatnonzero((running >= precision) & cut_ok)
    if not len(good):
        return None
    return float(sorted_conf[good[-1]])


def mean_nll_at(cosines: np.ndarray, truth: np.ndarray, scale: float) -> float:
    """NLL of softmax(scale · cosines) (float64, log-sum-exp)."""
    z = np.asarray(cosines, dtype=np.float64) * scale
    zmax = z.max(axis=1)
    lse = zmax + np.log(np.exp(z - zmax[:, None]).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(truth)), truth]))


def fit_temperature(cosines: np.ndarray, truth: np.ndarray, logit_scale: float) -> float:
    """The temperature T in [0.01, 100] minimising the NLL of softmax(logit_scale / T ·
    cosines) over rows with true classes ``truth`` (golden-section search over log T; the NLL
    is convex in 1/T, hence unimodal in log T)."""
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    golden = (math.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return mean_nll_at(cosines, truth, logit_scale / math.exp(log_t))

    a, b = lo, hi
    c, d = b - golden * (b - a), a + golden * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(80):  # interval shrinks by 0.618 each step: far below 1e-9 in log T
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - golden * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + golden * (b - a)
            fd = loss(d)
    best = (a + b) / 2
    # A minimum at a bound is still the best T searched; compare with the bounds themselves.
    candidates = [(loss(best), best), (loss(lo), lo), (loss(hi), hi)]
    return float(math.exp(min(candidates)[1]))


def check_calibration_set(truth: np.ndarray, num_classes_present: int) -> None:
    """Refuse a labelled set too small to fit a temperature."""
    if len(truth) < MIN_CALIBRATION_IMAGES or num_classes_present < 2:
        raise InvalidInputError(
            f"the calibration set is too small to fit a temperature: {len(truth)} image(s) in "
            f"{num_classes_present} class(es); give at least {MIN_CALIBRATION_IMAGES} labelled "
            "images in at least 2 classes"
        )


def calibration_report(
    cosines: np.ndarray,
    truth: np.ndarray,
    logit_scale: float,
    *,
    target_precision: float | None = None,
) -> dict[str, object]:
    """Fit T on (``cosines`` [n, L], ``truth``) and say what it changed: the temperature, NLL
    and ECE before (T = 1) and after, and the ``reject_below`` suggested for each target
    precision (:data:`PRECISIONS` and ``target_precision``)."""
    temperature = fit_temperature(cosines, truth, logit_scale)
    if not T_MIN * 1.001 < temperature < T_MAX / 1.001:
        correct_all = bool(np.all(cosines.argmax(axis=1) == truth))
        why = (
            "every image is classified correctly, so the NLL keeps falling as T shrinks"
            if correct_all and temperature <= T_MIN * 1.001
            else "the NLL has no minimum inside the range"
        )
        raise InvalidInputError(
            f"cannot fit a temperature on these {len(truth)} images: {why} (T reached "
            f"{temperature:g}, the bound of [{T_MIN:g}, {T_MAX:g}]); calibrate on more or "
            "harder images, with some the model gets wrong"
        )
    before = softmax_rows(cosines * logit_scale)
    after = softmax_rows(cosines * (logit_scale / temperature))
    correct = before.argmax(axis=1) == truth  # the ranking is the same at every T
    conf_after = after.max(axis=1)
    targets = sorted({*PRECISIONS, *([target_precision] if target_precision is not None else [])})
    return {
        "temperature": temperature,
        "n": len(truth),
        "accuracy": float(correct.mean()),
        "nll_before": nll(before, truth),
        "nll_after": nll(after, truth),
        "ece_before": ece(before.max(axis=1), correct),
        "ece_after": ece(conf_after, correct),
        "suggested_reject_below": {
            f"{p:g}": suggest_threshold(conf_after, correct, p) for p in targets
        },
    }
