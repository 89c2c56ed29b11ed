"""The invariant checker behind ``zsindex db check`` (TESTPLAN.md)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import func, select, text

from zsindex.store import migrate
from zsindex.store.engine import read_transaction
from zsindex.store.models import EmbeddingChunkRow, LabelRow, LabelSetRow, LabelSetVersionRow
from zsindex.store.repository import Store

NORM_TOLERANCE = 1e-3


@dataclass
class CheckReport:
    """Problems (invariant failures) and notes (harmless findings)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    labelsets_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def check_store(store: Store, *, strict: bool = False) -> CheckReport:
    """Check every store invariant; with ``strict`` also every embedding's norm and checksum."""
    report = CheckReport()
    engine = store.engine
    current = migrate.current_revision(engine)
    head = migrate.head_revision()
    if current != head:
        report.problems.append(f"schema at {current or 'no revision'}, head is {head}")
        return report
    drift = migrate.drift(engine)
    if drift:
        report.problems.append(f"schema differs from the models: {drift[:3]}")
    with read_transaction(engine) as conn:
        if conn.dialect.name == "sqlite":
            integrity = conn.execute(text("PRAGMA integrity_check")).scalars().all()
            if integrity != ["ok"]:
                report.problems.append(f"sqlite integrity_check: {integrity[:5]}")
            fk = conn.execute(text("PRAGMA foreign_key_check")).all()
            if fk:
                report.problems.append(f"sqlite foreign_key_check: {fk[:5]}")
        labelsets = conn.execute(
            select(LabelSetRow.name, LabelSetRow.current_version_id).order_by(LabelSetRow.name)
        ).all()
        for name, version_id in labelsets:
            report.labelsets_checked += 1
            if version_id is None:
                report.problems.append(f"label set {name!r} has no current version")
                continue
            v = conn.execute(
                select(
                    LabelSetVersionRow.status,
                    LabelSetVersionRow.num_labels,
                    LabelSetVersionRow.dim,
                    LabelSetVersionRow.temperature,
                ).where(LabelSetVersionRow.id == version_id)
            ).one()
            status, num_labels, dim, temperature = v
            if status != "ready":
                report.problems.append(f"label set {name!r}: current version is {status!r}")
            if not (np.isfinite(temperature) and temperature > 0):
                # softmax(logit_scale / T · cosine) needs a positive finite T (calibrate).
                report.problems.append(
                    f"label set {name!r}: temperature {temperature!r} is not a positive number"
                )
            n_labels = conn.execute(
                select(func.count()).where(LabelRow.version_id == version_id)
            ).scalar_one()
            n_rows = conn.execute(
                select(func.coalesce(func.sum(EmbeddingChunkRow.num_rows), 0)).where(
                    EmbeddingChunkRow.version_id == version_id
                )
            ).scalar_one()
            if not (n_labels == n_rows == num_labels):
                report.problems.append(
                    f"label set {name!r}: {num_labels} labels declared, {n_labels} label rows, "
                    f"{n_rows} embedding rows"
                )
            if strict:
                report.problems.extend(_check_embeddings(store, name, version_id, dim))
        pending = conn.execute(
            select(func.count()).where(LabelSetVersionRow.status != "ready")
        ).scalar_one()
        if pending:
            report.notes.append(
                f"{pending} unfinished version(s) (building/failed): never visible, "
                "removed by `zsindex db check --repair`"
            )
    return report


def _check_embeddings(store: Store, name: str, version_id: int, dim: int) -> list[str]:
    problems: list[str] = []
    with read_transaction(store.engine) as conn:
        rows = conn.execute(
            select(EmbeddingChunkRow.chunk_index, EmbeddingChunkRow.sha256, EmbeddingChunkRow.data)
            .where(EmbeddingChunkRow.version_id == version_id)
            .order_by(EmbeddingChunkRow.chunk_index)
        )
        for index, sha, data in rows:
            if hashlib.sha256(bytes(data)).hexdigest() != sha:
                problems.append(f"label set {name!r}: embedding chunk {index} checksum mismatch")
    matrix = store.load_embeddings(version_id).astype(np.float32)
    if matrix.shape[1] != dim:
        problems.append(f"label set {name!r}: embeddings have dim {matrix.shape[1]}, not {dim}")
    if not np.isfinite(matrix).all():
        problems.append(f"label set {name!r}: non-finite embedding values")
    elif len(matrix):
        norms = np.linalg.norm(matrix, axis=1)
        bad = int((np.abs(norms - 1.0) > NORM_TOLERANCE).sum())
        if bad:
            problems.append(f"label set {name!r}: {bad} embeddings with norm outside 1 ± 1e-3")
    return problems


def repair(store: Store) -> int:
    """Delete versions that never became ready and are not current; return how many."""
    from sqlalchemy import delete

    from zsindex.store.engine import write_transaction

    with write_transaction(store.engine) as conn:
        current_ids = select(LabelSetRow.current_version_id).where(
            LabelSetRow.current_version_id.is_not(None)
        )
        result = conn.execute(
            delete(LabelSetVersionRow).where(
                LabelSetVersionRow.status != "ready", LabelSetVersionRow.id.not_in(current_ids)
            )
        )
        return int(result.rowcount or 0)
