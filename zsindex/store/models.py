"""SQLAlchemy 2.0 table models. Internal to ``zsindex.store``: no ORM object leaves the package.

Schema changes happen only through Alembic migrations (``migrations/versions``); a test checks
that these models and the migrations never drift apart.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, so migrations can drop and alter them on every backend
# (SQLite batch mode needs names to find constraints again).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

VERSION_STATUSES = ("building", "ready", "failed")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ModelRow(Base):
    """One encoder model: the embeddings of a label-set version belong to exactly one."""

    __tablename__ = "models"
    __table_args__ = (
        UniqueConstraint("name", "pretrained", "weights_sha256", name="uq_models_identity"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Empty string, not NULL, when there is no tag: NULLs never collide in a unique constraint.
    pretrained: Mapped[str] = mapped_column(String(1000), default="")
    weights_sha256: Mapped[str] = mapped_column(String(64), default="")
    dim: Mapped[int] = mapped_column(Integer)
    logit_scale: Mapped[float] = mapped_column(Float)
    logit_bias: Mapped[float | None] = mapped_column(Float, nullable=True)
    context_length: Mapped[int] = mapped_column(Integer, default=77)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


class LabelSetRow(Base):
    """A named label set; ``current_version_id`` points at the version readers see."""

    __tablename__ = "labelsets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    current_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("labelset_versions.id", use_alter=True, ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


class LabelSetVersionRow(Base):
    """An immutable version of a label set: its labels, templates, embeddings and model."""

    __tablename__ = "labelset_versions"
    __table_args__ = (
        UniqueConstraint("labelset_id", "version", name="uq_labelset_versions_number"),
        CheckConstraint("status IN ('building', 'ready', 'failed')", name="status"),
        CheckConstraint("dtype IN ('float16', 'float32')", name="dtype"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    labelset_id: Mapped[int] = mapped_column(
        ForeignKey("labelsets.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="building")
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    digest: Mapped[str] = mapped_column(String(64))
    templates: Mapped[str] = mapped_column(Text)  # JSON list
    num_labels: Mapped[int] = mapped_column(Integer)
    depth: Mapped[int] = mapped_column(Integer, default=1)
    rank_names: Mapped[str] = mapped_column(Text, default="[]")  # JSON list, index = depth - 1
    dim: Mapped[int] = mapped_column(Integer)
    dtype: Mapped[str] = mapped_column(String(8), default="float16")
    num_truncated: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    # The index asked for at registration ("": the serving process's ZSINDEX_INDEX decides).
    index_spec: Mapped[str] = mapped_column(String(200), default="", server_default="")
    # Divides the model's logit scale (``zsindex calibrate``); 1.0: the model's own.
    temperature: Mapped[float] = mapped_column(Float, default=1.0, server_default="1.0")
    # How the version was made (JSON; ``labels tune``, ``calibrate``), or "" for a plain one.
    provenance: Mapped[str] = mapped_column(Text, default="", server_default="")


class LabelRow(Base):
    """One label (or tree node) of a version, identified by its position."""

    __tablename__ = "labels"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("labelset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    prompts: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list or NULL
    parent_position: Mapped[int | None] = mapped_column(Integer, nullable=True)
    depth: Mapped[int] = mapped_column(Integer, default=1)
    rank: Mapped[str | None] = mapped_column(String(100), nullable=True)
    meta: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON object or NULL


class EmbeddingChunkRow(Base):
    """A contiguous block of embedding rows; loading a few large blobs is far faster than
    one blob per label (≈10 µs per row in SQLite)."""

    __tablename__ = "embedding_chunks"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("labelset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    chunk_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    start_row: Mapped[int] = mapped_column(Integer)
    num_rows: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class TextEmbeddingChunkRow(Base):
    """fp32 text embeddings of up to ``CHUNK_ROWS`` labels under (model fingerprint, templates
    digest), as two blobs (see :mod:`zsindex.store.text_cache`).

    ``keys`` holds ``num_rows`` 16-byte BLAKE2b digests of the label keys, sorted ascending as
    bytes; ``vectors`` holds ``num_rows`` × ``dim`` little-endian float32, row ``i`` belonging to
    key ``i``. A key may sit in more than one chunk (always with the same vector).
    """

    __tablename__ = "text_embedding_chunks"
    # Named by the convention: ix_text_embedding_chunks_model_fingerprint.
    __table_args__ = (Index(None, "model_fingerprint", "templates_digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_fingerprint: Mapped[str] = mapped_column(String(64))
    templates_digest: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    num_rows: Mapped[int] = mapped_column(Integer)
    keys: Mapped[bytes] = mapped_column(LargeBinary)
    vectors: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


Index("ix_labels_parent", LabelRow.version_id, LabelRow.parent_position)
