"""Classification of image embeddings against a loaded label set: flat and hierarchical."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace

import numpy as np

from zsindex.classify import hierarchy, pruned
from zsindex.classify.loaded import LoadedLabelSet
from zsindex.classify.tree import Tree, find_node, unique_labels
from zsindex.errors import InvalidInputError
from zsindex.options import (
    DEFAULT_BEAM,
    DEFAULT_BEAM_TOLERANCE,
    FLAT_SET_MODES,
    ClassifyOptions,
    check_fits,
)
from zsindex.results import ClassificationResult, PathStep, Prediction


def check_embeddings(emb: np.ndarray, dim: int) -> np.ndarray:
    """float32 ``[Q, dim]`` unit rows from user-given embeddings (clear errors otherwise)."""
    arr = np.asarray(emb)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim or arr.shape[0] == 0:
        raise InvalidInputError(
            f"embeddings must have shape [n, {dim}] for this label set's model, "
            f"got {list(np.shape(emb))}"
        )
    if arr.dtype.kind not in "fiu":
        raise InvalidInputError(f"embeddings must be numbers, got {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise InvalidInputError("embeddings contain NaN or infinity")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidInputError("an embedding is all zeros")
    return np.asarray(arr / norms)


def check_options(loaded: LoadedLabelSet, opts: ClassifyOptions) -> None:
    """Refuse options this label set cannot take (a tree option on a flat set, an unknown
    ``within`` node or rank) before any image is decoded or encoded."""
    _resolve(loaded, opts)


def _resolve(loaded: LoadedLabelSet, opts: ClassifyOptions) -> tuple[int | None, int]:
    """(the ``within`` node or ``None``, the depth tree modes stop at; 0 in flat mode)."""
    opts.check()
    tree = loaded.tree
    check_fits(opts, loaded.name, is_tree=tree is not None)
    if tree is None:
        return None, 0
    return resolve_target(tree, loaded.names, opts)


def resolve_target(tree: Tree, names: list[str], opts: ClassifyOptions) -> tuple[int | None, int]:
    """(the ``within`` node or ``None``, the depth tree modes stop at; 0 in flat mode) of a
    tree whose node ids are BFS rows named ``names``: the rules and messages of every entry
    point, and of ``zsindex eval``'s folder check."""
    within = find_node(names, tree, opts.within) if opts.within is not None else None
    if opts.mode in FLAT_SET_MODES:
        return within, 0
    depth = tree.resolve_rank(opts.rank)
    if within is not None and depth <= int(tree.depths[within]):
        below = int(tree.depths[within]) + 1
        allowed = (
            f"give a rank from {below} to {tree.max_depth}"
            if below <= tree.max_depth
            else "it has nothing below it"
        )
        raise InvalidInputError(
            f"rank {opts.rank!r} is not below the within node {opts.within!r} (at depth "
            f"{int(tree.depths[within])}): {allowed}"
        )
    return within, depth


def classify_embeddings(
    loaded: LoadedLabelSet,
    emb: np.ndarray,
    image_names: list[str],
    opts: ClassifyOptions,
    *,
    beam_tolerance: float = DEFAULT_BEAM_TOLERANCE,
) -> list[ClassificationResult]:
    """Classify L2-normalised image embeddings ``[Q, dim]``; one result per row (each marked
    ``rejected`` where ``opts.reject_below`` is set and its top probability falls below it).

    ``beam_tolerance`` is the adaptive beam's (``beam`` mode without ``opts.beam``).
    """
    results = _classify(loaded, emb, image_names, opts, beam_tolerance=beam_tolerance)
    if opts.reject_below is None:
        return results
    return [mark_rejected(r, opts.reject_below) for r in results]


def mark_rejected(result: ClassificationResult, threshold: float) -> ClassificationResult:
    """``result`` marked ``rejected`` when its top probability (0 with no prediction, e.g. a
    tree mode that abstained at the root) is below ``threshold``."""
    top = result.predictions[0].probability if result.predictions else 0.0
    if top >= threshold:
        return result
    return replace(result, rejected=True)


