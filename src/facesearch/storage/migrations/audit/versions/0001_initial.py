"""The audit trail as it was before migrations (issue 14): events, checkpoints, the outbox
rows already applied, and the triggers that refuse UPDATE and DELETE (and, on PostgreSQL,
TRUNCATE) on all three.

On an empty database it creates them; on an ``audit.db`` made by an earlier version of
facesearch (no version table yet) it creates what is missing and adds the checkpoint columns
added since (the Merkle tree root and frontier). The tables are a frozen copy of
``facesearch.governance.audit`` at this revision.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import BigInteger, Column, Float, Index, Integer, MetaData, String, Table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

metadata = MetaData()

RowId = BigInteger().with_variant(Integer(), "sqlite")

events_t = Table(
    "events", metadata,
    Column("seq", RowId, primary_key=True, autoincrement=False),
    Column("ts", Float, nullable=False),
    Column("operation", String, nullable=False),
    Column("actor", String, nullable=False),
    Column("role", String),
    Column("collection", String),
    Column("purpose", String),
    Column("case_ref", String),
    Column("client", String),
    Column("probe_sha256", String),
    Column("threshold", Float),
    Column("model_version", String),
    Column("results", String, nullable=False),
    Column("details", String, nullable=False),
    Column("prev_hash", String, nullable=False, unique=True),
    Column("hash", String, nullable=False, unique=True),
)
Index("events_by_actor", events_t.c.actor, events_t.c.seq)
Index("events_by_case", events_t.c.case_ref, events_t.c.seq)
Index("events_by_collection", events_t.c.collection, events_t.c.seq)
Index("events_by_operation", events_t.c.operation, events_t.c.seq)
Index("events_by_ts", events_t.c.ts)

checkpoints_t = Table(
    "checkpoints", metadata,
    Column("seq", RowId, primary_key=True, autoincrement=False),
    Column("head_hash", String, nullable=False),
    Column("ts", Float, nullable=False),
    Column("signature", String, nullable=False),
    Column("key_fingerprint", String, nullable=False),
    Column("tree_root", String),
    Column("tree_frontier", String),
)

outbox_applied_t = Table(
    "outbox_applied", metadata,
    Column("outbox_id", String, primary_key=True),
    Column("seq", RowId, nullable=False),
)

LEGACY_COLUMNS = {"checkpoints": ("tree_root", "tree_frontier")}
"""Columns added to tables of earlier versions (then by ALTER TABLE on open)."""

APPEND_ONLY = ("events", "checkpoints", "outbox_applied")
MESSAGE = "the audit trail is append-only"


def _sqlite_triggers() -> None:
    for table in APPEND_ONLY:
        for verb in ("update", "delete"):
            op.execute(f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb} BEFORE {verb.upper()} "
                       f"ON {table} BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END")


def _postgres_triggers() -> None:
    # SQLSTATE 23000 (integrity constraint violation), as SQLite's RAISE(ABORT) reads
    op.execute("CREATE FUNCTION facesearch_audit_append_only() RETURNS trigger "
               "LANGUAGE plpgsql AS $$ BEGIN "
               f"RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = '23000'; END $$")
    for table in APPEND_ONLY:
        op.execute(f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON "
                   f"{table} FOR EACH ROW EXECUTE FUNCTION facesearch_audit_append_only()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION facesearch_audit_append_only()")


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind, checkfirst=True)
    inspector = sa.inspect(bind)
    for table_name, added in LEGACY_COLUMNS.items():
        have = {c["name"] for c in inspector.get_columns(table_name)}
        for name in added:
            if name not in have:
                op.add_column(table_name, Column(name, String))
    for table in metadata.sorted_tables:
        for index in table.indexes:
            index.create(bind, checkfirst=True)
    if bind.dialect.name == "postgresql":
        _postgres_triggers()
    else:
        _sqlite_triggers()


def downgrade() -> None:
    bind = op.get_bind()
    metadata.drop_all(bind)
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION facesearch_audit_append_only()")
