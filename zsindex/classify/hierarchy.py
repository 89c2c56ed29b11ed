"""Hierarchical classification over label trees: beam (coarse-then-fine), marginal and CHiLS.

All three work on the BFS-ordered matrix of a :class:`~zsindex.classify.loaded.LoadedLabelSet`
(children are contiguous rows), so per-level searches are slices, not gathers.

- ``beam``: softmax among siblings at each level; a path's probability is the product of its
  conditional probabilities; the ``beam`` most probable nodes per level are expanded, and the
  final level's candidates are ranked by their own score (so a wide beam equals flat search).
  With a ``tolerance`` (the default, adaptive beam) each level keeps, per query, at least
  ``beam`` nodes and then more in probability order until the path probability it drops is at
  most ``tolerance / levels``: the mass of the pruned nodes is known exactly (sibling softmaxes
  multiply to one distribution over paths), so in all at most ``tolerance`` is dropped.
- ``marginal``: the exact softmax over all leaves, summed up the tree to the requested rank.
- ``chils``: each leaf's softmax probability times its parent's probability among the parent's
  level (CHiLS, ICML 2023), renormalised and summed up to the requested rank.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from zsindex.classify.loaded import LoadedLabelSet
from zsindex.classify.tree import Tree
from zsindex.index import f16
from zsindex.index.kernels import thread_pool

BLOCK_ROWS = 32_768


@dataclass
class LevelCandidates:
    """Scored candidates of one query at one depth, best first."""

    nodes: np.ndarray
    log_probs: np.ndarray
    scores: np.ndarray


@dataclass
class TreeAnswer:
    """One query's hierarchical answer: ranked candidates at the final depth and the path."""

    final: LevelCandidates
    path_nodes: list[int]
    path_probs: list[float]


@dataclass
class _Level:
    """Candidates of every query at one level as flat arrays, grouped by query."""

    q: np.ndarray
    nodes: np.ndarray
    log_probs: np.ndarray
    scores: np.ndarray

    def ranked(
        self, nq: int, *, by_score: bool, limit: int | None, drop: float | None = None
    ) -> _Level:
        """Sorted per query (best first), at most ``limit`` per query; with ``drop``, at least
        ``limit`` and more by probability until the pruned path probability is at most ``drop``.

        Only the kept candidates are sorted: a partial selection per query first (a level can
        hold hundreds of thousands of candidates, of which a few are kept).
        """
        key = self.scores if by_score else self.log_probs
        order = np.argsort(self.q, kind="stable")
        bounds = np.searchsorted(self.q[order], np.arange(nq + 1))
        pieces = []
        for i in range(nq):
            seg = order[bounds[i] : bounds[i + 1]]
            if limit is not None and len(seg) > limit:
                seg = self._keep(seg, key, limit, drop)
            pieces.append(seg[np.lexsort((self.nodes[seg], -key[seg]))])
        sel = np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)
        return _Level(self.q[sel], self.nodes[sel], self.log_probs[sel], self.scores[sel])

    def _keep(self, seg: np.ndarray, key: np.ndarray, limit: int, drop: float | None) -> np.ndarray:
        top = seg[np.argpartition(-key[seg], limit - 1)[:limit]]
        if drop is None:
            return top
        probs = np.exp(self.log_probs[seg].astype(np.float64))
        if probs.sum() - np.exp(self.log_probs[top].astype(np.float64)).sum() <= drop:
            return top
        # Widen: the most probable first, until what is left out weighs at most ``drop``.
        ranked = seg[np.argsort(-self.log_probs[seg], kind="stable")]
        left = probs.sum() - np.cumsum(np.exp(self.log_probs[ranked].astype(np.float64)))
        width = max(limit, int(np.searchsorted(-left, -drop, side="left")) + 1)
        return ranked[: min(width, len(ranked))]

    def of(self, q: int) -> LevelCandidates:
        a, b = np.searchsorted(self.q, [q, q + 1])
        return LevelCandidates(self.nodes[a:b], self.log_probs[a:b], self.scores[a:b])


def _scores(emb: np.ndarray, matrix: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
    return f16.scores(emb, matrix[rows])


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=-1, keepdims=True)
    shifted = logits - m
    return np.asarray(shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)))


def _prefix(tree: Tree, within: int | None) -> tuple[list[int], list[float]]:
    """The within-node's ancestors and itself: given, probability 1 each."""
    if within is None:
        return [], []
    nodes = tree.path_to(within)
    return nodes, [1.0] * len(nodes)


