"""``facesearch db ...``: the databases' schema revisions, migrations and vacuuming.

The service migrates both databases by itself when it opens; ``db upgrade`` does it alone
(before rolling out a new version to several API nodes, or as the role that owns the tables
when the nodes' role may not change them). Settings as for every command (``--home``,
``FACESEARCH_DATABASE_URL``, ``FACESEARCH_AUDIT_DATABASE_URL``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from facesearch.cli.common import HomeOpt, JsonOpt, emit_json, out
from facesearch.config import Settings
from facesearch.storage import database, migrate
from facesearch.storage.crypto import sealer_of
from facesearch.storage.migrate import Schema
from facesearch.storage.store import Store

db_app = typer.Typer(no_args_is_help=True, help="Databases: schema revision, migrations, "
                                                "vacuum.")


def _settings(home: Path | None) -> Settings:
    os.umask(0o077)  # database files made here are private, as the service makes them
    return Settings() if home is None else Settings(home=home)


def _targets(settings: Settings) -> list[tuple[Schema, Path | str]]:
    return [(Schema.METADATA, settings.metadata_target()),
            (Schema.AUDIT, settings.audit_target())]


def _report(rows: list[dict[str, str | None]], as_json: bool) -> None:
    if as_json:
        emit_json({"databases": rows})
        return
    for r in rows:
        state = "up to date" if r["revision"] == r["head"] else f"newest is {r['head']}"
        out.print(f"{r['schema']}: {r['database']} at revision {r['revision'] or 'none'} "
                  f"({state})", highlight=False, soft_wrap=True)


@db_app.command("status")
def db_status(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """The schema revision of each database, and the newest this version knows."""
    rows: list[dict[str, str | None]] = [
        {"schema": schema.value, "database": database.describe(target),
         "revision": migrate.revision(target, schema), "head": migrate.head(schema)}
        for schema, target in _targets(_settings(home))]
    _report(rows, as_json)


@db_app.command("upgrade")
def db_upgrade(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Bring both databases to the newest schema (what opening the service does)."""
    rows: list[dict[str, str | None]] = []
    for schema, target in _targets(_settings(home)):
        rev = migrate.upgrade(target, schema)
        rows.append({"schema": schema.value, "database": database.describe(target),
                     "revision": rev, "head": migrate.head(schema)})
    _report(rows, as_json)


FullOpt = Annotated[bool, typer.Option(
    "--full", help="PostgreSQL: VACUUM (FULL), which rewrites every table into new files "
                   "(leaving no bytes of deleted rows in them) and locks each meanwhile.")]


@db_app.command("vacuum")
def db_vacuum(home: HomeOpt = None, full: FullOpt = False) -> None:
    """Reclaim the space of deleted rows in the metadata database (erasure does a plain
    vacuum by itself; see docs/deploy.md for what stays where)."""
    settings = _settings(home)
    store = Store(settings.metadata_target(), sealer_of(settings))
    try:
        store.vacuum(full=full)
    finally:
        store.close()
    out.print(f"vacuumed {database.describe(settings.metadata_target())}"
              f"{' (full)' if full else ''}", highlight=False, soft_wrap=True)
