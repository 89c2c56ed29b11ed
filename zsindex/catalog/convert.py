"""Conversions between label specs, store records and public results."""

from __future__ import annotations

import json

import numpy as np

from zsindex.labels.spec import LabelSetSpec
from zsindex.results import LabelSetInfo
from zsindex.store.records import LabelColumns, VersionRecord


def spec_to_columns(spec: LabelSetSpec) -> LabelColumns:
    """A validated spec as store columns (parents -1 for roots, depths from 1)."""
    n = len(spec)
    if spec.parents is None:
        parents = np.full(n, -1, dtype=np.int64)
        depths = np.ones(n, dtype=np.int32)
    else:
        parents = np.fromiter((-1 if p is None else p for p in spec.parents), np.int64, count=n)
        depths = np.asarray(spec.node_depths, dtype=np.int32) + 1
    ranks: list[str | None] = [spec.rank_of(i) for i in range(n)] if spec.is_tree else [None] * n
    prompts: list[tuple[str, ...] | None] = (
        list(spec.prompts) if spec.prompts is not None else [None] * n
    )
    return LabelColumns(
        names=list(spec.names), parents=parents, depths=depths, ranks=ranks, prompts=prompts
    )


def rollback_of(source: str) -> int | None:
    """The version a rollback copied, read from the ``source`` it recorded (other sources, such
    as a user's file path, are never handed out)."""
    from zsindex.store.rollback import ROLLBACK_SOURCE

    found = ROLLBACK_SOURCE.fullmatch(source)
    return int(found.group(1)) if found else None


def version_info(v: VersionRecord) -> LabelSetInfo:
    """The public view of a version record (``unchanged`` where a registration kept it)."""
    from zsindex.catalog.registration import UnchangedVersion

    return LabelSetInfo(
        name=v.labelset,
        version=v.version,
        num_labels=v.num_labels,
        model=v.model.name,
        pretrained=v.model.pretrained,
        templates=list(v.templates),
        digest=v.digest,
        depth=v.depth,
        rank_names=list(v.rank_names),
        dim=v.dim,
        num_truncated=v.num_truncated,
        created_at=v.created_at.isoformat() if v.created_at else "",
        current=v.is_current,
        index=v.index_spec,
        unchanged=isinstance(v, UnchangedVersion),
        rollback_of=rollback_of(v.source),
        model_fingerprint=v.model.weights_sha256,
        temperature=v.temperature,
        provenance=json.loads(v.provenance) if v.provenance else {},
    )
