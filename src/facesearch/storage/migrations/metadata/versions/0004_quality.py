"""Two more quality measures per stored face: O-Net's face probability (faceness, 0-1) and the
recognisability score (0-100); NULL for faces indexed before they were measured.

Revision ID: 0004_quality
Revises: 0003_rek
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_quality"
down_revision = "0003_rek"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("faces", sa.Column("q_faceness", sa.Float, nullable=True))
    op.add_column("faces", sa.Column("q_recognisability", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("faces") as batch:
        batch.drop_column("q_recognisability")
        batch.drop_column("q_faceness")
