"""Groups of label rows with rigorous score bounds, for exact pruned search.

A group is a set of member rows with a centre ``c`` (the mean of its members) and two
precomputed numbers from which every member's score with any query is bounded:

- the radius ``r = max ‖m − c‖``: for a query ``q``, ``q·m = q·c + q·(m − c) ≤ q·c + ‖q‖ r``
  (Cauchy–Schwarz);
- the cap: every member direction lies within the angle ``θ = max ∠(m, ĉ)`` of the centre's
  direction ``ĉ``, so ``q·m ≤ ‖q‖ ‖m‖ cos(max(0, ∠(q, ĉ) − θ))`` (the angle between two
  directions is at least the difference of their angles to a third, the triangle inequality on
  the sphere). This is the tighter of the two when groups are tight.

The members' norms are kept as a range, so the bounds hold for rows that are not exactly unit
(an imported float16 matrix); each quantity is widened by its float32 rounding bound.

Groups come from a tree (the leaves under each internal node: :func:`tree_groups`) or, for a
flat set, from k-means at load (:func:`kmeans_groups`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from zsindex.index import f16
from zsindex.index.kernels import thread_pool

FP32_UNIT = 2.0**-24
"""Unit round-off of float32."""


def dot_error(dim: int) -> float:
    """Worst-case error of a float32 dot product of two vectors of norm ≤ 1 in ``dim``
    dimensions (``γ_dim = dim·u / (1 − dim·u)``, any summation order), with a little room."""
    g = dim * FP32_UNIT
    return 1.01 * g / (1.0 - g)


@dataclass(frozen=True)
class Groups:
    """A partition of some label rows into groups with their bounds.

    Attributes:
        order: member row ids grouped, ``order[starts[g]:starts[g + 1]]`` are group ``g``'s.
        starts: ``[G + 1]`` offsets into ``order``.
        centres: float32 ``[G, dim]`` mean of each group's members.
        centre_norms: float64 ``[G]`` norm of each centre (of the float32 centre).
        radii: float64 ``[G]`` ``max ‖m − c‖`` over the members.
        cap_cos: float64 ``[G]`` ``min cos ∠(m, ĉ)`` over the members (1 for one member).
        norm_lo: float64 ``[G]`` smallest member norm.
        norm_hi: float64 ``[G]`` largest member norm.
        contiguous: bool ``[G]`` whether the members are one run of rows (scored as a slice).
        kind: ``tree`` or ``kmeans``.
    """

    order: np.ndarray
    starts: np.ndarray
    centres: np.ndarray
    centre_norms: np.ndarray
    radii: np.ndarray
    cap_cos: np.ndarray
    norm_lo: np.ndarray
    norm_hi: np.ndarray
    contiguous: np.ndarray
    kind: str

    @property
    def count(self) -> int:
        """Number of groups."""
        return int(len(self.starts) - 1)

    @property
    def sizes(self) -> np.ndarray:
        """Members per group, int64 ``[G]``."""
        return np.diff(self.starts)

    @property
    def num_members(self) -> int:
        """Rows covered by the groups."""
        return int(self.starts[-1])

    def members(self, g: int) -> slice | np.ndarray:
        """Group ``g``'s rows: a slice when they are contiguous, else their ids."""
        a, b = int(self.starts[g]), int(self.starts[g + 1])
        if self.contiguous[g]:
            first = int(self.order[a])
            return slice(first, first + (b - a))
        return self.order[a:b]

    def describe(self) -> dict[str, float]:
        """Summary numbers for reports (group sizes and radii)."""
        sizes = self.sizes
        return {
            "groups": float(self.count),
            "mean_size": float(sizes.mean()) if len(sizes) else 0.0,
            "median_radius": float(np.median(self.radii)) if len(sizes) else 0.0,
            "max_radius": float(self.radii.max(initial=0.0)),
        }

    def bounds(self, q: np.ndarray, centre_scores: np.ndarray) -> np.ndarray:
        """Upper bounds ``[Q, G]`` (float64) on the exact score ``q·m`` of every member.

        Args:
            q: float32 ``[Q, dim]`` queries.
            centre_scores: float32 ``[Q, G]`` ``q @ centres.T`` as computed (its rounding
                error is accounted for here).
        """
        qn = np.linalg.norm(q.astype(np.float64), axis=1)[:, None]
        err = dot_error(q.shape[1]) * qn * np.maximum(self.centre_norms, 1.0)[None, :]
        s_hi = centre_scores.astype(np.float64) + err  # ≥ the exact q·c
        by_ball = s_hi + qn * self.radii[None, :]
        denom = qn * self.centre_norms[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            cos_phi = np.where(denom > 0, s_hi / np.where(denom > 0, denom, 1.0), 1.0)
        phi_lo = np.arccos(np.clip(cos_phi, -1.0, 1.0))  # ≤ the exact angle ∠(q, ĉ)
        theta = np.arccos(np.clip(self.cap_cos, -1.0, 1.0)) + 1e-12
        t = np.cos(np.maximum(0.0, phi_lo - theta[None, :]))
        by_cap = qn * np.where(t >= 0, self.norm_hi[None, :] * t, self.norm_lo[None, :] * t)
        # A few ulps of room for the float64 arithmetic of the bounds themselves.
        return np.asarray(np.minimum(by_ball, by_cap) + 1e-12)


def build_groups(matrix: np.ndarray, rows: np.ndarray, labels: np.ndarray, kind: str) -> Groups:
    """Groups of ``rows`` by their group label ``labels`` (any integers), with bounds.

    Args:
        matrix: the label matrix ``[N, dim]`` (float16 or float32).
        rows: member row ids ``[M]``.
        labels: group label per member ``[M]``.
        kind: what made the groups (``tree``, ``kmeans``), for reports.
    """
    rows = np.asarray(rows, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    perm = np.lexsort((rows, labels))
    order = rows[perm]
    sorted_labels = labels[perm]
    if len(order) == 0:
        raise ValueError("a group partition needs at least one row")
    cuts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    starts = np.r_[cuts, len(order)].astype(np.int64)
    g_count = len(starts) - 1
    dim = matrix.shape[1]
    centres = np.empty((g_count, dim), dtype=np.float32)
    stats = np.empty((g_count, 5), dtype=np.float64)
    contiguous = np.empty(g_count, dtype=bool)

    def one(g: int) -> None:
        ids = order[starts[g] : starts[g + 1]]
        run = bool(ids[-1] - ids[0] + 1 == len(ids))
        block = matrix[int(ids[0]) : int(ids[-1]) + 1] if run else matrix[ids]
        m = f16.widen(block)
        c32 = m.mean(axis=0, dtype=np.float64).astype(np.float32)
        norms = np.linalg.norm(m, axis=1)
        radius = float(np.linalg.norm(m - c32, axis=1).max())
        c_norm = float(np.linalg.norm(c32.astype(np.float64)))
        if c_norm > 0 and norms.min() > 0:
            cap = float(((m @ c32) / (norms * np.float32(c_norm))).min())
        else:
            cap = -1.0
        centres[g] = c32
        contiguous[g] = run
        # float32 norms and products are within γ_dim (relative) of exact: widen by
        # twice that, so the bounds stay bounds.
        room = 2.0 * dot_error(dim)
        lo, hi = float(norms.min()) * (1 - room), float(norms.max()) * (1 + room)
        stats[g] = (c_norm, radius * (1 + room) + room, cap - 3 * room, lo, hi)

    # One BLAS thread per group: the products are small, and threads only contend.
    with threadpool_limits(1, user_api="blas"):
        list(thread_pool().map(one, range(g_count)))
    return Groups(
        order=order,
        starts=starts,
        centres=centres,
        centre_norms=stats[:, 0].copy(),
        radii=stats[:, 1].copy(),
        cap_cos=np.clip(stats[:, 2], -1.0, 1.0),
        norm_lo=stats[:, 3].copy(),
        norm_hi=stats[:, 4].copy(),
        contiguous=contiguous,
        kind=kind,
    )


def tree_groups(matrix: np.ndarray, leaves: np.ndarray, parents: np.ndarray) -> Groups:
    """The leaves of a tree grouped by their parent node (root leaves form one group)."""
    leaves = np.asarray(leaves, dtype=np.int64)
    return build_groups(matrix, leaves, np.asarray(parents)[leaves], "tree")


def kmeans_groups(
    matrix: np.ndarray,
    *,
    n_groups: int | None = None,
    iterations: int = 8,
    sample: int = 65_536,
    seed: int = 0,
) -> Groups:
    """k-means groups of a flat set's rows (spherical k-means on a sample, then every row
    assigned to its nearest centre by inner product).

    Args:
        matrix: ``[N, dim]`` rows.
        n_groups: number of groups (default ``2√N``, at least 1: more groups than natural
            clusters, so that hardly any cluster is left without a centre of its own).
        iterations: Lloyd iterations on the sample.
        sample: rows the centres are fitted on.
        seed: the random seed (groups are reproducible).
    """
    n = matrix.shape[0]
    g = max(1, min(n, n_groups if n_groups is not None else round(2 * math.sqrt(n))))
    rng = np.random.default_rng(seed)
    fit = np.sort(rng.choice(n, min(n, max(sample, g)), replace=False))
    x = f16.widen(matrix[fit])
    # Seeds from a smaller random part of the sample (8 per centre): k-means++ is sequential.
    centres = _seed_centres(x[rng.choice(len(x), min(len(x), 8 * g), replace=False)], g, rng)
    for _ in range(iterations):
        assign = _nearest(x, centres)
        sums = np.zeros_like(centres)
        by = np.argsort(assign, kind="stable")
        present, first = np.unique(assign[by], return_index=True)
        sums[present] = np.add.reduceat(x[by], first, axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        empty = norms[:, 0] == 0
        centres = np.where(empty[:, None], centres, sums / np.where(norms > 0, norms, 1.0))
    step = 65_536
    labels = np.concatenate(
        [_nearest(f16.widen(matrix[a : a + step]), centres) for a in range(0, n, step)]
    )
    return build_groups(matrix, np.arange(n, dtype=np.int64), labels, "kmeans")


def _seed_centres(x: np.ndarray, g: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds (each next seed drawn with probability ∝ its squared distance to the
    nearest seed so far): a cluster left without a seed would merge into a neighbour, and one
    loose group costs pruning every query near it."""
    centres = np.empty((g, x.shape[1]), dtype=np.float32)
    centres[0] = x[rng.integers(len(x))]
    sq = np.sum(x * x, axis=1)
    dist = np.maximum(sq - 2 * (x @ centres[0]) + float(centres[0] @ centres[0]), 0.0)
    with threadpool_limits(1, user_api="blas"):  # one GEMV per seed: threads only contend
        for i in range(1, g):
            total = float(dist.sum())
            pick = (
                int(rng.choice(len(x), p=dist / total)) if total > 0 else int(rng.integers(len(x)))
            )
            centres[i] = x[pick]
            new = sq - 2 * (x @ centres[i]) + float(centres[i] @ centres[i])
            np.minimum(dist, np.maximum(new, 0.0), out=dist)
    return centres


def _nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.asarray((x @ centres.T).argmax(axis=1))
