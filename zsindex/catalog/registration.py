"""Registering label sets: validate → embed (cache first) → write one atomic version.

Nothing touches the store before the whole version is ready: a bad label file fails in
validation, an encoder failure fails before writing, and the write itself is one transaction.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from zsindex.errors import InvalidInputError
from zsindex.labels.spec import LabelSetSpec
from zsindex.labels.validate import validate_labelset_name
from zsindex.store.records import LabelColumns, ModelSpec, NewVersion, VersionRecord
from zsindex.store.repository import Store
from zsindex.store.text_cache import SqlTextEmbeddingCache

if TYPE_CHECKING:
    from zsindex.encoders.info import ModelInfo
    from zsindex.encoders.text import TextRuntime

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class UnchangedVersion(VersionRecord):
    """The current version, handed back by a registration whose content it already holds (so
    callers can say that nothing new was stored)."""

    @classmethod
    def of(cls, record: VersionRecord) -> UnchangedVersion:
        fields = dataclasses.fields(VersionRecord)
        return cls(**{f.name: getattr(record, f.name) for f in fields})


def model_spec(info: ModelInfo) -> ModelSpec:
    """Store-side model identity from an encoder ``ModelInfo``."""
    return ModelSpec(
        name=info.name,
        pretrained=info.pretrained,
        weights_sha256=info.weights_sha256,
        dim=info.dim,
        logit_scale=info.logit_scale,
        logit_bias=info.logit_bias,
        context_length=info.context_length,
    )


def embed_spec(
    store: Store,
    spec: LabelSetSpec,
    templates: tuple[str, ...],
    runtime: TextRuntime,
    *,
    strict: bool = False,
    progress: Progress | None = None,
) -> tuple[np.ndarray, int, ModelSpec]:
    """Text embeddings of every node of ``spec`` (cache first; the model loads only for misses).

    ``runtime`` is an :class:`~zsindex.encoders.Encoder` or a
    :class:`~zsindex.encoders.text_worker.TextWorker`.

    Returns:
        (float32 matrix [N, dim], number of truncated prompts, model identity)
    """
    from zsindex.encoders.text import encode_labels

    texts = [spec.text_of(i) for i in range(len(spec))]
    prompts = list(spec.prompts) if spec.prompts is not None else None
    result = encode_labels(
        runtime,
        texts,
        templates or None,  # none: every label has its own prompts
        prompts=prompts,
        cache=SqlTextEmbeddingCache(store.engine),
        strict=strict,
        progress=progress,
        # The cache keeps vectors, not whether their prompts were cut: where a prompt may be
        # long enough, cached labels are tokenized again so the count and warning are exact.
        check_cached_truncation=may_truncate(texts, templates, prompts, runtime.info),
    )
    return result.embeddings, result.num_truncated, model_spec(runtime.info)


def may_truncate(
    texts: list[str],
    templates: tuple[str, ...],
    prompts: list[tuple[str, ...] | None] | None,
    info: ModelInfo,
) -> bool:
    """Whether any prompt could exceed the model's context (``False`` only when provably not).

    An ASCII prompt never has more tokens than characters (each BPE token covers at least one
    byte; cleaning only drops characters) plus start and end; other text is not bounded as
    simply, so it always counts as possibly long.
    """
    budget = info.context_length - 2
    own = [p for group in prompts or () if group for p in group]
    if own and (not "".join(own).isascii() or max(map(len, own)) > budget):
        return True
    if prompts is not None and all(prompts):
        return False  # every label is embedded from its own prompts
    if not "".join(texts).isascii() or not "".join(templates).isascii():
        return True
    longest_text = max(map(len, texts), default=0)
    return max(map(len, templates), default=0) + longest_text > budget


def register_spec(
    store: Store,
    name: str,
    spec: LabelSetSpec,
    runtime: TextRuntime,
    *,
    templates: tuple[str, ...],
    strict: bool = False,
    progress: Progress | None = None,
    index_spec: str = "",
) -> VersionRecord:
    """Embed and store ``spec`` as a new current version of label set ``name``.

    ``index_spec`` is the canonical index asked for (``""``: the serving setting decides); the
    same content with another index spec is a new version.
    """
    from zsindex.catalog.convert import spec_to_columns

    validate_labelset_name(name)
    digest = spec.with_templates(templates).digest(runtime.info.fingerprint)
    unchanged = _current_if_same(store, name, digest, index_spec)
    if unchanged is not None:
        log.info(
            "label set %s is unchanged (digest %s): keeping version %d",
            name,
            digest[:12],
            unchanged.version,
        )
        return UnchangedVersion.of(unchanged)
    columns = spec_to_columns(spec)
    matrix, truncated, model = embed_spec(
        store, spec, templates, runtime, strict=strict, progress=progress
    )
    return store.create_version(
        NewVersion(
            labelset=name,
            model=model,
            labels=columns,
            embeddings=matrix,
            templates=templates,
            digest=digest,
            # Text embeddings are computed in fp32: keep them (fp16 rounding alone moves
            # probabilities by ~2e-3 relative at logit scale 100).
            dtype="float32",
            rank_names=spec.rank_names,
            num_truncated=truncated,
            source=spec.source,
            index_spec=index_spec,
        )
    )


def _current_if_same(
    store: Store, name: str, digest: str, index_spec: str = ""
) -> VersionRecord | None:
    """The current version when it already holds exactly this content (re-registering the same
    labels, templates and model is a no-op, not a new version)."""
    from zsindex.errors import NotFoundError

    try:
        current = store.current(name)
    except NotFoundError:
        return None
    same = current.digest == digest and current.index_spec == index_spec
    return current if same else None


def normalise_rows(matrix: np.ndarray, source: str, *, offset: int = 0) -> np.ndarray:
    """float32 copy with unit rows; rejects non-finite values and zero rows (messages give the
    1-based row and its index, counted from ``offset``)."""
    # A C-ordered copy: the input may be a read-only memory map of the user's file, and a
    # transposed ([dim, N]) view would sum its norms in another order (other last bits).
    out = np.array(matrix, dtype=np.float32, copy=True, order="C")
    if not np.isfinite(out).all():
        bad = offset + int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise InvalidInputError(
            f"{source}: row {bad + 1} (index {bad}) has non-finite values (NaN or inf)"
        )
    norms = np.linalg.norm(out, axis=1)
    if (norms == 0).any():
        bad = offset + int(np.flatnonzero(norms == 0)[0])
        raise InvalidInputError(f"{source}: row {bad + 1} (index {bad}) is all zeros")
    out /= norms[:, None]
    return out


def tree_mean_fill(matrix: np.ndarray, has_row: np.ndarray, columns: LabelColumns) -> np.ndarray:
    """Give every node without a row the re-normalised mean of its descendants' rows.

    Bottom-up by depth; each level's subtree sums reach their parents through one sorted
    ``np.add.reduceat`` (no Python loop per node, no slow ``np.add.at`` over rows).
    """
    subtree = np.where(has_row[:, None], matrix, 0.0).astype(np.float32)
    parents = columns.parents
    for depth in range(int(columns.depths.max()) if len(columns) else 0, 1, -1):
        level = np.flatnonzero(columns.depths == depth)
        level = level[np.argsort(parents[level], kind="stable")]
        targets = parents[level]
        starts = np.flatnonzero(np.r_[True, targets[1:] != targets[:-1]])
        subtree[targets[starts]] += np.add.reduceat(subtree[level], starts, axis=0)
    out = np.array(matrix, dtype=np.float32, copy=True)
    missing = np.flatnonzero(~has_row)
    if len(missing):
        norms = np.linalg.norm(subtree[missing], axis=1)
        if (norms == 0).any():
            name = columns.names[int(missing[np.flatnonzero(norms == 0)[0]])]
            raise InvalidInputError(
                f"tree node {name!r} has no embedding row and no descendant with one"
            )
        out[missing] = subtree[missing] / norms[:, None]
    return out
