"""chunked text-embedding cache

The per-label ``text_embedding_cache`` table becomes ``text_embedding_chunks``: up to CHUNK
entries per row, as a blob of sorted 16-byte BLAKE2b key digests and a blob of float32 vectors
(see ``zsindex.store.text_cache``). Existing entries are carried over both ways.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

"""

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the code's constants: a migration must not change when the code does.
CHUNK = 16_384
KEY_BYTES = 16
_ROW_BATCH = 5_000

_old = sa.table(
    "text_embedding_cache",
    sa.column("model_fingerprint", sa.String(length=64)),
    sa.column("templates_digest", sa.String(length=64)),
    sa.column("label_key", sa.String(length=64)),
    sa.column("dim", sa.Integer()),
    sa.column("vector", sa.LargeBinary()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_new = sa.table(
    "text_embedding_chunks",
    sa.column("id", sa.Integer()),
    sa.column("model_fingerprint", sa.String(length=64)),
    sa.column("templates_digest", sa.String(length=64)),
    sa.column("dim", sa.Integer()),
    sa.column("num_rows", sa.Integer()),
    sa.column("keys", sa.LargeBinary()),
    sa.column("vectors", sa.LargeBinary()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def _create_old_table() -> None:
    """``text_embedding_cache`` exactly as 0001 created it."""
    op.create_table(
        "text_embedding_cache",
        sa.Column("model_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("templates_digest", sa.String(length=64), nullable=False),
        sa.Column("label_key", sa.String(length=64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "model_fingerprint",
            "templates_digest",
            "label_key",
            name=op.f("pk_text_embedding_cache"),
        ),
    )


def _key_digest(key: str) -> bytes:
    """The chunk digest of an old-table key. A downgrade writes each entry back under the hex of
    its 16-byte digest (32 hex characters; real label keys are 64-character SHA-256 hex), so
    those keys are read back as the digest itself: downgrade then upgrade keeps every entry."""
    if len(key) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(key)
        except ValueError:
            pass
    return hashlib.blake2b(key.encode("utf-8"), digest_size=KEY_BYTES).digest()


def _copy_rows_into_chunks(conn: sa.Connection) -> None:
    groups = conn.execute(
        sa.select(_old.c.model_fingerprint, _old.c.templates_digest)
        .distinct()
        .order_by(_old.c.model_fingerprint, _old.c.templates_digest)
    ).all()
    now = dt.datetime.now(dt.UTC)
    for fingerprint, digest in groups:
        rows = conn.execute(
            sa.select(_old.c.label_key, _old.c.dim, _old.c.vector).where(
                _old.c.model_fingerprint == fingerprint, _old.c.templates_digest == digest
            )
        ).all()
        by_dim: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, dim, vector in rows:
            vector = bytes(vector)
            if dim <= 0 or len(vector) != dim * 4:
                continue  # not a float32 [dim] vector: the cache drops it (a future miss)
            hashed = _key_digest(key)
            by_dim.setdefault(dim, []).append((hashed, vector))
        for dim, entries in sorted(by_dim.items()):
            entries.sort()  # by hashed key, as bytes
            for start in range(0, len(entries), CHUNK):
                part = entries[start : start + CHUNK]
                conn.execute(
                    _new.insert().values(
                        model_fingerprint=fingerprint,
                        templates_digest=digest,
                        dim=dim,
                        num_rows=len(part),
                        keys=b"".join(h for h, _ in part),
                        vectors=b"".join(v for _, v in part),
                        created_at=now,
                    )
                )


def _explode_chunks_into_rows(conn: sa.Connection) -> None:
    # The old table keys entries by label-key text, which the 16-byte hash cannot give back:
    # each entry comes back under the hex of its hashed key instead. The old code's lookups miss
    # them (a miss re-encodes the label); upgrading again restores them (see _key_digest).
    seen: set[tuple[str, str, str]] = set()  # a key may sit in several chunks: keep one row
    batch: list[dict[str, Any]] = []
    ids = conn.execute(sa.select(_new.c.id).order_by(_new.c.id)).scalars().all()
    for chunk_id in ids:  # one chunk's blobs in memory at a time
        fingerprint, digest, dim, num_rows, keys, vectors, created_at = conn.execute(
            sa.select(
                _new.c.model_fingerprint,
                _new.c.templates_digest,
                _new.c.dim,
                _new.c.num_rows,
                _new.c["keys"],
                _new.c.vectors,
                _new.c.created_at,
            ).where(_new.c.id == chunk_id)
        ).one()
        keys, vectors = bytes(keys), bytes(vectors)
        width = dim * 4
        if len(keys) != num_rows * KEY_BYTES or len(vectors) != num_rows * width:
            continue  # damaged chunk: nothing to recover
        for i in range(num_rows):
            label_key = keys[i * KEY_BYTES : (i + 1) * KEY_BYTES].hex()
            if (fingerprint, digest, label_key) in seen:
                continue
            seen.add((fingerprint, digest, label_key))
            batch.append(
                {
                    "model_fingerprint": fingerprint,
                    "templates_digest": digest,
                    "label_key": label_key,
                    "dim": dim,
                    "vector": vectors[i * width : (i + 1) * width],
                    "created_at": created_at,
                }
            )
            if len(batch) >= _ROW_BATCH:
                conn.execute(_old.insert(), batch)
                batch = []
    if batch:
        conn.execute(_old.insert(), batch)


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "text_embedding_chunks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("templates_digest", sa.String(length=64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("num_rows", sa.Integer(), nullable=False),
        sa.Column("keys", sa.LargeBinary(), nullable=False),
        sa.Column("vectors", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_text_embedding_chunks")),
    )
    with op.batch_alter_table("text_embedding_chunks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_text_embedding_chunks_model_fingerprint"),
            ["model_fingerprint", "templates_digest"],
            unique=False,
        )
    _copy_rows_into_chunks(op.get_bind())
    op.drop_table("text_embedding_cache")


def downgrade() -> None:
    """Downgrade schema."""
    _create_old_table()
    _explode_chunks_into_rows(op.get_bind())
    with op.batch_alter_table("text_embedding_chunks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_text_embedding_chunks_model_fingerprint"))
    op.drop_table("text_embedding_chunks")
