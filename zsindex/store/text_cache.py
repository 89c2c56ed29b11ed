"""SQL-backed text-embedding cache keyed by (model fingerprint, templates digest, label key).

It follows the ``TextEmbeddingCache`` protocol of :mod:`zsindex.encoders`: re-registering labels
that were already embedded with the same model and templates encodes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import numpy as np
from sqlalchemy import Engine

from zsindex.store.bulk import driver_cursor
from zsindex.store.engine import read_transaction, write_transaction
from zsindex.store.models import TextEmbeddingCacheRow

_LOOKUP_BATCH = 2_000
_WRITE_BATCH = 5_000
_WRITE_COLUMNS = (
    "model_fingerprint",
    "templates_digest",
    "label_key",
    "dim",
    "vector",
    "created_at",
)


class SqlTextEmbeddingCache:
    """Text embeddings persisted in the store (fp32, one row per label)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get_many(
        self, model_fingerprint: str, templates_digest: str, keys: Sequence[str]
    ) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        table = TextEmbeddingCacheRow.__tablename__
        # Driver-level queries (SQLAlchemy compiling an IN of 2,000 parameters per batch cost
        # more than the lookups themselves on 100k-label sets).
        with read_transaction(self.engine) as conn, driver_cursor(conn) as (cur, mark):
            for start in range(0, len(unique), _LOOKUP_BATCH):
                batch = unique[start : start + _LOOKUP_BATCH]
                cur.execute(
                    f"SELECT label_key, vector FROM {table} WHERE model_fingerprint = {mark} "
                    f"AND templates_digest = {mark} "
                    f"AND label_key IN ({', '.join([mark] * len(batch))})",
                    (model_fingerprint, templates_digest, *batch),
                )
                for key, blob in cur.fetchall():
                    found[key] = np.frombuffer(bytes(blob), dtype=np.float32)
        return found

    def put_many(
        self, model_fingerprint: str, templates_digest: str, items: Mapping[str, np.ndarray]
    ) -> None:
        if not items:
            return
        now = dt.datetime.now(dt.UTC)
        with write_transaction(self.engine) as conn:
            # Driver-level executemany: SQLAlchemy's per-row statement processing cost ~3x more
            # than the insert itself for 100k-label sets. The timestamp goes through the
            # dialect's own DateTime conversion, so rows read back exactly as ORM-written ones.
            stamp_type = TextEmbeddingCacheRow.__table__.c.created_at.type
            convert = stamp_type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
            stamp = convert(now) if convert is not None else now
            rows = [
                (
                    model_fingerprint,
                    templates_digest,
                    key,
                    int(vec.shape[-1]),
                    np.ascontiguousarray(vec, dtype=np.float32).tobytes(),
                    stamp,
                )
                for key, vec in sorted(items.items())  # key order: B-tree appends, not splits
            ]
            with driver_cursor(conn) as (cur, mark):
                sql = (
                    f"INSERT INTO {TextEmbeddingCacheRow.__tablename__} "
                    f"({', '.join(_WRITE_COLUMNS)}) "
                    f"VALUES ({', '.join([mark] * len(_WRITE_COLUMNS))}) ON CONFLICT DO NOTHING"
                )
                for start in range(0, len(rows), _WRITE_BATCH):
                    cur.executemany(sql, rows[start : start + _WRITE_BATCH])
