"""The answers of requests that run once (a repeated SigV4 signature or ClientRequestToken
gets the first answer), shared by the API nodes of one database and kept across restarts.

Revision ID: 0003_rek
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_rek"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_answers",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("body", sa.LargeBinary, nullable=True),
    )
    op.create_index("ix_request_answers_expires_at", "request_answers", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_request_answers_expires_at", "request_answers")
    op.drop_table("request_answers")
