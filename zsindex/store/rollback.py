"""Rollback: publish an old version's content as a new current version, in one transaction.

Versions never go backwards: rolling ``shapes`` back to version 3 when version 5 is current
writes version 6 whose rows are version 3's (labels and embedding chunks copied in SQL with
``INSERT … SELECT``, never through Python), with ``source`` ``rollback of version 3``. History
then records the rollback, every replica's "never serve a lower number" rule still holds, and
the change reaches other processes like any new version (``notify_change`` at commit, polling).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Integer,
    String,
    Table,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from zsindex.errors import ConflictError, NotFoundError
from zsindex.store.engine import write_transaction
from zsindex.store.models import EmbeddingChunkRow, LabelRow, LabelSetRow, LabelSetVersionRow
from zsindex.store.notify import notify_change


def _table(model: type[Any]) -> Table:
    table: Table = model.__table__
    return table


ROLLBACK_SOURCE = re.compile(r"rollback of version ([1-9][0-9]*)")
"""The ``source`` a rollback's version records (:func:`rollback_source`)."""


def rollback_source(number: int) -> str:
    """The ``source`` a rollback's version records."""
    return f"rollback of version {number}"


def publish_copy(conn: Connection, name: str, number: int) -> int:
    """Copy version ``number`` of ``name`` into a new version and make it current, inside the
    caller's write transaction; the new version's number.

    Raises:
        NotFoundError: no such label set, or it has no ready version ``number``.
    """
    query = select(LabelSetRow.id).where(LabelSetRow.name == name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()  # one writer per label set at a time, as create_version
    labelset_id = conn.execute(query).scalar()
    if labelset_id is None:
        raise NotFoundError(f"label set {name!r} does not exist (see `zsindex labels list`)")
    versions = _table(LabelSetVersionRow)
    old_id = conn.execute(
        select(versions.c.id).where(
            versions.c.labelset_id == labelset_id,
            versions.c.version == number,
            versions.c.status == "ready",
        )
    ).scalar()
    if old_id is None:
        raise NotFoundError(
            f"label set {name!r} has no version {number} (see `zsindex labels history {name}`)"
        )
    new_number = (
        conn.execute(
            select(func.max(versions.c.version)).where(versions.c.labelset_id == labelset_id)
        ).scalar()
        or 0
    ) + 1
    overrides: dict[str, Any] = {
        "version": literal(new_number, Integer),
        "status": literal("ready", String),
        "source": literal(rollback_source(number), String),
        "created_at": literal(dt.datetime.now(dt.UTC), DateTime(timezone=True)),
    }
    columns = [c.name for c in versions.columns if c.name != "id"]
    conn.execute(
        insert(versions).from_select(
            columns,
            select(*[overrides.get(c, versions.c[c]) for c in columns]).where(
                versions.c.id == old_id
            ),
        )
    )
    new_id = conn.execute(
        select(versions.c.id).where(
            versions.c.labelset_id == labelset_id, versions.c.version == new_number
        )
    ).scalar_one()
    for table in (_table(LabelRow), _table(EmbeddingChunkRow)):
        names = [c.name for c in table.columns]
        copied: list[Any] = [
            literal(new_id, Integer) if c == "version_id" else table.c[c] for c in names
        ]
        rows = select(*copied).where(table.c.version_id == old_id)
        conn.execute(insert(table).from_select(names, rows))
    conn.execute(
        update(LabelSetRow)
        .where(LabelSetRow.id == labelset_id)
        .values(current_version_id=new_id, updated_at=dt.datetime.now(dt.UTC))
    )
    notify_change(conn, name)  # delivered at commit, as for any new version
    return new_number


def rollback(engine: Engine, name: str, number: int) -> int:
    """:func:`publish_copy` in a transaction of its own (retried when a concurrent writer took
    the same number); the new version's number."""
    for attempt in range(3):
        try:
            with write_transaction(engine) as conn:
                return publish_copy(conn, name, number)
        except IntegrityError as exc:
            if attempt == 2:
                raise ConflictError(
                    f"label set {name!r} was changed concurrently; try again"
                ) from exc
    raise AssertionError("unreachable")
