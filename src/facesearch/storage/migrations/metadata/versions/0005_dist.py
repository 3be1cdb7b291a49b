"""Vector change log and shared vector-backend positions (incremental sync between nodes).

Revision ID: 0005_dist
Revises: 0004_quality
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_dist"
down_revision = "0004_quality"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "vector_changes",
        sa.Column("id", RowId, primary_key=True),
        sa.Column("collection_id", RowId, sa.ForeignKey("collections.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("face_row", sa.BigInteger),
        sa.Column("created_at", sa.Float, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_vector_changes_collection_generation", "vector_changes",
                    ["collection_id", "generation"])
    op.create_table(
        "vector_sync",
        sa.Column("backend", sa.String, primary_key=True),
        sa.Column("collection_id", RowId, sa.ForeignKey("collections.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("top_row", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("vector_sync")
    op.drop_index("ix_vector_changes_collection_generation", "vector_changes")
    op.drop_table("vector_changes")
