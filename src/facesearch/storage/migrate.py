"""Schema migrations of the metadata database and of the audit trail (Alembic).

Each database has its own chain of revisions (``storage/migrations/metadata`` and
``storage/migrations/audit``) and its own version table, so both may live in one PostgreSQL
database. :func:`upgrade` brings a database to the newest revision this version of
facesearch knows; the service calls it on open. It runs in one transaction holding the
database's write lock (SQLite) or an advisory lock (PostgreSQL), so nodes opening at once
migrate once and the others find the work done. Revision ``0001`` is the schema as it was
before migrations: on a data directory made by an earlier version it creates what is
missing and adds the columns added since, then records the revision (a "stamp").

A database at a revision this version does not know (made by a newer facesearch) is
refused with :class:`~facesearch.errors.DatabaseError`, as is a migration the database role
may not make (run ``facesearch db upgrade`` as the role that owns the tables).

New revisions: ``alembic -c src/facesearch/storage/migrations/alembic.ini -n metadata
revision -m "what"`` (or ``-n audit``); ``tests/storage/test_migrations.py`` checks that the
newest revision matches the tables declared in code.
"""

from __future__ import annotations

import enum
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection
from sqlalchemy.exc import ProgrammingError

from facesearch.errors import DatabaseError
from facesearch.storage import database
from facesearch.storage.database import Target

MIGRATIONS = Path(__file__).parent / "migrations"

log = logging.getLogger("facesearch.storage")
logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines on every open: ours


class Schema(enum.Enum):
    """The two databases, each with its own revisions."""

    METADATA = "metadata"
    AUDIT = "audit"

    @property
    def version_table(self) -> str:
        return {"metadata": "facesearch_schema_version",
                "audit": "facesearch_audit_schema_version"}[self.value]

    @property
    def lock(self) -> int:
        """The advisory lock key that serialises this schema's migrations (PostgreSQL)."""
        return database.lock_key(f"migrate:{self.value}")


def config(schema: Schema, connection: Connection | None = None) -> Config:
    """The Alembic configuration of ``schema`` (``connection``: migrate on that one)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS / schema.value))
    cfg.attributes["schema"] = schema
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def current(conn: Connection, schema: Schema) -> str | None:
    """The revision the database is at (None: before migrations, or empty)."""
    ctx = MigrationContext.configure(conn, opts={"version_table": schema.version_table})
    heads = ctx.get_current_heads()
    return heads[0] if heads else None


def head(schema: Schema) -> str:
    """The newest revision this version of facesearch knows."""
    rev = ScriptDirectory.from_config(config(schema)).get_current_head()
    assert rev is not None
    return rev


def upgrade(target: Target, schema: Schema) -> str:
    """Bring the database ``target`` to the newest revision (nothing to do when it is there);
    returns the revision. :class:`DatabaseError` when the database is newer than this
    version of facesearch or the role may not migrate it."""
    engine = database.create(target, synchronous="FULL", explicit_begin=True)
    newest = head(schema)
    try:
        with database.exclusive(engine, schema.lock) as conn:
            at = current(conn, schema)
            if at == newest:
                return at
            known = ScriptDirectory.from_config(config(schema))
            if at is not None:
                try:
                    known.get_revision(at)
                except CommandError:
                    raise DatabaseError(
                        f"the {schema.value} database {database.describe(target)} is at schema "
                        f"revision {at}, which this version of facesearch does not know (it "
                        f"knows up to {newest}): upgrade facesearch") from None
            log.info("migrating the %s database %s from revision %s to %s", schema.value,
                     database.describe(target), at or "none", newest)
            command.upgrade(config(schema, conn), "head")
            return newest
    except ProgrammingError as exc:
        raise DatabaseError(
            f"cannot migrate the {schema.value} database {database.describe(target)} to "
            f"revision {newest}: {exc.orig}; run 'facesearch db upgrade' as the role that "
            f"owns its tables") from None
    finally:
        engine.dispose()


def revision(target: Target, schema: Schema) -> str | None:
    """The revision the database ``target`` is at, without changing it (nor making a
    missing SQLite file)."""
    url = database.url_of(target)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        return None
    engine = database.create(target, explicit_begin=True)
    try:
        with engine.connect() as conn:
            return current(conn, schema)
    finally:
        engine.dispose()


def run_env(schema: Schema, target_metadata: object) -> None:
    """The body of each revision chain's ``env.py``: migrate the connection the caller gave
    (:func:`upgrade`), or, from the ``alembic`` command, the ``sqlalchemy.url`` of the
    configuration under the same lock."""
    from alembic import context

    conn = context.config.attributes.get("connection")
    if conn is not None:
        _run(conn, schema, target_metadata)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise DatabaseError("set sqlalchemy.url in the Alembic configuration")
    engine = database.create(url, synchronous="FULL", explicit_begin=True)
    try:
        with database.exclusive(engine, schema.lock) as conn:
            _run(conn, schema, target_metadata)
    finally:
        engine.dispose()


def _run(conn: Connection, schema: Schema, target_metadata: object) -> None:
    from alembic import context

    context.configure(connection=conn, target_metadata=target_metadata,
                      version_table=schema.version_table,
                      render_as_batch=database.is_sqlite(conn))
    with context.begin_transaction():
        context.run_migrations()
