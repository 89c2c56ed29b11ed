"""temperature and provenance per label-set version

``labels tune`` and ``calibrate`` write versions whose vectors or probabilities were adapted:
``temperature`` divides the model's logit scale at classification (1.0: as the model says),
``provenance`` records how the version was made (JSON: the text version a tuned version
started from, alpha, example counts and image digests; a calibration's fit). Existing versions
get 1.0 and ``""``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("labelset_versions") as batch:
        batch.add_column(sa.Column("temperature", sa.Float(), nullable=False, server_default="1.0"))
        batch.add_column(sa.Column("provenance", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("labelset_versions") as batch:
        batch.drop_column("provenance")
        batch.drop_column("temperature")
