"""``zsindex eval``: zero-shot accuracy on an ImageFolder tree (one sub-folder per class)."""

from __future__ import annotations

import unicodedata
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.errors import InvalidInputError

if TYPE_CHECKING:
    from zsindex.local import LocalBackend

BATCH = 64


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


def evaluate_folder(backend: LocalBackend, directory: Path, labelset: str) -> dict[str, Any]:
    """Top-1, top-5 and mean per-class recall over the classes present in ``directory``."""
    folders = sorted(
        p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not folders:
        raise InvalidInputError(f"{directory}: no class sub-folders (ImageFolder layout expected)")
    loaded = backend.resolve(labelset)
    mapping = match_folders(folders, loaded.leaf_names())
    items: list[tuple[str, Path, str]] = []
    for folder in folders:
        for path in sorted(p for p in (directory / folder).rglob("*") if p.is_file()):
            if not path.name.startswith("."):
                items.append((str(path), path, mapping[folder]))
    if not items:
        raise InvalidInputError(f"{directory}: the class folders hold no files")
    top1 = np.zeros(len(items), dtype=bool)
    top5 = np.zeros(len(items), dtype=bool)
    confusions: Counter[tuple[str, str]] = Counter()
    errors = 0
    for start in range(0, len(items), BATCH):
        batch = items[start : start + BATCH]
        results = backend.classify_files(
            [(name, path) for name, path, _ in batch], labelset=labelset, k=5, mode="flat"
        )
        for offset, ((_, _, truth), result) in enumerate(zip(batch, results, strict=True)):
            if result.error is not None:
                errors += 1
                continue
            labels = [p.label for p in result.predictions]
            top1[start + offset] = labels[0] == truth
            top5[start + offset] = truth in labels[:5]
            if labels[0] != truth:
                confusions[(truth, labels[0])] += 1
    truths = np.array([t for _, _, t in items])
    recalls = [float(top1[truths == c].mean()) for c in sorted(set(truths.tolist()))]
    return {
        "n": len(items),
        "top1": float(top1.mean()),
        "top5": float(top5.mean()),
        "mean_per_class_recall": float(np.mean(recalls)),
        "errors": errors,
        "labelset": labelset,
        "version": loaded.version,
        "confusions": [
            {"true": t, "predicted": p, "count": c} for (t, p), c in confusions.most_common(10)
        ],
    }
