"""Alembic environment of the audit trail (``audit.db`` or its PostgreSQL URL)."""

from facesearch.storage.migrate import Schema, run_env
from facesearch.storage.schema import audit_metadata as metadata

run_env(Schema.AUDIT, metadata)
