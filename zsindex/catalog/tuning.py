"""Few-shot label vectors: each label's text embedding blended with its example images' mean.

``v = normalise((1 − α)·t + α·m)`` where ``t`` is the label's unit text vector and ``m`` the
unit mean of its examples' unit image embeddings; labels without examples keep ``t``. α = 0 is
zero-shot, α = 1 the image prototype alone. Classification stays one nearest-neighbour search
over the blended rows.

``alpha="auto"`` picks α from :data:`ALPHA_GRID` by leave-one-out on the examples: each example
of a label with at least two is classified against vectors built without it (its own label's
mean from the others); the best top-1, ties broken by the lower NLL, then the smaller α. An
example that is its label's only one is not a query (without it its label would fall back to
text while every other label keeps its images, which always favours α = 0); with no label of
two examples, ``auto`` takes :data:`DEFAULT_ALPHA`. Pure numpy; the store writes are
:mod:`zsindex.catalog.adapt`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zsindex.errors import InvalidInputError

ALPHA_GRID = tuple(round(i / 20, 2) for i in range(21))
"""The α values ``auto`` tries: 0, 0.05, …, 1."""
DEFAULT_ALPHA = 0.5
"""What ``auto`` takes when no label has two examples (leave-one-out has no query)."""


def check_alpha(alpha: float | str) -> float | str:
    """``alpha`` if it is ``"auto"`` or a number in [0, 1]; InvalidInputError otherwise."""
    if isinstance(alpha, str):
        if alpha.strip().lower() == "auto":
            return "auto"
        try:
            alpha = float(alpha)
        except ValueError:
            raise InvalidInputError(
                f"alpha must be a number in [0, 1] or 'auto', got {alpha!r}"
            ) from None
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha):
        raise InvalidInputError(f"alpha must be a number in [0, 1] or 'auto', got {alpha!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise InvalidInputError(f"alpha must be within [0, 1] (or 'auto'), got {alpha!r}")
    return float(alpha)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    out: np.ndarray = x / np.maximum(norms, 1e-12)
    return out


def example_means(
    embeddings: np.ndarray, rows: np.ndarray, num_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """(unit mean image embedding per row [num_rows, dim] (zeros where none), counts)."""
    dim = embeddings.shape[1]
    sums = np.zeros((num_rows, dim), dtype=np.float64)
    np.add.at(sums, rows, embeddings.astype(np.float64))
    counts = np.bincount(rows, minlength=num_rows)
    means = np.where(counts[:, None] > 0, _unit(sums), 0.0)
    return means, counts


def blend(text: np.ndarray, means: np.ndarray, counts: np.ndarray, alpha: float) -> np.ndarray:
    """float32 unit rows: ``normalise((1 − α)·t + α·m)`` where a row has examples, else ``t``."""
    t = text.astype(np.float64)
    mixed = _unit((1.0 - alpha) * t + alpha * means)
    out = np.where(counts[:, None] > 0, mixed, t)
    return np.ascontiguousarray(out, dtype=np.float32)


@dataclass(frozen=True)
class AlphaChoice:
    """What leave-one-out found: the α chosen, and top-1 / NLL at every α tried."""

    alpha: float
    accuracy: dict[float, float]
    nll: dict[float, float]


def loo_alpha(
    text: np.ndarray,
    embeddings: np.ndarray,
    rows: np.ndarray,
    candidates: np.ndarray,
    logit_scale: float,
    grid: tuple[float, ...] = ALPHA_GRID,
) -> AlphaChoice:
    """Choose α by leave-one-out over the examples (queries: examples of labels with at
    least two; none: :data:`DEFAULT_ALPHA`, with empty scores).

    Args:
        text: unit text rows [N, dim] (registration order).
        embeddings: unit example embeddings [n, dim].
        rows: each example's row in ``text``.
        candidates: the rows a prediction can name (a tree's leaves; every row when flat).
        logit_scale: the model's logit scale (for the NLL tie-break).
    """
    t = text.astype(np.float64)
    x = embeddings.astype(np.float64)
    num = len(t)
    dim = t.shape[1]
    sums = np.zeros((num, dim))
    np.add.at(sums, rows, x)
    counts = np.bincount(rows, minlength=num)
    means = np.where(counts[:, None] > 0, _unit(sums), 0.0)
    # The example's own row without it: the mean of the others (none left: text only).
    own_sums = sums[rows] - x
    own_has = counts[rows] > 1
    own_means = np.where(own_has[:, None], _unit(own_sums), 0.0)
    col = {int(r): j for j, r in enumerate(candidates.tolist())}
    truth = np.array([col.get(int(r), -1) for r in rows])
    if (truth < 0).any():
        raise InvalidInputError("leave-one-out needs every example on a row predictions can name")
    tc, mc, hc = t[candidates], means[candidates], counts[candidates] > 0
    xt, xm = x @ tc.T, x @ mc.T  # [n, C]
    tm = np.sum(tc * mc, axis=1)  # [C]
    own_xt = np.sum(x * t[rows], axis=1)
    own_xm = np.sum(x * own_means, axis=1)
    own_tm = np.sum(t[rows] * own_means, axis=1)
    accuracy: dict[float, float] = {}
    losses: dict[float, float] = {}
    idx = np.arange(len(x))
    queries = own_has  # an only example leaves its label without images: not a fair query
    if not queries.any():
        return AlphaChoice(alpha=DEFAULT_ALPHA, accuracy={}, nll={})
    for a in grid:
        norm = np.sqrt(np.maximum((1 - a) ** 2 + a**2 + 2 * a * (1 - a) * tm, 1e-24))
        scores = np.where(hc[None, :], ((1 - a) * xt + a * xm) / norm[None, :], xt)
        own_norm = np.sqrt(np.maximum((1 - a) ** 2 + a**2 + 2 * a * (1 - a) * own_tm, 1e-24))
        own = np.where(own_has, ((1 - a) * own_xt + a * own_xm) / own_norm, own_xt)
        scores[idx, truth] = own
        z = scores * logit_scale
        zmax = z.max(axis=1)
        lse = zmax + np.log(np.exp(z - zmax[:, None]).sum(axis=1))
        accuracy[a] = float(np.mean((scores.argmax(axis=1) == truth)[queries]))
        losses[a] = float(np.mean((lse - z[idx, truth])[queries]))
    best = min(grid, key=lambda a: (-accuracy[a], losses[a], a))
    return AlphaChoice(alpha=float(best), accuracy=accuracy, nll=losses)