def beam_search(
    loaded: LoadedLabelSet,
    emb: np.ndarray,
    *,
    depth: int,
    beam: int,
    within: int | None = None,
    top: int | None = None,
    tolerance: float | None = None,
) -> list[TreeAnswer]:
    """Coarse-then-fine search to ``depth``, keeping ``beam`` nodes per level per query (with
    ``tolerance``: at least ``beam``, widened until the dropped path probability is at most
    ``tolerance`` over all levels) and the ``top`` best (all when ``None``) at the final level."""
    tree = loaded.tree
    assert tree is not None
    matrix, scale, bias = loaded.matrix, loaded.logit_scale, loaded.logit_bias
    starts, ends = tree.child_ranges
    nq = len(emb)
    if within is None:
        first, first_depth = tree.level(1), 1
    else:
        first = range(int(starts[within]), int(ends[within]))
        first_depth = int(tree.depths[within]) + 1
    # The first level: one dense block for every query.
    sc = _scores(emb, matrix, slice(first.start, first.stop))
    lp = _log_softmax(scale * sc + bias)
    width = len(first)
    level = _Level(
        np.repeat(np.arange(nq), width),
        np.tile(np.arange(first.start, first.stop), nq),
        lp.ravel(),
        sc.ravel(),
    )
    history: list[_Level] = []
    pruning_levels = max(1, depth - first_depth)
    drop = None if tolerance is None else tolerance / pruning_levels
    for level_depth in range(first_depth, depth + 1):
        last = level_depth == depth
        # Prune by path probability; rank the final level by each node's own score, so that a
        # wide enough beam returns exactly what flat search over that level would.
        if last:
            level = level.ranked(nq, by_score=True, limit=top)
        else:
            level = level.ranked(nq, by_score=False, limit=beam, drop=drop)
        history.append(level)
        if last:
            break
        level = _expand(emb, matrix, scale, bias, starts, ends, level)
    prefix_nodes, prefix_probs = _prefix(tree, within)
    final = history[-1]
    answers = []
    for q in range(nq):
        mine = final.of(q)
        path_nodes, path_probs = list(prefix_nodes), list(prefix_probs)
        if len(mine.nodes):
            for node in tree.path_to(int(mine.nodes[0]))[len(prefix_nodes) :]:
                lvl = history[int(tree.depths[node]) - first_depth].of(q)
                where = np.flatnonzero(lvl.nodes == node)
                path_nodes.append(node)
                path_probs.append(float(np.exp(lvl.log_probs[where[0]])) if len(where) else 0.0)
        answers.append(TreeAnswer(mine, path_nodes, path_probs))
    return answers


