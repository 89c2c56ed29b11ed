"""``zsindex eval``: zero-shot accuracy on an ImageFolder tree (one sub-folder per class).

It sits above the client and classifies through it, so it measures exactly the pipeline that
every entry point serves (and works against a remote ``Client`` too).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.errors import InvalidInputError
from zsindex.options import MAX_K, ClassifyOptions, check_fits
from zsindex.results import Prediction

if TYPE_CHECKING:
    from zsindex.classify.tree import Tree
    from zsindex.client import Client
    from zsindex.results import LabelTree

BATCH = 256
"""Files per classify call (the pipeline overlaps decoding with the forwards inside a call)."""


def _norm(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold().replace("_", " ").strip()


def match_folders(
    folders: list[str], labels: list[str], what: str = "label of the label set"
) -> dict[str, str]:
    """Map each class folder to a label name: exact, else ignoring case and ``_`` vs space.

    Raises:
        InvalidInputError: some folders match no label (all of them are listed, and a few of
            the names they could be).
    """
    exact = set(labels)
    by_norm: dict[str, str] = {}
    for label in labels:
        by_norm.setdefault(_norm(label), label)
    mapping: dict[str, str] = {}
    unmatched: list[str] = []
    for folder in folders:
        if folder in exact:
            mapping[folder] = folder
        elif _norm(folder) in by_norm:
            mapping[folder] = by_norm[_norm(folder)]
        else:
            unmatched.append(folder)
    if unmatched:
        some = ", ".join(labels[:5]) + (", ..." if len(labels) > 5 else "")
        raise InvalidInputError(
            f"{len(unmatched)} class folder(s) match no {what}: "
            + ", ".join(sorted(unmatched)[:20])
            + (" ..." if len(unmatched) > 20 else "")
            + (f" (rename them to valid names, e.g. {some})" if some else " (there is none)")
        )
    return mapping


def _bfs(tree: LabelTree) -> tuple[np.ndarray, Tree]:
    """The tree in the BFS rows classification uses: (original row of each BFS row, tree)."""
    from zsindex.classify.tree import Tree, bfs_order

    parents = np.asarray(tree.parents, dtype=np.int64)
    order = bfs_order(parents)
    row_of = np.empty(len(order), dtype=np.int64)
    row_of[order] = np.arange(len(order))
    moved = parents[order]
    bfs_parents = np.where(moved >= 0, row_of[np.maximum(moved, 0)], -1)
    return order, Tree.from_bfs_parents(bfs_parents, tuple(tree.rank_names))


def answer_rows(tree: LabelTree, options: ClassifyOptions) -> tuple[list[int], str]:
    """The rows a prediction under ``options`` can name, with how to call them in messages:
    the leaves (flat mode, or a tree mode without a rank), or the nodes at the rank (and the
    leaves above it, which are their own answer there), inside ``within`` when given. Rank
    and ``within`` follow the rules and messages of classification itself."""
    from zsindex.classify.engine import resolve_target
    from zsindex.classify.hierarchy import rank_candidates

    order, bfs = _bfs(tree)
    within, depth = resolve_target(bfs, [tree.names[i] for i in order], options)
    ids = rank_candidates(bfs, depth or bfs.max_depth, within)
    under = f" under {options.within!r}" if options.within is not None else ""
    if options.mode == "flat" or options.rank is None:
        what = f"leaf{under} of the label set"
    else:
        what = f"node at rank {bfs.rank_name(depth)}{under} of the label set"
    return sorted(int(order[i]) for i in ids), what


def _folder_labels(
    folders: list[str], client: Client, labelset: str, options: ClassifyOptions
) -> tuple[dict[str, str], int]:
    """Each class folder's label as predictions spell it. A node whose name is repeated is
    predicted as its path (``circle/red``), which a folder name cannot be: such a folder is an
    error naming the nodes it could mean. Also: how many rows a prediction can name."""
    from zsindex.classify.tree import unique_labels

    tree = client.tree(labelset)
    check_fits(options, labelset, is_tree=tree.is_tree)
    labels = unique_labels(tree.names, tree.parents)
    if tree.is_tree:
        rows, what = answer_rows(tree, options)
    else:
        rows, what = tree.leaves(), "label of the label set"
    by_name: dict[str, list[str]] = {}
    for i in rows:
        by_name.setdefault(tree.names[i], []).append(labels[i])
    mapping = match_folders(folders, list(by_name), what)
    for folder, name in sorted(mapping.items()):
        if len(by_name[name]) > 1:
            raise InvalidInputError(
                f"class folder {folder!r} matches {len(by_name[name])} "
                f"{'leaves' if what.startswith('leaf') else 'nodes'} "
                f"({', '.join(by_name[name][:5])}): a folder can name only one; rename the "
                "nodes or evaluate on a label set where the name is unique"
            )
    return {folder: by_name[name][0] for folder, name in mapping.items()}, len(rows)


def evaluate_folder(
    client: Client,
    directory: Path,
    labelset: str,
    options: ClassifyOptions | None = None,
) -> dict[str, Any]:
    """Top-1, top-5 and mean per-class recall over the classes present in ``directory``.

    By default the class folders are named after leaves and images are classified flat. With
    ``options`` in a tree mode (``beam``, ``marginal``, ``chils``) and a ``rank``, the folders
    are named after the nodes at that rank, and an image is correct when the node predicted at
    that rank is its folder's; ``within`` restricts both to a subtree. ``k`` is always 5.

    Files that cannot be classified (unreadable, not an image) are not counted in ``n``: they
    are counted in ``errors`` and the first few are listed in ``error_samples``.

    Calibration: ``ece`` (15 equal-width bins of the top probability), ``nll`` and ``brier``
    over every answer's probability (exact up to 10,000 answers and in flat and marginal
    modes; beyond, and for answers a beam dropped, the remaining mass is spread evenly), and
    ``coverage``: accuracy against the share kept for ``reject_below`` thresholds. The key
    ``_samples`` holds the per-image values ``eval --plot`` draws (the CLI drops it).
    """
    options = replace(options or ClassifyOptions(), k=5).check()
    folders = sorted(
        p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not folders:
        raise InvalidInputError(f"{directory}: no class sub-folders (ImageFolder layout expected)")
    mapping, num_answers = _folder_labels(folders, client, labelset, options)
    # Every answer's probability (up to MAX_K) for NLL and Brier; top-1/top-5 read the first.
    options = replace(options, k=max(5, min(num_answers, MAX_K))).check()
    probs = ProbabilityStats(num_answers)
    items: list[tuple[Path, str]] = []
    for folder in folders:
        for path in sorted(p for p in (directory / folder).rglob("*") if p.is_file()):
            if not path.name.startswith("."):
                items.append((path, mapping[folder]))
    if not items:
        raise InvalidInputError(f"{directory}: the class folders hold no files")
    hits1: list[bool] = []
    hits5: list[bool] = []
    truths: list[str] = []
    confusions: Counter[tuple[str, str]] = Counter()
    errors: list[str] = []
    version = None
    for start in range(0, len(items), BATCH):
        batch = items[start : start + BATCH]
        results = client.classify(
            [path for path, _ in batch], labelset=labelset, options=options, on_error="report"
        )
        for (_, truth), result in zip(batch, results, strict=True):
            version = result.version
            if result.error is not None:
                errors.append(result.error)
                continue
            labels = [p.label for p in result.predictions]
            probs.add(truth, result.predictions)
            truths.append(truth)
            hits1.append(bool(labels) and labels[0] == truth)
            hits5.append(truth in labels[:5])
            if labels and labels[0] != truth:
                confusions[(truth, labels[0])] += 1
    if not truths:
        raise InvalidInputError(
            f"{directory}: none of the {len(items)} files could be classified "
            f"(first error: {errors[0]})"
        )
    top1 = np.array(hits1)
    truth_arr = np.array(truths)
    recalls = [float(top1[truth_arr == c].mean()) for c in sorted(set(truths))]
    return {
        "n": len(truths),
        "top1": float(top1.mean()),
        "top5": float(np.mean(hits5)),
        "mean_per_class_recall": float(np.mean(recalls)),
        "errors": len(errors),
        "error_samples": errors[:10],
        "labelset": labelset,
        "version": version,
        "mode": options.mode,
        "rank": options.rank,
        "within": options.within,
        "confusions": [
            {"true": t, "predicted": p, "count": c} for (t, p), c in confusions.most_common(10)
        ],
        **probs.report(),
        "classes": sorted(set(truths)),
        "_samples": probs.samples(),
    }


class ProbabilityStats:
    """Per image: the top probability, whether it was right, the true answer's probability
    and Σ p² — what ECE, NLL, Brier and the coverage curve need."""

    def __init__(self, num_answers: int) -> None:
        self.num_answers = num_answers
        self.confidence: list[float] = []
        self.correct: list[bool] = []
        self.p_true: list[float] = []
        self.sum_sq: list[float] = []
        self.truth: list[str] = []
        self.predicted: list[str] = []

    def add(self, truth: str, predictions: list[Prediction]) -> None:
        probs = np.array([p.probability for p in predictions], dtype=np.float64)
        labels = [p.label for p in predictions]
        rest = max(0.0, 1.0 - float(probs.sum()))
        unseen = max(self.num_answers - len(predictions), 0)
        spread = rest / unseen if unseen else 0.0
        self.confidence.append(float(probs[0]) if len(probs) else 0.0)
        self.correct.append(bool(labels) and labels[0] == truth)
        self.p_true.append(float(probs[labels.index(truth)]) if truth in labels else spread)
        self.sum_sq.append(float(np.sum(probs**2)) + unseen * spread**2)
        self.truth.append(truth)
        self.predicted.append(labels[0] if labels else "")

    def report(self) -> dict[str, Any]:
        from zsindex.catalog.calibration import ece, selective_curve

        conf = np.array(self.confidence)
        hit = np.array(self.correct)
        p_true = np.maximum(np.array(self.p_true), 1e-12)
        return {
            "ece": ece(conf, hit),
            "nll": float(-np.mean(np.log(p_true))),
            # Halved: [0, 1] like every eval key (see catalog.calibration.brier).
            "brier": float(np.mean(np.array(self.sum_sq) - 2 * np.array(self.p_true) + 1.0) / 2),
            "coverage": selective_curve(conf, hit),
        }

    def samples(self) -> dict[str, list[Any]]:
        return {
            "confidence": self.confidence,
            "correct": self.correct,
            "truth": self.truth,
            "predicted": self.predicted,
        }
