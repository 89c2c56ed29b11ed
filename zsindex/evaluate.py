"""``zsindex eval``: zero-shot accuracy on an ImageFolder tree (one sub-folder per class).

It sits above the client and classifies through it, so it measures exactly the pipeline that
every entry point serves (and works against a remote ``Client`` too).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.errors import InvalidInputError

if TYPE_CHECKING:
    from zsindex.client import Client

BATCH = 256
"""Files per classify call (the pipeline overlaps decoding with the forwards inside a call)."""


def _norm(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold().replace("_", " ").strip()


def match_folders(folders: list[str], labels: list[str]) -> dict[str, str]:
    """Map each class folder to a label name: exact, else ignoring case and ``_`` vs space.

    Raises:
        InvalidInputError: some folders match no label (all of them are listed).
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
        raise InvalidInputError(
            f"{len(unmatched)} class folder(s) match no label of the label set: "
            + ", ".join(sorted(unmatched)[:20])
            + (" ..." if len(unmatched) > 20 else "")
            + " (rename the folders to label names)"
        )
    return mapping


def _folder_labels(folders: list[str], client: Client, labelset: str) -> dict[str, str]:
    """Each class folder's label as predictions spell it. A leaf whose name is repeated is
    predicted as its path (``circle/red``), which a folder name cannot be: such a folder is an
    error naming the leaves it could mean."""
    from zsindex.classify.tree import unique_labels

    tree = client.tree(labelset)
    labels = unique_labels(tree.names, tree.parents)
    by_name: dict[str, list[str]] = {}
    for i in tree.leaves():
        by_name.setdefault(tree.names[i], []).append(labels[i])
    mapping = match_folders(folders, list(by_name))
    for folder, name in sorted(mapping.items()):
        if len(by_name[name]) > 1:
            raise InvalidInputError(
                f"class folder {folder!r} matches {len(by_name[name])} leaves "
                f"({', '.join(by_name[name][:5])}): a folder can name only one; rename the "
                "leaves or evaluate on a label set where the name is unique"
            )
    return {folder: by_name[name][0] for folder, name in mapping.items()}


def evaluate_folder(client: Client, directory: Path, labelset: str) -> dict[str, Any]:
    """Top-1, top-5 and mean per-class recall over the classes present in ``directory``.

    Files that cannot be classified (unreadable, not an image) are not counted in ``n``: they
    are counted in ``errors`` and the first few are listed in ``error_samples``.
    """
    folders = sorted(
        p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not folders:
        raise InvalidInputError(f"{directory}: no class sub-folders (ImageFolder layout expected)")
    mapping = _folder_labels(folders, client, labelset)
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
            [path for path, _ in batch], labelset=labelset, k=5, on_error="report"
        )
        for (_, truth), result in zip(batch, results, strict=True):
            version = result.version
            if result.error is not None:
                errors.append(result.error)
                continue
            labels = [p.label for p in result.predictions]
            truths.append(truth)
            hits1.append(labels[0] == truth)
            hits5.append(truth in labels[:5])
            if labels[0] != truth:
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
        "confusions": [
            {"true": t, "predicted": p, "count": c} for (t, p), c in confusions.most_common(10)
        ],
    }
