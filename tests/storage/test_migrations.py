"""Schema migrations (Alembic) of the metadata database and the audit trail, on SQLite and on
PostgreSQL: the newest revision is the schema in code, data directories from before
migrations are brought up and stamped, a newer database is refused, the CLI reports and
upgrades."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect

from facesearch.errors import DatabaseError
from facesearch.governance.audit.event import AuditEvent
from facesearch.governance.audit.log import AuditLog
from facesearch.storage import database, migrate, schema
from facesearch.storage.migrate import Schema
from facesearch.storage.store import Store

from ..clirun import run_cli
from ..conftest import Databases

pytestmark = pytest.mark.databases

TABLES: dict[Schema, MetaData] = {Schema.METADATA: schema.metadata, Schema.AUDIT: schema.audit_metadata}


@pytest.fixture
def targets(tmp_path: Path, databases: Databases) -> dict[Schema, Path | str]:
    """Both databases: files in ``tmp_path``, or one PostgreSQL database for both."""
    if databases.url is not None:
        return {Schema.METADATA: databases.url, Schema.AUDIT: databases.url}
    return {Schema.METADATA: tmp_path / "facesearch.db", Schema.AUDIT: tmp_path / "audit.db"}


@pytest.mark.parametrize("which", list(Schema), ids=lambda s: s.value)
def test_the_newest_revision_is_the_schema_in_code(targets: dict[Schema, Path | str],
                                                   which: Schema) -> None:
    """A table or column added in code without a revision shows here: add one
    (``alembic -c src/facesearch/storage/migrations/alembic.ini -n <schema> revision``)."""
    assert migrate.upgrade(targets[which], which) == migrate.head(which)
    engine = database.create(targets[which])
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, TABLES[which])
    finally:
        engine.dispose()
    other = {"facesearch_schema_version", "facesearch_audit_schema_version"}
    other |= {t for s in Schema if s is not which for t in TABLES[s].tables}
    assert [d for d in diff if not (d[0] == "remove_table" and d[1].name in other)] == []


def test_both_schemas_share_one_database_and_migrate_once(
        targets: dict[Schema, Path | str]) -> None:
    store = Store(targets[Schema.METADATA])
    log = AuditLog(targets[Schema.AUDIT], None)
    log.append(AuditEvent(operation="index", actor="a"))
    log.shutdown()
    store.close()
    for which, target in targets.items():
        assert migrate.revision(target, which) == migrate.head(which)
        assert migrate.upgrade(target, which) == migrate.head(which)  # nothing left to do
    again = AuditLog(targets[Schema.AUDIT], None)
    assert again.verify().events == 1
    again.shutdown()


@pytest.mark.parametrize("which", list(Schema), ids=lambda s: s.value)
def test_downgrade_and_upgrade_round_trip(targets: dict[Schema, Path | str],
                                          which: Schema) -> None:
    migrate.upgrade(targets[which], which)
    engine = database.create(targets[which], explicit_begin=True)
    try:
        with database.exclusive(engine, which.lock) as conn:
            command.downgrade(migrate.config(which, conn), "base")
        with engine.connect() as conn:
            assert not set(TABLES[which].tables) & set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert migrate.upgrade(targets[which], which) == migrate.head(which)


@pytest.mark.parametrize("which", list(Schema), ids=lambda s: s.value)
def test_a_database_newer_than_this_version_is_refused(targets: dict[Schema, Path | str],
                                                       which: Schema) -> None:
    migrate.upgrade(targets[which], which)
    engine = database.create(targets[which], explicit_begin=True)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE {which.version_table} SET version_num = 'f00d'")
    finally:
        engine.dispose()
    with pytest.raises(DatabaseError, match="revision f00d, which this version"):
        migrate.upgrade(targets[which], which)


def test_cli_reports_and_upgrades(tmp_path: Path, databases: Databases) -> None:
    env = {"FACESEARCH_HOME": str(tmp_path / "home"), **databases.env(tmp_path / "secrets")}

    def db(*args: str) -> list[dict[str, str | None]]:
        proc = run_cli("db", *args, "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["databases"]  # type: ignore[no-any-return]

    before = db("status")
    assert [(r["schema"], r["revision"]) for r in before] == [("metadata", None),
                                                              ("audit", None)]
    upgraded = db("upgrade")
    heads = [migrate.head(Schema.METADATA), migrate.head(Schema.AUDIT)]
    assert [r["revision"] for r in upgraded] == [r["head"] for r in upgraded] == heads
    assert [r["revision"] for r in db("status")] == heads


# -- data directories made before migrations (SQLite only) ---------------------------------

LEGACY_METADATA = [
    # access_keys and video_jobs as first made, before the columns issues 11 and 13 added
    ("CREATE TABLE access_keys (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, key_id VARCHAR "
     "NOT NULL UNIQUE, role VARCHAR NOT NULL, label VARCHAR, secret BLOB NOT NULL, "
     "created_at FLOAT NOT NULL, revoked_at FLOAT)"),
    ("INSERT INTO access_keys (key_id, role, secret, created_at) VALUES "
     "('FSAKLEGACY', 'admin', x'00', 1.5)"),
    ("CREATE TABLE collections (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, name VARCHAR "
     "NOT NULL UNIQUE, model_version VARCHAR NOT NULL, created_at FLOAT NOT NULL, "
     "generation INTEGER NOT NULL, settings VARCHAR NOT NULL)"),
    ("INSERT INTO collections (name, model_version, created_at, generation, settings) VALUES "
     "('old', 'sface-2021dec', 2.5, 0, '{}')"),
]

LEGACY_AUDIT = [
    ("CREATE TABLE checkpoints (seq INTEGER NOT NULL PRIMARY KEY, head_hash VARCHAR NOT NULL, "
     "ts FLOAT NOT NULL, signature VARCHAR NOT NULL, key_fingerprint VARCHAR NOT NULL)"),
]


def test_a_data_directory_from_before_migrations_is_brought_up_and_stamped(
        tmp_path: Path) -> None:
    for name, ddl in (("facesearch.db", LEGACY_METADATA), ("audit.db", LEGACY_AUDIT)):
        con = sqlite3.connect(tmp_path / name)
        for sql in ddl:
            con.execute(sql)
        con.commit()
        con.close()
    store = Store(tmp_path / "facesearch.db")
    with store.transaction() as conn:
        assert [c.name for c in store.collections.list_all(conn)] == ["old"]
        cols = {c["name"] for c in inspect(conn).get_columns("access_keys")}
        assert {"purpose", "case_ref", "expires_at"} <= cols
        assert "sns_topic_arn" in {c["name"] for c in inspect(conn).get_columns("video_jobs")}
        assert set(schema.metadata.tables) <= set(inspect(conn).get_table_names())
    store.close()
    log = AuditLog(tmp_path / "audit.db", tmp_path / "k.pem", checkpoint_every=1)
    log.append(AuditEvent(operation="index", actor="a"))  # checkpoints with a tree root
    assert log.checkpoints()[0].tree_root is not None and log.verify().ok
    log.shutdown()
    assert migrate.revision(tmp_path / "facesearch.db", Schema.METADATA) == migrate.head(Schema.METADATA)
    assert migrate.revision(tmp_path / "audit.db", Schema.AUDIT) == migrate.head(Schema.AUDIT)
    con = sqlite3.connect(tmp_path / "facesearch.db")
    assert con.execute("SELECT key_id FROM access_keys").fetchall() == [("FSAKLEGACY",)]
    con.close()