def _classify(
    loaded: LoadedLabelSet,
    emb: np.ndarray,
    image_names: list[str],
    opts: ClassifyOptions,
    *,
    beam_tolerance: float,
) -> list[ClassificationResult]:
    within, depth = _resolve(loaded, opts)
    tree = loaded.tree
    if opts.mode in FLAT_SET_MODES:
        return _flat(loaded, emb, image_names, opts, within)
    if tree is None:  # pragma: no cover - _resolve refuses tree modes on flat sets
        raise InvalidInputError(f"mode {opts.mode!r} needs a tree")
    if opts.mode == "beam":
        # A given width is kept fixed; the default widens per query (adaptive beam).
        answers = hierarchy.beam_search(
            loaded,
            emb,
            depth=depth,
            beam=opts.beam or DEFAULT_BEAM,
            within=within,
            top=opts.k,
            tolerance=None if opts.beam is not None else beam_tolerance,
        )
        return [
            _tree_result(
                loaded,
                name,
                emb[i],
                a.final.nodes,
                np.exp(a.final.log_probs),
                a.final.scores,
                a.path_nodes,
                a.path_probs,
                opts,
            )
            for i, (name, a) in enumerate(zip(image_names, answers, strict=True))
        ]
    candidates, probs = hierarchy.rank_marginals(
        loaded, emb, depth=depth, within=within, reweight_by_parent=opts.mode == "chils"
    )
    results = []
    k = min(opts.k, len(candidates))
    for q, name in enumerate(image_names):
        top = np.lexsort((candidates, -probs[q]))[:k]
        nodes = candidates[top]
        scores = _node_scores(loaded, emb[q], nodes)
        path_nodes, path_probs = (
            hierarchy.path_marginals(tree, candidates, probs[q], int(nodes[0]), within)
            if k
            else ([], [])
        )
        results.append(
            _tree_result(
                loaded, name, emb[q], nodes, probs[q][top], scores, path_nodes, path_probs, opts
            )
        )
    return results


_LABELS: dict[int, list[str]] = {}


def prediction_labels(loaded: LoadedLabelSet) -> list[str]:
    """Each row's label in predictions: its own name, or in a tree where that name is repeated
    (``red`` under both ``circle`` and ``square``) the shortest path telling it apart
    (``circle/red``). Computed once per loaded version."""
    key = id(loaded)
    labels = _LABELS.get(key)
    if labels is None:
        if loaded.tree is None:
            labels = loaded.names  # a flat set's rows have no path to tell duplicates apart
        else:
            labels = unique_labels(loaded.names, loaded.tree.parents.tolist())
        _LABELS[key] = labels
        weakref.finalize(loaded, _LABELS.pop, key, None)
    return labels


