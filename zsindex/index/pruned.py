"""Exact pruned search: the top k of flat search, scoring only the groups that can hold it.

Every group (:mod:`zsindex.index.groups`) has an upper bound ``u_g`` on every member's score
with a query. Groups are expanded (their members scored) in bound order, in rounds of doubling
size; a query is finished when

1. no unexpanded group can reach its current k-th score (``u_g < kth − ε``, ``ε`` the float32
   dot-product error bound): the top k is then exactly flat search's, by construction; and
2. the unexpanded groups' bounded share of the softmax normaliser,
   ``tail = Σ_g n_g exp(scale · u_g)``, is at most ``tolerance`` × the expanded part ``Z``, or the
   work budget is spent (then the bound is reported as it is).

Probabilities are normalised by the expanded part ``Z`` (plus nothing for the tail), so the
reported ``p`` and the true ``p*`` satisfy ``p / (1 + e) ≤ p* ≤ p`` with ``e = tail / Z``, the
``probability_error`` the result reports (0 when every group was expanded).

A query whose top k cannot be certified within ``max_fraction`` of the rows (loose groups:
bounds above every score) is answered by flat exact search instead, so loose groups cost little
more than flat search: the group bounds (one ``[Q, G]`` product) and, unless the bounds alone
already show the groups loose, a first round; a larger batch first probes four queries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from threadpoolctl import threadpool_limits

from zsindex.index import f16
from zsindex.index.exact import ExactIndex, make_result
from zsindex.index.groups import Groups, dot_error
from zsindex.index.kernels import thread_pool
from zsindex.index.types import SearchResult, Subset, as_queries, check_k, check_logits

FIRST_ROUND_GROUPS = 2
"""Groups expanded per query before its k-th score is first known."""

MAX_FRACTION = 0.25
"""Above this share of the rows scored, a single query is answered by flat search instead."""

BATCH_EFFICIENCY = 8.0
"""How much cheaper per (query, row) flat search's batched GEMM is than the per-group products
of pruned search at large batches (measured here: 320 ns at batch 1 against 42 ns at batch 64
per row and query): the per-query budget shrinks by up to this factor as the batch grows."""

TAIL_SHARE = 0.25
"""Of the budget, the share that may go to tightening the normaliser once the top k is
certain (the top k is what must be exact; the normaliser's bound is reported as it stands)."""

PROBE_QUERIES = 4
"""Queries of a larger batch tried first: if none of them can prune, flat answers them all."""

EXTRA_CANDIDATES = 8
"""Candidates kept per (query, group) beyond ``k``, re-scored in float64 near the k-th."""


@dataclass(frozen=True)
class PrunedResult:
    """A pruned search's answer and how it was found.

    Attributes:
        result: ids, scores and probabilities, as flat exact search would rank them;
            ``exact_probabilities`` is False when some query left groups unexpanded.
        probability_error: float64 ``[Q]``: ``e`` with ``p / (1 + e) ≤ p* ≤ p`` for every
            reported probability ``p`` (0 where every group was expanded or flat answered).
        scored_fraction: float64 ``[Q]``: share of the searched rows whose score was computed.
        fell_back: bool ``[Q]``: answered by flat exact search (bounds could not prune).
    """

    result: SearchResult
    probability_error: np.ndarray
    scored_fraction: np.ndarray
    fell_back: np.ndarray


@dataclass
class _Acc:
    """Per-query running state: candidates, expanded normaliser part, expanded prefix."""

    cand_ids: list[list[np.ndarray]]
    cand_scores: list[list[np.ndarray]]
    z: np.ndarray  # float64 [Q]: Σ exp(scale·s − ref) over expanded members
    done_prefix: np.ndarray  # int64 [Q]: groups expanded, as a prefix of the bound order


def pruned_search(
    index: ExactIndex,
    groups: Groups,
    queries: np.ndarray,
    k: int = 5,
    *,
    logit_scale: float,
    logit_bias: float = 0.0,
    tolerance: float = 1e-3,
    max_fraction: float = MAX_FRACTION,
    tail_share: float = TAIL_SHARE,
    flat_subset: Subset = None,
) -> PrunedResult:
    """Exact top-k over the groups' members (softmax mode), pruning groups by their bounds.

    Args:
        index: the exact index holding the rows (``index.matrix``).
        groups: a partition of the searched rows with their bounds.
        queries: ``[Q, dim]`` query embeddings (unit norm; the bounds use their actual norms).
        k: labels per query.
        logit_scale: the model's ``logit_scale.exp()``.
        logit_bias: added to every logit.
        tolerance: expand further while the normaliser's bounded tail exceeds this share of
            its expanded part (within the work budget).
        max_fraction: the work budget per query, as a share of the searched rows; a query whose
            top k is not certain within it is answered by flat search.
        tail_share: the share of that budget that may go to tightening the normaliser once
            the top k is certain.
        flat_subset: the ``subset`` that makes flat search search the groups' members (the
            leaves of a tree; ``None`` for every row).
    """
    q = as_queries(queries, index.dim)
    k = check_k(k)
    scale, bias = check_logits(logit_scale, logit_bias)
    nq = len(q)
    share = _share(max_fraction, nq)

    def flat(qs: np.ndarray) -> PrunedResult:
        res = index.search(qs, k, logit_scale=scale, logit_bias=bias, subset=flat_subset)
        n = len(qs)
        return PrunedResult(res, np.zeros(n), np.ones(n), np.ones(n, dtype=bool))

    def rest(qs: np.ndarray) -> PrunedResult:
        # The few queries a batch's budget could not certify get the budget of a batch of
        # their own size (flat search over a few queries costs nearly a full pass each).
        again = _share(max_fraction, len(qs))
        if len(qs) < nq and again > share:
            return _search(index, groups, qs, k, scale, bias, tolerance, again, tail_share, flat)
        return flat(qs)

    if nq > PROBE_QUERIES:
        # A few queries first: where none of them can prune, the whole batch goes to flat
        # search before any other query has paid for a first round.
        probe = np.linspace(0, nq - 1, PROBE_QUERIES).round().astype(np.int64)
        trial = _search(index, groups, q[probe], k, scale, bias, tolerance, share, tail_share, None)
        if trial.fell_back.all():
            return flat(q)
    return _search(index, groups, q, k, scale, bias, tolerance, share, tail_share, rest)


def _share(max_fraction: float, nq: int) -> float:
    """The share of the rows a query of a batch of ``nq`` may score before flat is cheaper:
    flat search gets cheaper per query as the batch grows, pruned search's small products do
    not."""
    return max_fraction / min(BATCH_EFFICIENCY, 1.0 + (nq - 1) / 8.0)


def _search(
    index: ExactIndex,
    groups: Groups,
    q: np.ndarray,
    k: int,
    scale: float,
    bias: float,
    tolerance: float,
    share: float,
    tail_share: float,
    rest: Callable[[np.ndarray], PrunedResult] | None,
) -> PrunedResult:
    """Pruned search of ``q`` with the per-query budget ``share``; ``rest`` answers the queries
    whose top k the budget cannot certify (``None``: they stay unanswered, only flagged)."""
    nq, total = len(q), groups.num_members
    k_eff = min(k, total)
    sizes = groups.sizes
    budget = max(k_eff, int(share * total))
    tail_budget = max(k_eff, int(tail_share * share * total))
    # A few queries: a GEMV, which multi-threaded BLAS mostly spends synchronising on a busy
    # machine (measured: ~9 ms against ~0.5 ms on one thread for 1,400 centres).
    with threadpool_limits(1, user_api="blas") if nq <= 8 else contextlib.nullcontext():
        centre_scores = np.asarray(q @ groups.centres.T)
    bounds = groups.bounds(q, centre_scores)
    order = np.argsort(-bounds, axis=1, kind="stable")
    bsorted = np.take_along_axis(bounds, order, axis=1)
    cum_sizes = np.cumsum(sizes[order], axis=1)
    ref = scale * bsorted[:, 0]  # ≥ every scaled score: exp() never overflows
    eps = dot_error(index.dim) * np.linalg.norm(q.astype(np.float64), axis=1)
    eps *= float(groups.norm_hi.max(initial=1.0))
    # Tail weights in bound order; suffix sums give each prefix's bounded unexpanded mass.
    weights = sizes[order] * np.exp(scale * bsorted - ref[:, None])
    suffix = np.cumsum(weights[:, ::-1], axis=1)[:, ::-1]
    suffix = np.concatenate([suffix, np.zeros((nq, 1))], axis=1)
    acc = _Acc(
        [[] for _ in range(nq)], [[] for _ in range(nq)], np.zeros(nq), np.zeros(nq, np.int64)
    )
    # Loose groups, seen from the bounds alone: if even the groups whose bound reaches the best
    # centre score (a typical top score) hold more than twice the budget, the first round
    # would be wasted. A guess, so it only decides who goes to flat search at once: the
    # answers stay exact either way.
    guess = (bsorted >= centre_scores.max(axis=1, initial=-np.inf)[:, None]).sum(axis=1)
    guess_cost = cum_sizes[np.arange(nq), np.maximum(guess - 1, 0)]
    fell_back = guess_cost > 2 * budget
    active = ~fell_back
    # First round: a few groups, at least enough members for k candidates.
    want = np.maximum(FIRST_ROUND_GROUPS, (cum_sizes < k_eff).sum(axis=1) + 1)
    want = np.minimum(want, groups.count)
    while active.any():
        _expand(index, groups, q, order, acc, want, active, scale, ref, k_eff)
        kth = np.array([_kth(acc, i, k_eff) for i in range(nq)])
        # Groups that may still hold a top-k member: a prefix of the bound order.
        need_topk = (bsorted >= (kth - eps)[:, None]).sum(axis=1)
        # Groups to expand so that the tail is within tolerance of the expanded part.
        need_tail = (suffix > tolerance * acc.z[:, None]).sum(axis=1)
        scored = cum_sizes[np.arange(nq), np.maximum(acc.done_prefix - 1, 0)]
        scored = np.where(acc.done_prefix > 0, scored, 0)
        certain = need_topk <= acc.done_prefix
        topk_cost = cum_sizes[np.arange(nq), np.maximum(need_topk - 1, 0)]
        # The top k would need more than the budget: flat search answers it.
        hopeless = ~certain & (topk_cost > budget) & active
        fell_back |= hopeless
        active &= ~hopeless
        tail_ok = need_tail <= acc.done_prefix
        spent = scored >= tail_budget
        active &= ~(certain & (tail_ok | spent))
        if not active.any():
            break
        # Next round: double the expanded prefix, never past what is needed (the top k first).
        need = np.where(certain, need_tail, need_topk)
        grow = np.maximum(acc.done_prefix * 2, acc.done_prefix + 1)
        want = np.minimum(np.minimum(need, grow), groups.count)
        # Within the budget: stop growing at the prefix the budget allows.
        allowed = (cum_sizes <= tail_budget).sum(axis=1)
        want = np.where(certain, np.minimum(want, np.maximum(allowed, acc.done_prefix)), want)
        stuck = active & (want <= acc.done_prefix)
        active &= ~stuck
    return _assemble(
        index, groups, q, k_eff, scale, bias, acc, ref, suffix, cum_sizes, fell_back, rest
    )


def _kth(acc: _Acc, i: int, k: int) -> float:
    """The k-th best float32 score among query ``i``'s candidates (-inf with fewer than k)."""
    if not acc.cand_scores[i]:
        return -np.inf
    scores = np.concatenate(acc.cand_scores[i])
    if len(scores) < k:
        return -np.inf
    # Keep only what can still matter: the candidates near the top.
    top = np.partition(scores, len(scores) - k)[len(scores) - k]
    return float(top)


def _expand(
    index: ExactIndex,
    groups: Groups,
    q: np.ndarray,
    order: np.ndarray,
    acc: _Acc,
    want: np.ndarray,
    active: np.ndarray,
    scale: float,
    ref: np.ndarray,
    k: int,
) -> None:
    """Score the groups ``order[i, done_prefix[i]:want[i]]`` for every active query ``i``."""
    pairs_q: list[np.ndarray] = []
    pairs_g: list[np.ndarray] = []
    for i in np.flatnonzero(active):
        a, b = int(acc.done_prefix[i]), int(want[i])
        if b > a:
            pairs_q.append(np.full(b - a, i, dtype=np.int64))
            pairs_g.append(order[i, a:b])
            acc.done_prefix[i] = b
    if not pairs_q:
        return
    qs_all, gs_all = np.concatenate(pairs_q), np.concatenate(pairs_g)
    by_group = np.argsort(gs_all, kind="stable")
    qs_all, gs_all = qs_all[by_group], gs_all[by_group]
    cuts = np.flatnonzero(np.r_[True, gs_all[1:] != gs_all[:-1], True])
    matrix = index.matrix
    keep = min(k + EXTRA_CANDIDATES, int(groups.sizes.max(initial=1)))

    def score(span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        a, b = span
        g = int(gs_all[a])
        qs = qs_all[a:b]
        rows = groups.members(g)
        ids = (
            np.arange(rows.start, rows.stop, dtype=np.int64)
            if isinstance(rows, slice)
            else np.asarray(rows)
        )
        s = f16.scores(q[qs], matrix[rows])  # [len(qs), n_g] float32
        z = np.exp(scale * s.astype(np.float64) - ref[qs][:, None]).sum(axis=1)
        if s.shape[1] > keep:
            part = np.argpartition(-s, keep - 1, axis=1)[:, :keep]
        else:
            part = np.broadcast_to(np.arange(s.shape[1]), s.shape)
        return qs, ids[part], np.take_along_axis(s, part, axis=1), z

    spans = list(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True))
    with threadpool_limits(1, user_api="blas"):
        outs = list(thread_pool().map(score, spans)) if len(spans) > 8 else list(map(score, spans))
    for qs, ids, s, z in outs:
        np.add.at(acc.z, qs, z)
        for row, i in enumerate(qs.tolist()):
            acc.cand_ids[i].append(ids[row])
            acc.cand_scores[i].append(s[row])


def _assemble(
    index: ExactIndex,
    groups: Groups,
    q: np.ndarray,
    k: int,
    scale: float,
    bias: float,
    acc: _Acc,
    ref: np.ndarray,
    suffix: np.ndarray,
    cum_sizes: np.ndarray,
    fell_back: np.ndarray,
    rest: Callable[[np.ndarray], PrunedResult] | None,
) -> PrunedResult:
    nq = len(q)
    total = groups.num_members
    ids_out = np.zeros((nq, k), dtype=np.int64)
    scores_out = np.zeros((nq, k), dtype=np.float64)
    lse = np.zeros(nq, dtype=np.float64)
    err = np.zeros(nq, dtype=np.float64)
    frac = np.ones(nq, dtype=np.float64)
    eps = dot_error(index.dim) * 4.0
    for i in np.flatnonzero(~fell_back):
        ids = np.concatenate(acc.cand_ids[i])
        s32 = np.concatenate(acc.cand_scores[i])
        kth = np.partition(s32, len(s32) - k)[len(s32) - k]
        near = s32 >= kth - eps  # re-score in float64 everything that may be in the top k
        cand = np.unique(ids[near])
        s64 = index.matrix[cand].astype(np.float64) @ q[i].astype(np.float64)
        best = np.lexsort((cand, -s64))[:k]
        ids_out[i], scores_out[i] = cand[best], s64[best]
        # Swap the top-k terms of the float32 normaliser for float64 ones (as flat does).
        top32 = s32[np.isin(ids, ids_out[i])]
        z = acc.z[i]
        z += np.exp(scale * scores_out[i] - ref[i]).sum()
        z -= np.exp(scale * top32.astype(np.float64) - ref[i]).sum()
        lse[i] = ref[i] + np.log(z)
        prefix = int(acc.done_prefix[i])
        err[i] = suffix[i, prefix] / z
        frac[i] = cum_sizes[i, prefix - 1] / total
    result = make_result(
        q,
        ids_out,
        scores_out,
        scale=scale,
        bias=bias,
        mode="softmax",
        scaled_lse=lse,
        exact_neighbors=True,
        num_searched=total,
        backend="pruned-groups",
    )
    if fell_back.any() and rest is not None:
        other = rest(q[fell_back])
        result = _merge(result, other.result, fell_back)
        err[fell_back] = other.probability_error
        frac[fell_back] = other.scored_fraction
        fell_back = fell_back.copy()
        fell_back[fell_back] = other.fell_back
    exact = bool((err == 0).all())
    return PrunedResult(
        result=replace(result, exact_probabilities=exact),
        probability_error=err,
        scored_fraction=frac,
        fell_back=fell_back,
    )


def _merge(base: SearchResult, flat: SearchResult, rows: np.ndarray) -> SearchResult:
    """``base`` with the rows ``rows`` replaced by ``flat``'s answers."""

    def put(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = a.copy()
        out[rows] = b
        return out

    assert base.log_normalizer is not None and flat.log_normalizer is not None
    return replace(
        base,
        ids=put(base.ids, flat.ids),
        scores=put(base.scores, flat.scores),
        logits=put(base.logits, flat.logits),
        probabilities=put(base.probabilities, flat.probabilities),
        log_normalizer=put(base.log_normalizer, flat.log_normalizer),
        backend=base.backend if not rows.all() else flat.backend,
    )
