"""Alembic environment of the metadata database (``facesearch.db`` or its PostgreSQL URL)."""

from facesearch.storage.migrate import Schema, run_env
from facesearch.storage.schema import metadata

run_env(Schema.METADATA, metadata)
