"""Exact pruned search (zsindex.index.pruned) against flat exact search, on real indexes.

Every case compares with ``ExactIndex.search`` over the same rows: the top k must be the same
ids in the same order, and every reported probability ``p`` must bracket flat's exact ``p*`` as
the reported error says (``p / (1 + e) ≤ p* ≤ p``).
"""

from __future__ import annotations

import numpy as np
import pytest

from zsindex.index.exact import ExactIndex
from zsindex.index.groups import Groups, build_groups, kmeans_groups, tree_groups
from zsindex.index.pruned import pruned_search

DIM = 48
SCALE = 100.0


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _clustered(groups: int, size: int, spread: float, seed: int = 0) -> np.ndarray:
    """Rows ``normalize(centre + spread × noise)``, grouped ``size`` per centre."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((groups, DIM)))
    noise = _unit(rng.standard_normal((groups * size, DIM)))
    return _unit(np.repeat(centres, size, axis=0) + spread * noise)


def _queries(matrix: np.ndarray, n: int, seed: int = 1, weight: float = 0.3) -> np.ndarray:
    """Image-like queries: a little of a row, mostly noise (and a few exact rows)."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(matrix), n, replace=False)
    q = weight * matrix[rows].astype(np.float32) + 0.95 * _unit(rng.standard_normal((n, DIM)))
    q[: max(1, n // 8)] = matrix[rows[: max(1, n // 8)]]  # a query equal to a row
    return _unit(q)


def _check(
    index: ExactIndex,
    groups: Groups,
    q: np.ndarray,
    k: int,
    *,
    subset: np.ndarray | None = None,
    **kw: float,
) -> None:
    flat = index.search(q, k, logit_scale=SCALE, subset=subset)
    found = pruned_search(index, groups, q, k, logit_scale=SCALE, flat_subset=subset, **kw)
    res = found.result
    np.testing.assert_array_equal(res.ids, flat.ids)
    np.testing.assert_allclose(res.scores, flat.scores, rtol=0, atol=1e-6)
    e = found.probability_error[:, None]
    p, p_star = res.probabilities.astype(np.float64), flat.probabilities.astype(np.float64)
    slack = 3e-5  # both sides' own float32 scores (x logit scale 100)
    assert (p_star <= p * (1 + slack) + 1e-30).all()
    assert (p_star >= p / (1 + e) * (1 - slack)).all()
    assert res.exact_probabilities == bool((found.probability_error == 0).all())


def test_bounds_hold_for_every_member() -> None:
    rng = np.random.default_rng(3)
    matrix = _clustered(20, 50, 0.3)
    # Rows that are not exactly unit (an imported float16 matrix): the bounds use norm ranges.
    matrix = (matrix * rng.uniform(0.97, 1.03, (len(matrix), 1))).astype(np.float16)
    groups = build_groups(matrix, np.arange(len(matrix)), np.repeat(np.arange(20), 50), "tree")
    q = _queries(matrix.astype(np.float32), 64)
    bounds = groups.bounds(q, np.asarray(q @ groups.centres.T))
    exact = q.astype(np.float64) @ matrix.astype(np.float64).T
    for g in range(groups.count):
        ids = groups.order[groups.starts[g] : groups.starts[g + 1]]
        assert (exact[:, ids] <= bounds[:, [g]]).all()
    # ... and they are not vacuous for tight groups: the best member is close to its bound.
    assert np.median(bounds.max(axis=1) - exact.max(axis=1)) < 0.5


@pytest.mark.parametrize("spread", [0.05, 0.2, 0.6, 2.0])
def test_tree_children_are_parent_plus_noise(spread: float) -> None:
    matrix = _clustered(60, 40, spread)
    index = ExactIndex(matrix)
    groups = build_groups(matrix, np.arange(len(matrix)), np.repeat(np.arange(60), 40), "tree")
    q = _queries(matrix, 40)
    for k in (1, 5, 50):
        _check(index, groups, q, k)


def test_tree_with_parents_as_mean_of_children() -> None:
    """A tree stored BFS: parents first (the normalised mean of their children), then leaves;
    groups are the leaves under each parent, flat search is over the leaves only."""
    leaves = _clustered(30, 25, 0.4, seed=5)
    parents_vec = _unit(leaves.reshape(30, 25, DIM).mean(axis=1))
    matrix = np.concatenate([parents_vec, leaves])
    parents = np.r_[np.full(30, -1), np.repeat(np.arange(30), 25)]
    leaf_ids = np.arange(30, len(matrix))
    index = ExactIndex(matrix)
    groups = tree_groups(matrix, leaf_ids, parents)
    assert groups.count == 30 and groups.num_members == len(leaf_ids)
    q = _queries(matrix[30:], 32)
    _check(index, groups, q, 5, subset=leaf_ids)
    _check(index, groups, q, 1, subset=leaf_ids)


def test_flat_set_with_kmeans_groups() -> None:
    matrix = _clustered(40, 50, 0.3, seed=9)
    matrix = matrix[np.random.default_rng(0).permutation(len(matrix))]  # no order to lean on
    index = ExactIndex(matrix)
    groups = kmeans_groups(matrix, n_groups=45, sample=1000)
    assert groups.kind == "kmeans" and groups.num_members == len(matrix)
    assert not groups.contiguous.all()  # members are gathered, not sliced
    _check(index, groups, _queries(matrix, 48), 5)


def test_adversarial_ties_singletons_and_one_big_group() -> None:
    rng = np.random.default_rng(11)
    base = _clustered(10, 30, 0.3)
    # Exact duplicates of one row in three different groups (ties: the lowest id ranks first),
    # singleton groups, and one group holding half of the rows.
    dup = base[7]
    matrix = base.copy()
    matrix[[40, 95, 200]] = dup
    labels = np.repeat(np.arange(10), 30)
    labels[:150] = 0  # one big loose group
    labels[[5, 77, 250]] = [100, 101, 102]  # singletons
    index = ExactIndex(matrix)
    groups = build_groups(matrix, np.arange(len(matrix)), labels, "tree")
    q = np.concatenate([_queries(matrix, 16), dup[None, :], _unit(rng.standard_normal((4, DIM)))])
    for k in (1, 3, 4, 10):
        _check(index, groups, _unit(q), k)


def test_query_between_two_groups_and_k_beyond_a_group() -> None:
    matrix = _clustered(2, 200, 0.05, seed=2)
    index = ExactIndex(matrix)
    groups = build_groups(matrix, np.arange(400), np.repeat([0, 1], 200), "tree")
    mid = _unit(matrix[:200].mean(axis=0) + matrix[200:].mean(axis=0))[None, :]
    _check(index, groups, mid, 1)
    _check(index, groups, mid, 250)  # k larger than one group
    _check(index, groups, mid, 400)  # k = everything


def test_loose_groups_fall_back_to_flat() -> None:
    rng = np.random.default_rng(4)
    matrix = _unit(rng.standard_normal((2000, DIM)))  # random rows: no group is tight
    index = ExactIndex(matrix)
    groups = build_groups(matrix, np.arange(2000), np.arange(2000) % 40, "tree")
    q = _queries(matrix, 16)
    found = pruned_search(index, groups, q, 5, logit_scale=SCALE)
    assert found.fell_back.all()
    assert found.result.exact_probabilities
    _check(index, groups, q, 5)


def test_tight_groups_prune_most_rows() -> None:
    matrix = _clustered(200, 50, 0.05, seed=6)
    index = ExactIndex(matrix)
    groups = build_groups(matrix, np.arange(len(matrix)), np.repeat(np.arange(200), 50), "tree")
    q = _queries(matrix, 16, weight=0.8)
    found = pruned_search(index, groups, q, 5, logit_scale=SCALE)
    assert not found.fell_back.any()
    assert float(found.scored_fraction.mean()) < 0.2
    _check(index, groups, q, 5)


def test_zero_tolerance_with_full_budget_is_exact() -> None:
    matrix = _clustered(50, 20, 0.2, seed=8)
    index = ExactIndex(matrix)
    groups = build_groups(matrix, np.arange(len(matrix)), np.repeat(np.arange(50), 20), "tree")
    # One query at a time: the budget of a batch shrinks with its size (flat gets cheaper).
    for q in _queries(matrix, 4):
        found = pruned_search(
            index, groups, q, 5, logit_scale=SCALE, tolerance=0.0, max_fraction=1.0, tail_share=1.0
        )
        assert (found.probability_error == 0).all() and found.result.exact_probabilities
        flat = index.search(q, 5, logit_scale=SCALE)
        np.testing.assert_allclose(found.result.probabilities, flat.probabilities, rtol=3e-5)
