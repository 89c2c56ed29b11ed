"""Versions adapted from labelled images: ``labels tune`` (few-shot vectors) and ``calibrate``
(a fitted temperature), each written as one new immutable version with its provenance.

A tuned version always starts from the *text* version (the one its provenance names, else the
current version itself), so tuning again never compounds; its temperature is reset to 1 (the
vectors changed). A calibrated version keeps the current version's rows (and any tuning) and
records the temperature fitted on them, starting from the model's own logit scale, so
calibrating again never compounds either. The math is in :mod:`zsindex.catalog.tuning` and
:mod:`zsindex.catalog.calibration`.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from zsindex.catalog.calibration import calibration_report, check_calibration_set
from zsindex.catalog.tuning import blend, example_means, loo_alpha
from zsindex.errors import InvalidInputError
from zsindex.store.records import NewVersion, VersionRecord

if TYPE_CHECKING:
    from zsindex.classify.loaded import LoadedLabelSet
    from zsindex.store.repository import Store


def provenance_of(record: VersionRecord) -> dict[str, Any]:
    """The version's provenance as a dict (empty for a plain registration)."""
    if not record.provenance:
        return {}
    value = json.loads(record.provenance)
    return value if isinstance(value, dict) else {}


def text_base(store: Store, current: VersionRecord) -> VersionRecord:
    """The text version a new tuning starts from: the one ``current`` was tuned from, else
    ``current`` itself."""
    tune = provenance_of(current).get("tune")
    if isinstance(tune, dict) and isinstance(tune.get("source_version"), int):
        return store.version(current.labelset, int(tune["source_version"]))
    return current


