"""The SigV4 signatures accepted in the clock-skew window, shared by the API nodes of one
database (replays refused across nodes).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_signatures",
        sa.Column("signature", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_request_signatures_expires_at", "request_signatures", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_request_signatures_expires_at", "request_signatures")
    op.drop_table("request_signatures")
