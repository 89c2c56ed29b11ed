"""Reading a version's embedding chunks into one preallocated matrix, fast.

Each chunk is copied once, from the driver's buffer straight into its rows of the output (no
SQLAlchemy row processing, no intermediate list). On PostgreSQL the chunks are read in the
binary protocol (the text protocol doubles the bytes as hex) over up to
:data:`READ_CONNECTIONS` connections at once, chunk ``i`` on connection ``i mod k``: one server
backend reassembles a chunk's TOAST slices at ~150-250 MB/s on this 2-core machine, so a single
connection is server-bound. The readers are threads; they wait in libpq with the GIL released.

The chunks must tile the rows exactly (a version deleted meanwhile, or a damaged store, leaves a
gap): anything else raises instead of returning a partly uninitialised matrix.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from sqlalchemy import Engine

from zsindex.errors import NotFoundError, StoreError
from zsindex.store.bulk import driver_cursor
from zsindex.store.engine import read_transaction

READ_CONNECTIONS = 4
"""Connections one PostgreSQL matrix read uses at most (2 and 4 measured alike on 2 cores)."""

_SQL = (
    "SELECT start_row, num_rows, data FROM embedding_chunks WHERE version_id = {m}{part} "
    "ORDER BY chunk_index"
)


def _copy_rows(out: np.ndarray, rows: Iterable[Any]) -> list[tuple[int, int]]:
    """Copy each ``(start_row, num_rows, data)`` into ``out``; the (start, count) seen."""
    n, dim = out.shape
    row_bytes = dim * out.itemsize
    spans: list[tuple[int, int]] = []
    for start, count, data in rows:
        start, count = int(start), int(count)
        if start < 0 or count < 0 or start + count > n or len(data) != count * row_bytes:
            raise StoreError(
                f"embedding chunk at row {start} ({count} rows, {len(data)} bytes) does not fit "
                f"a [{n}, {dim}] {out.dtype} matrix: the store is damaged"
            )
        out[start : start + count] = np.frombuffer(data, dtype=out.dtype).reshape(count, dim)
        spans.append((start, count))
    return spans


def _check_tiling(spans: list[tuple[int, int]], n: int, version_id: int) -> None:
    at = 0
    for start, count in sorted(spans):
        if start != at:
            break
        at += count
    if at != n or sum(count for _, count in spans) != n:
        raise NotFoundError(
            f"label-set version id {version_id}: its embedding chunks do not cover its {n} rows "
            "(deleted while loading?)"
        )


def _read_part(engine: Engine, version_id: int, out: np.ndarray, part: int, parts: int) -> Any:
    with read_transaction(engine) as conn, driver_cursor(conn) as (cur, mark):
        dbapi = conn.dialect.loaded_dbapi
        mod = "%%" if mark == "%s" else "%"  # psycopg takes a bare % for a placeholder
        where = f" AND chunk_index {mod} {mark} = {mark}" if parts > 1 else ""
        params = (version_id, parts, part) if parts > 1 else (version_id,)
        sql = _SQL.format(m=mark, part=where)
        try:
            if conn.dialect.name == "postgresql":
                rows = cur.stream(sql, params, binary=True)
                try:
                    return _copy_rows(out, rows)
                finally:  # an abandoned stream would block the rollback: cancel it now
                    rows.close()
            cur.execute(sql, params)
            return _copy_rows(out, cur)
        except (dbapi.OperationalError, dbapi.InterfaceError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreError(f"database unavailable: {first}") from exc


def read_matrix(engine: Engine, version_id: int, out: np.ndarray, num_chunks: int) -> np.ndarray:
    """Fill ``out`` (``[num_labels, dim]``, C-contiguous, the stored dtype) with the version's
    embedding chunks and return it."""
    parts = 1
    if engine.dialect.name == "postgresql":
        parts = max(1, min(READ_CONNECTIONS, num_chunks))
    if parts == 1:
        spans = _read_part(engine, version_id, out, 0, 1)
    else:
        with ThreadPoolExecutor(parts, thread_name_prefix="zsindex-chunks") as pool:
            futures = [
                pool.submit(_read_part, engine, version_id, out, i, parts) for i in range(parts)
            ]
            spans = [span for f in futures for span in f.result()]
    _check_tiling(spans, len(out), version_id)
    return out
