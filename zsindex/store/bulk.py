"""Fast bulk paths for label rows: a million labels must go in and out in seconds.

SQLAlchemy's generic executemany costs tens of microseconds per row; the driver-level paths here
(SQLite ``executemany`` on tuples, PostgreSQL ``COPY``) run in the same transaction at a
fraction of that.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import Connection

from zsindex.store.records import LabelColumns

_COLUMNS = ("version_id", "position", "name", "prompts", "parent_position", "depth", "rank")


def _rows(version_id: int, labels: LabelColumns) -> Iterator[tuple[Any, ...]]:
    parents = labels.parents.tolist()
    depths = labels.depths.tolist()
    for i, name in enumerate(labels.names):
        prompts = labels.prompts[i]
        parent = parents[i]
        yield (
            version_id,
            i,
            name,
            json.dumps(list(prompts)) if prompts is not None else None,
            parent if parent >= 0 else None,
            depths[i],
            labels.ranks[i],
        )


@contextmanager
def driver_cursor(conn: Connection) -> Iterator[tuple[Any, str]]:
    """The DB-API cursor under ``conn`` (inside its transaction) and the driver's parameter
    mark (``%s`` for psycopg, ``?`` for sqlite3)."""
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]  # a DBAPI connection is always open here
    try:
        yield cur, "%s" if conn.dialect.name == "postgresql" else "?"
    finally:
        cur.close()


def insert_labels(conn: Connection, version_id: int, labels: LabelColumns) -> None:
    """Insert every label of a version inside the caller's transaction."""
    dbapi: Any = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        copy_sql = f"COPY labels ({', '.join(_COLUMNS)}) FROM STDIN"
        with dbapi.cursor() as cur, cur.copy(copy_sql) as copy:
            for row in _rows(version_id, labels):
                copy.write_row(row)
        return
    with driver_cursor(conn) as (cur, mark):
        cur.executemany(
            f"INSERT INTO labels ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join([mark] * len(_COLUMNS))})",
            _rows(version_id, labels),
        )


def load_labels(conn: Connection, version_id: int) -> LabelColumns:
    """Load a version's labels in position order as columns.

    A flat set without prompts or ranks (every depth 1: the common million-label case) reads
    only its names, one column in the binary protocol: about half the time of all columns.
    """
    with driver_cursor(conn) as (cur, mark):
        cur.execute(
            "SELECT count(*), count(parent_position), count(prompts), count(rank), "
            f"min(depth), max(depth) FROM labels WHERE version_id = {mark}",
            (version_id,),
        )
        total, parents, prompts, ranks, low, high = cur.fetchone()
        if total and parents == prompts == ranks == 0 and low == high == 1:
            cur.execute(
                f"SELECT name FROM labels WHERE version_id = {mark} ORDER BY position",
                (version_id,),
                **({"binary": True} if mark == "%s" else {}),
            )
            names = [r[0] for r in cur.fetchall()]
            if len(names) == total:  # else the rows changed between the two statements
                return LabelColumns.flat(names)
        cur.execute(
            "SELECT name, prompts, parent_position, depth, rank FROM labels "
            f"WHERE version_id = {mark} ORDER BY position",
            (version_id,),
        )
        rows = cur.fetchall()
    n = len(rows)
    names = [r[0] for r in rows]
    prompts = [tuple(json.loads(r[1])) if r[1] is not None else None for r in rows]
    parents = np.fromiter((-1 if r[2] is None else r[2] for r in rows), dtype=np.int64, count=n)
    depths = np.fromiter((r[3] for r in rows), dtype=np.int32, count=n)
    ranks = [r[4] for r in rows]
    return LabelColumns(names=names, parents=parents, depths=depths, ranks=ranks, prompts=prompts)
