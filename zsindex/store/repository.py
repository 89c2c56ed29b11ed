"""The store: label sets, immutable versions, labels, embeddings and models in SQL.

SQL is the source of truth. A version is written whole in one transaction (rows, embedding
chunks, ``ready`` status and the current pointer flip), so a reader or a crash never exposes
half a version: a killed writer's transaction simply rolls back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from zsindex.errors import ConflictError, NotFoundError
from zsindex.store import bulk, chunk_reads, migrate
from zsindex.store.engine import make_engine, read_transaction, write_transaction
from zsindex.store.models import (
    EmbeddingChunkRow,
    LabelSetRow,
    LabelSetVersionRow,
    ModelRow,
)
from zsindex.store.notify import notify_change
from zsindex.store.records import (
    LabelColumns,
    ModelRecord,
    ModelSpec,
    NewVersion,
    VersionRecord,
)
from zsindex.store.rows import MODEL_COLUMNS, MODEL_PREFIX, iso_utc, model_record, version_record

# Rows per embedding chunk: 16 MiB per chunk at 512 fp16 dims, few enough blobs to load fast.
CHUNK_ROWS = 16_384
MAX_VERSION = 2**31 - 1
"""Version numbers are 32-bit SQL integers: a larger one names no version (never queried)."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Store:
    """Typed access to one zsindex database.

    Args:
        url: SQLAlchemy URL.
        create_if_empty: create the schema when the database has no zsindex tables yet (the
            embedded default); an existing out-of-date schema always raises
            :class:`~zsindex.errors.SchemaOutOfDateError`.
        check_schema: verify the schema revision on open (``zsindex db`` commands skip it).
    """

    def __init__(self, url: str, *, create_if_empty: bool = True, check_schema: bool = True):
        self.url = url
        self.engine: Engine = make_engine(url)
        if check_schema:
            migrate.ensure_current(self.engine, create_if_empty=create_if_empty)

    def close(self) -> None:
        self.engine.dispose()

    # -- models -----------------------------------------------------------------------------

    def upsert_model(self, spec: ModelSpec) -> ModelRecord:
        """Return the model row for ``spec``, creating it on first use."""
        with write_transaction(self.engine) as conn:
            return self._upsert_model(conn, spec)

    def _upsert_model(self, conn: Connection, spec: ModelSpec) -> ModelRecord:
        key = (spec.name, spec.pretrained or "", spec.weights_sha256)
        query = select(ModelRow).where(
            ModelRow.name == key[0],
            ModelRow.pretrained == key[1],
            ModelRow.weights_sha256 == key[2],
        )
        row = conn.execute(query).first()
        if row is None:
            conn.execute(
                insert(ModelRow).values(
                    name=key[0],
                    pretrained=key[1],
                    weights_sha256=key[2],
                    dim=spec.dim,
                    logit_scale=spec.logit_scale,
                    logit_bias=spec.logit_bias,
                    context_length=spec.context_length,
                    created_at=_utcnow(),
                )
            )
            row = conn.execute(query).one()
        return model_record(row._mapping)

    # -- writing versions -------------------------------------------------------------------

    def create_version(self, new: NewVersion) -> VersionRecord:
        """Write a complete new version of ``new.labelset`` and make it current, atomically.

        Raises:
            ConflictError: a concurrent writer took the same version number; retry.
        """
        n = len(new.labels)
        if new.embeddings.shape != (n, new.model.dim):
            raise ValueError(f"embeddings shape {new.embeddings.shape} != ({n}, {new.model.dim})")
        matrix = np.ascontiguousarray(new.embeddings, dtype=np.dtype(new.dtype))
        depth = int(new.labels.depths.max()) if n else 0
        for attempt in range(3):
            try:
                with write_transaction(self.engine) as conn:
                    model = self._upsert_model(conn, new.model)
                    labelset_id = self._lock_or_create_labelset(conn, new.labelset)
                    number = (
                        conn.execute(
                            select(func.max(LabelSetVersionRow.version)).where(
                                LabelSetVersionRow.labelset_id == labelset_id
                            )
                        ).scalar()
                        or 0
                    ) + 1
                    version_id = conn.execute(
                        insert(LabelSetVersionRow)
                        .values(
                            labelset_id=labelset_id,
                            version=number,
                            status="building",
                            model_id=model.id,
                            digest=new.digest,
                            templates=json.dumps(list(new.templates)),
                            num_labels=n,
                            depth=depth,
                            rank_names=json.dumps(list(new.rank_names)),
                            dim=new.model.dim,
                            dtype=new.dtype,
                            num_truncated=new.num_truncated,
                            source=new.source[:200],
                            created_at=_utcnow(),
                            index_spec=new.index_spec,
                            temperature=new.temperature,
                            provenance=new.provenance,
                        )
                        .returning(LabelSetVersionRow.id)
                    ).scalar_one()
                    bulk.insert_labels(conn, version_id, new.labels)
                    self._insert_chunks(conn, version_id, matrix)
                    conn.execute(
                        update(LabelSetVersionRow)
                        .where(LabelSetVersionRow.id == version_id)
                        .values(status="ready")
                    )
                    conn.execute(
                        update(LabelSetRow)
                        .where(LabelSetRow.id == labelset_id)
                        .values(current_version_id=version_id, updated_at=_utcnow())
                    )
                    notify_change(conn, new.labelset)  # delivered at commit
                return self.version(new.labelset, number)
            except IntegrityError as exc:
                if attempt == 2:
                    raise ConflictError(
                        f"label set {new.labelset!r} was changed concurrently; try again"
                    ) from exc
        raise AssertionError("unreachable")

    def _lock_or_create_labelset(self, conn: Connection, name: str) -> int:
        query = select(LabelSetRow.id).where(LabelSetRow.name == name)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        labelset_id = conn.execute(query).scalar()
        if labelset_id is None:
            labelset_id = conn.execute(
                insert(LabelSetRow)
                .values(name=name, created_at=_utcnow(), updated_at=_utcnow())
                .returning(LabelSetRow.id)
            ).scalar_one()
        return int(labelset_id)

    def _insert_chunks(self, conn: Connection, version_id: int, matrix: np.ndarray) -> None:
        rows: list[dict[str, Any]] = []
        for index, start in enumerate(range(0, max(len(matrix), 1), CHUNK_ROWS)):
            block = matrix[start : start + CHUNK_ROWS]
            data = block.tobytes()
            rows.append(
                {
                    "version_id": version_id,
                    "chunk_index": index,
                    "start_row": start,
                    "num_rows": len(block),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "data": data,
                }
            )
            if len(rows) >= 8:  # bound the memory held in parameter lists
                conn.execute(insert(EmbeddingChunkRow), rows)
                rows = []
        if rows:
            conn.execute(insert(EmbeddingChunkRow), rows)

    def delete_labelset(self, name: str) -> None:
        """Delete a label set with all its versions.

        Raises:
            NotFoundError: no label set has that name.
        """
        with write_transaction(self.engine) as conn:
            labelset_id = conn.execute(
                select(LabelSetRow.id).where(LabelSetRow.name == name)
            ).scalar()
            if labelset_id is None:
                raise NotFoundError(
                    f"label set {name!r} does not exist (see `zsindex labels list`)"
                )
            # Break the pointer first: the cascade then never meets a dangling reference.
            conn.execute(
                update(LabelSetRow)
                .where(LabelSetRow.id == labelset_id)
                .values(current_version_id=None)
            )
            conn.execute(delete(LabelSetRow).where(LabelSetRow.id == labelset_id))
            notify_change(conn, name)

    # -- reading ----------------------------------------------------------------------------

    def _version_query(self) -> Any:
        return (
            select(
                LabelSetRow.name.label("labelset"),
                LabelSetRow.current_version_id,
                LabelSetVersionRow,
                *(getattr(ModelRow, c).label(MODEL_PREFIX + c) for c in MODEL_COLUMNS),
            )
            .join(LabelSetRow, LabelSetRow.id == LabelSetVersionRow.labelset_id)
            .join(ModelRow, ModelRow.id == LabelSetVersionRow.model_id)
        )

    def current(self, name: str) -> VersionRecord:
        """The current version of label set ``name``.

        Raises:
            NotFoundError: no such label set (or it has no ready version).
        """
        with read_transaction(self.engine) as conn:
            row = conn.execute(
                self._version_query().where(
                    LabelSetRow.name == name,
                    LabelSetVersionRow.id == LabelSetRow.current_version_id,
                )
            ).first()
        if row is None:
            raise NotFoundError(f"label set {name!r} does not exist (see `zsindex labels list`)")
        return version_record(row._mapping)

    def version(self, name: str, number: int) -> VersionRecord:
        """Version ``number`` of label set ``name`` (current or not).

        Raises:
            NotFoundError: no such label set, or it has no such version.
        """
        row = None
        with read_transaction(self.engine) as conn:
            if 1 <= number <= MAX_VERSION:  # a larger number overflows the SQL integer
                row = conn.execute(
                    self._version_query().where(
                        LabelSetRow.name == name, LabelSetVersionRow.version == number
                    )
                ).first()
            exists = (
                row is not None
                or conn.execute(select(LabelSetRow.id).where(LabelSetRow.name == name)).first()
            )
        if not exists:
            raise NotFoundError(f"label set {name!r} does not exist (see `zsindex labels list`)")
        if row is None:
            raise NotFoundError(
                f"label set {name!r} has no version {number} (see `zsindex labels history {name}`)"
            )
        return version_record(row._mapping)

    def rollback(self, name: str, number: int) -> VersionRecord:
        """Publish version ``number``'s content as a new current version (see
        :mod:`zsindex.store.rollback`), atomically; the new version.

        Raises:
            NotFoundError: no such label set or version.
            ConflictError: concurrent writers kept taking the new number; retry.
        """
        from zsindex.store.rollback import rollback

        if not 1 <= number <= MAX_VERSION:
            return self.version(name, number)  # raises: no such version
        return self.version(name, rollback(self.engine, name, number))

    def version_keys(self, names: Collection[str]) -> dict[tuple[str, int], tuple[int, str]]:
        """Every version of the label sets ``names``, by (name, number), with the key
        :meth:`current_version_keys` uses: a pinned version is still the one loaded only while
        its key is unchanged (a deleted and re-created set reuses numbers)."""
        if not names:
            return {}
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(
                    LabelSetRow.name,
                    LabelSetVersionRow.version,
                    LabelSetVersionRow.id,
                    LabelSetVersionRow.created_at,
                )
                .join(LabelSetRow, LabelSetRow.id == LabelSetVersionRow.labelset_id)
                .where(LabelSetRow.name.in_(sorted(names)))
            ).all()
        return {(n, int(v)): (int(vid), iso_utc(c)) for n, v, vid, c in rows}

    def list_current(self) -> list[VersionRecord]:
        """Every label set's current version, by name."""
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                self._version_query()
                .where(LabelSetVersionRow.id == LabelSetRow.current_version_id)
                .order_by(LabelSetRow.name)
            ).all()
        return [version_record(r._mapping) for r in rows]

    def current_version_ids(self) -> dict[str, int]:
        """Cheap poll of which version each label set currently serves (for hot swap)."""
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(LabelSetRow.name, LabelSetRow.current_version_id).where(
                    LabelSetRow.current_version_id.is_not(None)
                )
            ).all()
        return {name: int(vid) for name, vid in rows if vid is not None}

    def current_version_keys(self) -> dict[str, tuple[int, str]]:
        """Which version each label set serves, as (version id, creation time): ids alone are
        not enough, since SQLite reuses the id of a deleted row."""
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                select(LabelSetRow.name, LabelSetVersionRow.id, LabelSetVersionRow.created_at).join(
                    LabelSetVersionRow, LabelSetVersionRow.id == LabelSetRow.current_version_id
                )
            ).all()
        return {name: (int(vid), iso_utc(created)) for name, vid, created in rows}

    def history(self, name: str) -> list[VersionRecord]:
        """All versions of ``name``, oldest first."""
        with read_transaction(self.engine) as conn:
            rows = conn.execute(
                self._version_query()
                .where(LabelSetRow.name == name)
                .order_by(LabelSetVersionRow.version)
            ).all()
        if not rows:
            raise NotFoundError(f"label set {name!r} does not exist (see `zsindex labels list`)")
        return [version_record(r._mapping) for r in rows]

    def load_labels(self, version_id: int) -> LabelColumns:
        with read_transaction(self.engine) as conn:
            return bulk.load_labels(conn, version_id)

    def load_embeddings(self, version_id: int) -> np.ndarray:
        """The version's embedding matrix in its stored dtype, ``[num_labels, dim]``.

        Each chunk is copied once into the result; on PostgreSQL the chunks come in the binary
        protocol over several connections (see :mod:`zsindex.store.chunk_reads`).
        """
        with read_transaction(self.engine) as conn:
            meta = conn.execute(
                select(
                    LabelSetVersionRow.num_labels,
                    LabelSetVersionRow.dim,
                    LabelSetVersionRow.dtype,
                ).where(LabelSetVersionRow.id == version_id)
            ).first()
        if meta is None:
            raise NotFoundError(f"label-set version id {version_id} does not exist")
        n, dim, dtype = (int(meta[0]), int(meta[1]), str(meta[2]))
        out = np.empty((n, dim), dtype=np.dtype(dtype))
        return chunk_reads.read_matrix(self.engine, version_id, out, -(-n // CHUNK_ROWS))


def chunk_digests(matrix: np.ndarray) -> Sequence[str]:
    """SHA-256 of each chunk as :meth:`Store.create_version` stores it (for checks)."""
    return [
        hashlib.sha256(matrix[s : s + CHUNK_ROWS].tobytes()).hexdigest()
        for s in range(0, max(len(matrix), 1), CHUNK_ROWS)
    ]