def _norm(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold().replace("_", " ").strip()


def resolve_labels(loaded: LoadedLabelSet, labels: Sequence[str]) -> np.ndarray:
    """Each example's row in ``loaded`` (storage order: BFS for trees).

    A label is a label's name (exact, else ignoring case and ``_`` vs space), or for a tree a
    node name or an ``a/b/c`` path. Every unknown label is listed in one error.
    """
    from zsindex.classify.tree import find_node
    from zsindex.errors import NotFoundError

    rows: list[int] = []
    unknown: list[str] = []
    exact: dict[str, list[int]] = {}
    loose: dict[str, list[int]] = {}
    for i, name in enumerate(loaded.names):
        exact.setdefault(name, []).append(i)
        loose.setdefault(_norm(name), []).append(i)
    for label in labels:
        if loaded.tree is not None:
            try:
                rows.append(find_node(loaded.names, loaded.tree, label))
            except NotFoundError:
                found = loose.get(_norm(label), [])
                if len(found) != 1:
                    unknown.append(label)
                else:
                    rows.append(found[0])
            continue
        found = exact.get(label) or loose.get(_norm(label), [])
        if not found:
            unknown.append(label)
        elif len(found) > 1:
            raise InvalidInputError(
                f"label {label!r} names {len(found)} labels of {loaded.name!r} (duplicates): "
                "an example must name exactly one"
            )
        else:
            rows.append(found[0])
    if unknown:
        names = sorted(set(unknown))
        some = ", ".join(loaded.names[:5]) + (", ..." if len(loaded.names) > 5 else "")
        raise InvalidInputError(
            f"{len(names)} example label(s) name no label of {loaded.name!r}: "
            + ", ".join(names[:20])
            + (" ..." if len(names) > 20 else "")
            + f" (name the folders after its labels, e.g. {some})"
        )
    return np.asarray(rows, dtype=np.int64)


def _digest(base: str, extra: dict[str, Any]) -> str:
    payload = base + "\x00" + json.dumps(extra, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def write_tuned(
    store: Store,
    base_loaded: LoadedLabelSet,
    rows: np.ndarray,
    embeddings: np.ndarray,
    digests: Sequence[str],
    alpha: float | str,
) -> VersionRecord:
    """Write the few-shot version of ``base_loaded`` (the text version): examples on
    ``rows`` (``base_loaded``'s storage rows) with unit ``embeddings`` and image ``digests``."""
    base = base_loaded.record
    if len(rows) == 0:
        raise InvalidInputError("no example images: give at least one per label you tune")
    if len(set(rows.tolist())) < 2:
        raise InvalidInputError(
            "the examples name only one label: a few-shot label set needs examples of at least "
            "2 labels (one folder per label)"
        )
    positions = base_loaded.order[rows]  # storage rows → registration positions
    text = store.load_embeddings(base.version_id).astype(np.float32)
    columns = store.load_labels(base.version_id)
    means, counts = example_means(embeddings, positions, len(text))
    choice = None
    mode = "auto" if alpha == "auto" else "given"
    if alpha == "auto":
        candidates = np.sort(base_loaded.order[_candidate_rows(base_loaded)])
        on_candidates = np.isin(positions, candidates)
        if on_candidates.sum() < 2:
            raise InvalidInputError(
                "alpha 'auto' needs at least 2 examples on leaves; give --alpha A instead"
            )
        choice = loo_alpha(
            text,
            embeddings[on_candidates],
            positions[on_candidates],
            candidates,
            base_loaded.logit_scale * base.temperature,  # the model's own scale
        )
        value = choice.alpha
        if not choice.accuracy:  # no label has two examples: leave-one-out had no query
            mode = "auto-default"
    else:
        value = float(alpha)
    matrix = blend(text, means, counts, value)
    labels = [base_loaded.names[int(r)] for r in rows.tolist()]
    per_label: dict[str, list[str]] = {}
    for label, digest in zip(labels, digests, strict=True):
        per_label.setdefault(label, []).append(digest)
    tune: dict[str, Any] = {
        "source_version": base.version,
        "alpha": value,
        "alpha_mode": mode,
        "examples": {k: len(v) for k, v in sorted(per_label.items())},
        "images": {k: sorted(v) for k, v in sorted(per_label.items())},
    }
    if choice is not None and choice.accuracy:
        tune["loo_accuracy"] = {f"{a:g}": acc for a, acc in choice.accuracy.items()}
    return store.create_version(
        NewVersion(
            labelset=base.labelset,
            model=base.model,
            labels=columns,
            embeddings=matrix,
            templates=base.templates,
            digest=_digest(base.digest, tune),
            dtype="float32",
            rank_names=base.rank_names,
            num_truncated=base.num_truncated,
            source=f"tune of version {base.version}",
            index_spec=base.index_spec,
            temperature=1.0,
            provenance=json.dumps({"tune": tune}, sort_keys=True),
        )
    )


def _candidate_rows(loaded: LoadedLabelSet) -> np.ndarray:
    """Storage rows a flat prediction can name: every row, or a tree's leaves."""
    ids = loaded.leaf_ids
    return np.arange(loaded.num_labels) if ids is None else np.asarray(ids)


def calibration_inputs(
    loaded: LoadedLabelSet, rows: np.ndarray, embeddings: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(cosines of each image to every leaf [n, L], each image's leaf column) in flat mode."""
    leaves = _candidate_rows(loaded)
    column = {int(r): j for j, r in enumerate(leaves.tolist())}
    truth = np.array([column.get(int(r), -1) for r in rows.tolist()], dtype=np.int64)
    if (truth < 0).any():
        bad = loaded.names[int(rows[int(np.flatnonzero(truth < 0)[0])])]
        raise InvalidInputError(
            f"calibration labels must be leaves of {loaded.name!r}; {bad!r} has children"
        )
    matrix = loaded.matrix[leaves].astype(np.float32)
    cosines = embeddings.astype(np.float32) @ matrix.T
    return cosines, truth


def write_calibrated(
    store: Store,
    loaded: LoadedLabelSet,
    rows: np.ndarray,
    embeddings: np.ndarray,
    digests: Sequence[str],
    target_precision: float | None = None,
) -> VersionRecord:
    """Fit a temperature on labelled image embeddings against ``loaded`` (the current
    version) and write it as a new version with the same rows."""
    current = loaded.record
    cosines, truth = calibration_inputs(loaded, rows, embeddings)
    check_calibration_set(truth, len(set(truth.tolist())))
    report = calibration_report(
        cosines, truth, float(current.model.logit_scale), target_precision=target_precision
    )
    provenance = provenance_of(current)
    previous = provenance.get("calibration")
    base_digest = (
        str(previous["base_digest"])
        if isinstance(previous, dict) and "base_digest" in previous
        else current.digest
    )
    calibration: dict[str, Any] = {
        **report,
        "source_version": current.version,
        "base_digest": base_digest,
        "images_digest": hashlib.sha256("".join(sorted(digests)).encode()).hexdigest(),
    }
    provenance["calibration"] = calibration
    temperature = float(report["temperature"])  # type: ignore[arg-type]
    return store.create_version(
        NewVersion(
            labelset=current.labelset,
            model=current.model,
            labels=store.load_labels(current.version_id),
            embeddings=store.load_embeddings(current.version_id),
            templates=current.templates,
            digest=_digest(base_digest, {"temperature": temperature}),
            dtype=current.dtype,
            rank_names=current.rank_names,
            num_truncated=current.num_truncated,
            source=f"calibration of version {current.version}",
            index_spec=current.index_spec,
            temperature=temperature,
            provenance=json.dumps(provenance, sort_keys=True),
        )
    )
