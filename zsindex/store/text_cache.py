"""SQL-backed text-embedding cache keyed by (model fingerprint, templates digest, label key).

It follows the ``TextEmbeddingCache`` protocol of :mod:`zsindex.encoders`: re-registering labels
that were already embedded with the same model and templates encodes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from zsindex.store.engine import read_transaction, write_transaction
from zsindex.store.models import TextEmbeddingCacheRow

_LOOKUP_BATCH = 2_000
_WRITE_BATCH = 5_000


class SqlTextEmbeddingCache:
    """Text embeddings persisted in the store (fp32, one row per label)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get_many(
        self, model_fingerprint: str, templates_digest: str, keys: Sequence[str]
    ) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        t = TextEmbeddingCacheRow
        with read_transaction(self.engine) as conn:
            for start in range(0, len(unique), _LOOKUP_BATCH):
                batch = unique[start : start + _LOOKUP_BATCH]
                rows = conn.execute(
                    select(t.label_key, t.vector).where(
                        t.model_fingerprint == model_fingerprint,
                        t.templates_digest == templates_digest,
                        t.label_key.in_(batch),
                    )
                )
                for key, blob in rows:
                    found[key] = np.frombuffer(bytes(blob), dtype=np.float32)
        return found

    def put_many(
        self, model_fingerprint: str, templates_digest: str, items: Mapping[str, np.ndarray]
    ) -> None:
        if not items:
            return
        now = dt.datetime.now(dt.UTC)
        rows = [
            {
                "model_fingerprint": model_fingerprint,
                "templates_digest": templates_digest,
                "label_key": key,
                "dim": int(vec.shape[-1]),
                "vector": np.ascontiguousarray(vec, dtype=np.float32).tobytes(),
                "created_at": now,
            }
            for key, vec in items.items()
        ]
        with write_transaction(self.engine) as conn:
            make_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            for start in range(0, len(rows), _WRITE_BATCH):
                stmt = make_insert(TextEmbeddingCacheRow).on_conflict_do_nothing()
                conn.execute(stmt, rows[start : start + _WRITE_BATCH])
