"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "labelsets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("current_version_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labelsets")),
        sa.UniqueConstraint("name", name=op.f("uq_labelsets_name")),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("pretrained", sa.String(length=1000), nullable=False),
        sa.Column("weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("logit_scale", sa.Float(), nullable=False),
        sa.Column("logit_bias", sa.Float(), nullable=True),
        sa.Column("context_length", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("name", "pretrained", "weights_sha256", name="uq_models_identity"),
    )
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
    op.create_table(
        "labelset_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("labelset_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("templates", sa.Text(), nullable=False),
        sa.Column("num_labels", sa.Integer(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("rank_names", sa.Text(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("dtype", sa.String(length=8), nullable=False),
        sa.Column("num_truncated", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "dtype IN ('float16', 'float32')", name=op.f("ck_labelset_versions_dtype")
        ),
        sa.CheckConstraint(
            "status IN ('building', 'ready', 'failed')", name=op.f("ck_labelset_versions_status")
        ),
        sa.ForeignKeyConstraint(
            ["labelset_id"],
            ["labelsets.id"],
            name=op.f("fk_labelset_versions_labelset_id_labelsets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_labelset_versions_model_id_models")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labelset_versions")),
        sa.UniqueConstraint("labelset_id", "version", name="uq_labelset_versions_number"),
    )
    with op.batch_alter_table("labelset_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_labelset_versions_labelset_id"), ["labelset_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_labelset_versions_model_id"), ["model_id"], unique=False
        )
    # labelsets and labelset_versions reference each other: add the current-version pointer
    # once both tables exist (batch mode recreates the table on SQLite).
    with op.batch_alter_table("labelsets", schema=None) as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_labelsets_current_version_id_labelset_versions"),
            "labelset_versions",
            ["current_version_id"],
            ["id"],
            ondelete="SET NULL",
        )

    op.create_table(
        "embedding_chunks",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("start_row", sa.Integer(), nullable=False),
        sa.Column("num_rows", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["labelset_versions.id"],
            name=op.f("fk_embedding_chunks_version_id_labelset_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "chunk_index", name=op.f("pk_embedding_chunks")),
    )
    op.create_table(
        "labels",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("prompts", sa.Text(), nullable=True),
        sa.Column("parent_position", sa.Integer(), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("rank", sa.String(length=100), nullable=True),
        sa.Column("meta", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["labelset_versions.id"],
            name=op.f("fk_labels_version_id_labelset_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "position", name=op.f("pk_labels")),
    )
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.create_index("ix_labels_parent", ["version_id", "parent_position"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.drop_index("ix_labels_parent")

    op.drop_table("labels")
    op.drop_table("embedding_chunks")
    with op.batch_alter_table("labelset_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_labelset_versions_model_id"))
        batch_op.drop_index(batch_op.f("ix_labelset_versions_labelset_id"))

    with op.batch_alter_table("labelsets", schema=None) as batch_op:
        batch_op.drop_constraint(
            op.f("fk_labelsets_current_version_id_labelset_versions"), type_="foreignkey"
        )
    op.drop_table("labelset_versions")
    op.drop_table("text_embedding_cache")
    op.drop_table("models")
    op.drop_table("labelsets")
