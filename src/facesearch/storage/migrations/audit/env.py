"""Alembic environment of the audit trail (``audit.db`` or its PostgreSQL URL)."""

from facesearch.governance.audit import metadata
from facesearch.storage.migrate import Schema, run_env

run_env(Schema.AUDIT, metadata)