def _expand(
    emb: np.ndarray,
    matrix: np.ndarray,
    scale: float,
    bias: float,
    starts: np.ndarray,
    ends: np.ndarray,
    kept: _Level,
) -> _Level:
    """Children of every kept node, scored with one GEMM per distinct parent."""
    is_leaf = ends[kept.nodes] == starts[kept.nodes]
    # A leaf above the target depth stays a candidate with its own probability.
    parts = [(kept.q[is_leaf], kept.nodes[is_leaf], kept.log_probs[is_leaf], kept.scores[is_leaf])]
    inner = np.flatnonzero(~is_leaf)
    order = inner[np.argsort(kept.nodes[inner], kind="stable")]
    parents = kept.nodes[order]
    bounds: list[int] = (
        np.flatnonzero(np.r_[True, parents[1:] != parents[:-1], True]).tolist()
        if len(order)
        else []
    )
    groups = [order[a:b] for a, b in itertools.pairwise(bounds)]

    def score(members: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        parent = int(kept.nodes[members[0]])
        lo, hi = int(starts[parent]), int(ends[parent])
        qs = kept.q[members]
        sc = _scores(emb[qs], matrix, slice(lo, hi))
        lp = _log_softmax(scale * sc + bias) + kept.log_probs[members][:, None]
        return np.repeat(qs, hi - lo), np.tile(np.arange(lo, hi), len(qs)), lp.ravel(), sc.ravel()

    # Many small GEMMs: one BLAS thread each, spread over the worker pool (multi-threaded BLAS
    # on tiny products mostly synchronises, and collapses when the cores are busy).
    with threadpool_limits(1, user_api="blas"):
        parts.extend(thread_pool().map(score, groups) if len(groups) > 8 else map(score, groups))
    q, nodes, lps, scs = (np.concatenate(x) for x in zip(*parts, strict=True))
    return _Level(q, nodes, lps, scs)


def _leaf_levels(tree: Tree, within: int | None) -> list[tuple[int, np.ndarray | range]]:
    """(depth, leaf ids at that depth) for every depth holding leaves (inside ``within``)."""
    out: list[tuple[int, np.ndarray | range]] = []
    lo_depth = 1 if within is None else int(tree.depths[within])
    for d in range(lo_depth, tree.max_depth + 1):
        span = tree.level(d) if within is None else tree.descendant_range(within, d)
        if len(span) == 0:
            continue
        leafy = tree.is_leaf[span.start : span.stop]
        if leafy.all():
            out.append((d, span))
        elif leafy.any():
            out.append((d, span.start + np.flatnonzero(leafy)))
    return out


def shallow_leaves(tree: Tree, depth: int, within: int | None) -> np.ndarray:
    """Leaves above ``depth`` (inside ``within``): each is its own answer at that depth."""
    return np.concatenate(
        [np.asarray(ids) for d, ids in _leaf_levels(tree, within) if d < depth]
        or [np.empty(0, np.int64)]
    ).astype(np.int64)


def rank_candidates(tree: Tree, depth: int, within: int | None = None) -> np.ndarray:
    """Every node a tree mode can answer at ``depth``: the leaves above it, then the nodes at
    it (inside ``within``). At the deepest level these are the leaves that flat mode ranks."""
    span = tree.level(depth) if within is None else tree.descendant_range(within, depth)
    shallow = shallow_leaves(tree, depth, within)
    return np.concatenate([shallow, np.arange(span.start, span.stop)]).astype(np.int64)


def rank_marginals(
    loaded: LoadedLabelSet,
    emb: np.ndarray,
    *,
    depth: int,
    within: int | None = None,
    reweight_by_parent: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Probability mass of every candidate node at ``depth``: exact softmax over the leaves
    (optionally CHiLS-reweighted), summed to ``depth``. Leaves shallower than ``depth`` are
    candidates themselves.

    Returns:
        (candidate node ids [C], probabilities [Q, C])
    """
    tree = loaded.tree
    assert tree is not None
    matrix, scale, bias = loaded.matrix, loaded.logit_scale, loaded.logit_bias
    nq = len(emb)
    span = tree.level(depth) if within is None else tree.descendant_range(within, depth)
    levels = _leaf_levels(tree, within)
    shallow = shallow_leaves(tree, depth, within)
    candidates = rank_candidates(tree, depth, within)
    mass = np.zeros((nq, len(candidates)), dtype=np.float64)
    total = np.zeros(nq, dtype=np.float64)
    # A running maximum per query keeps exp() in float32 without overflow or underflow (the
    # accumulated sums are rescaled whenever it grows, as in an online softmax).
    run_max = np.full(nq, -np.inf, dtype=np.float32)
    col_of_shallow = {int(n): i for i, n in enumerate(shallow)}
    for leaf_depth, ids in levels:
        parent_probs = (
            _parent_level_probs(loaded, emb, leaf_depth - 1, within)
            if reweight_by_parent and leaf_depth > 1
            else None
        )
        for a in range(0, len(ids), BLOCK_ROWS):
            block = ids[a : a + BLOCK_ROWS]
            rows = slice(block.start, block.stop) if isinstance(block, range) else block
            logits = _scores(emb, matrix, rows)
            logits *= np.float32(scale)
            logits += np.float32(bias)
            new_max = np.maximum(run_max, logits.max(axis=1))
            grown = new_max > run_max
            if grown.any():
                factor = np.exp((run_max[grown] - new_max[grown]).astype(np.float64))
                mass[grown] *= factor[:, None]
                total[grown] *= factor
                run_max = new_max
            logits -= run_max[:, None]
            e = np.exp(logits, out=logits)
            block_ids = np.arange(block.start, block.stop) if isinstance(block, range) else block
            if parent_probs is not None:
                pmap, pstart = parent_probs
                e *= pmap[:, tree.parents[block_ids] - pstart]
            total += e.sum(axis=1, dtype=np.float64)
            if leaf_depth < depth:
                cols = np.array([col_of_shallow[int(n)] for n in block_ids])
                mass[:, cols] += e
                continue
            anc = tree.ancestors[block_ids, depth - 1]
            seg = np.flatnonzero(np.r_[True, anc[1:] != anc[:-1]])
            mass[:, len(shallow) + (anc[seg] - span.start)] += np.add.reduceat(e, seg, axis=1)
    probs = mass / np.maximum(total, np.finfo(np.float64).tiny)[:, None]
    return candidates, probs


def _parent_level_probs(
    loaded: LoadedLabelSet, emb: np.ndarray, depth: int, within: int | None
) -> tuple[np.ndarray, int]:
    """Softmax over the nodes at ``depth`` (inside ``within``): (probs [Q, n], first id)."""
    tree = loaded.tree
    assert tree is not None
    span = tree.level(depth) if within is None else tree.descendant_range(within, depth)
    sc = _scores(emb, loaded.matrix, slice(span.start, span.stop))
    lp = _log_softmax(loaded.logit_scale * sc + loaded.logit_bias)
    return np.exp(lp), span.start


def path_marginals(
    tree: Tree, candidates: np.ndarray, probs: np.ndarray, node: int, within: int | None
) -> tuple[list[int], list[float]]:
    """The path to ``node`` with each ancestor's mass (the sum over its candidates)."""
    path = tree.path_to(node)
    out_probs = []
    for anc in path:
        d = int(tree.depths[anc])
        if within is not None and d <= int(tree.depths[within]):
            out_probs.append(1.0)
            continue
        inside = tree.ancestors[candidates, d - 1] == anc
        out_probs.append(float(probs[inside].sum()))
    return path, out_probs
