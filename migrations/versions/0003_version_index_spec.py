"""index spec per label-set version

Each version records the search index it asked for at registration (``labels add --index``):
an empty string means the serving process's ``ZSINDEX_INDEX`` setting decides (exact search by
default). Existing versions get the empty string.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("labelset_versions") as batch:
        batch.add_column(
            sa.Column("index_spec", sa.String(length=200), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("labelset_versions") as batch:
        batch.drop_column("index_spec")