def _node_scores(loaded: LoadedLabelSet, q: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    rows = loaded.matrix[nodes]
    return np.asarray(rows.astype(np.float32) @ q)


def _flat(
    loaded: LoadedLabelSet,
    emb: np.ndarray,
    image_names: list[str],
    opts: ClassifyOptions,
    within: int | None,
) -> list[ClassificationResult]:
    answer = flat_answer(loaded, emb, opts, within)
    labels = prediction_labels(loaded)
    bound = answer.probability_bound
    out = []
    for q, name in enumerate(image_names):
        preds = [
            Prediction(labels[int(i)], float(p), float(s))
            for i, p, s in zip(
                answer.ids[q], answer.probabilities[q], answer.scores[q], strict=True
            )
        ]
        out.append(
            ClassificationResult(
                image=name,
                labelset=loaded.name,
                version=loaded.version,
                predictions=preds,
                exact_probabilities=bool(answer.exact[q]),
                probability_bound=float(bound[q]) if bound is not None and bound[q] > 0 else None,
                probability_error=None if answer.errors is None else float(answer.errors[q]),
            )
        )
    return out


@dataclass(frozen=True)
class FlatAnswer:
    """A flat-mode answer for ``Q`` images as arrays (results are built from it, and batch
    jobs write it to Parquet as it is).

    Attributes:
        ids: int64 ``[Q, k']`` label rows, best first.
        probabilities, scores: ``[Q, k']``.
        exact: bool ``[Q]``: the probabilities are exactly the softmax over every searched label.
        probability_bound: ``[Q]`` relative error bounds (0: exact), or ``None``.
        errors: ``[Q]`` pruned mode's probability errors, or ``None``.
    """

    ids: np.ndarray
    probabilities: np.ndarray
    scores: np.ndarray
    exact: np.ndarray
    probability_bound: np.ndarray | None
    errors: np.ndarray | None


def flat_answer(
    loaded: LoadedLabelSet, emb: np.ndarray, opts: ClassifyOptions, within: int | None
) -> FlatAnswer:
    """The flat modes' (``flat``, ``pruned``) search of unit embeddings ``[Q, dim]``."""
    subset: np.ndarray | None = loaded.leaf_ids
    if within is not None and loaded.tree is not None:
        subset = _subtree_leaves(loaded.tree, within)
    errors: np.ndarray | None = None
    if opts.mode == "pruned":
        res, errors = pruned.search(
            loaded, emb, opts.k, within_leaves=subset if within is not None else None
        )
    else:
        res = loaded.index.search(
            emb,
            opts.k,
            logit_scale=loaded.logit_scale,
            logit_bias=loaded.logit_bias,
            mode=opts.activation,
            subset=subset,
        )
    # pruned: per image, exact only where every group was expanded
    exact = (
        np.full(len(emb), res.exact_probabilities, dtype=bool)
        if errors is None
        else ~np.asarray(errors, dtype=bool)
    )
    return FlatAnswer(
        ids=res.ids,
        probabilities=res.probabilities,
        scores=res.scores,
        exact=exact,
        probability_bound=res.probability_bound,
        errors=errors,
    )


def flat_columns(
    loaded: LoadedLabelSet, emb: np.ndarray, opts: ClassifyOptions
) -> FlatAnswer | None:
    """:func:`flat_answer` for ``opts`` (checked here), or ``None`` for a tree mode."""
    within, _ = _resolve(loaded, opts)
    if opts.mode not in FLAT_SET_MODES:
        return None
    return flat_answer(loaded, emb, opts, within)


def _subtree_leaves(tree: Tree, node: int) -> np.ndarray:
    parts = []
    for d in range(int(tree.depths[node]), tree.max_depth + 1):
        span = tree.descendant_range(node, d)
        if len(span):
            ids = np.arange(span.start, span.stop)
            parts.append(ids[tree.is_leaf[ids]])
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _tree_result(
    loaded: LoadedLabelSet,
    image: str,
    query: np.ndarray,
    nodes: np.ndarray,
    probs: np.ndarray,
    scores: np.ndarray,
    path_nodes: list[int],
    path_probs: list[float],
    opts: ClassifyOptions,
) -> ClassificationResult:
    tree = loaded.tree
    assert tree is not None
    k = min(opts.k, len(nodes))
    labels = prediction_labels(loaded)
    preds = [
        Prediction(labels[int(n)], float(p), float(s))
        for n, p, s in zip(nodes[:k], probs[:k], scores[:k], strict=True)
    ]
    steps = [
        PathStep(tree.rank_name(int(tree.depths[n])), loaded.names[n], float(p))
        for n, p in zip(path_nodes, path_probs, strict=True)
    ]
    if opts.min_confidence is not None:
        kept = [s for s in steps if s.probability >= opts.min_confidence]
        # Probabilities only shrink going down a path: keep its confident prefix.
        steps = steps[: len(kept)]
        if len(steps) < len(path_nodes):
            # Abstain below the confident prefix: answer its deepest node (or nothing).
            deepest = path_nodes[len(steps) - 1] if steps else None
            preds = (
                []
                if deepest is None
                else [
                    Prediction(
                        labels[deepest],
                        steps[-1].probability,
                        float(_node_scores(loaded, query, np.array([deepest]))[0]),
                    )
                ]
            )
    return ClassificationResult(
        image=image, labelset=loaded.name, version=loaded.version, predictions=preds, path=steps
    )
