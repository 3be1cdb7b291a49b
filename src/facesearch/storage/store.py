"""Metadata store: collections, indexed images, faces (with their vectors) and users.

SQLAlchemy Core on SQLite (the embedded default: WAL mode with foreign keys and
``secure_delete`` on, so deleted rows are overwritten, not merely unlinked) or PostgreSQL (one
database for several API nodes); see :mod:`facesearch.storage.database`. The store is the
source of truth: every face row holds its embedding, and each collection's vector index is a
cache rebuilt from it. Row ids are never reused (``AUTOINCREMENT``, or a sequence), so an id
in an index snapshot always means the same face; within a collection they also grow in the
order faces are committed (on PostgreSQL, inserts into one collection take its row lock
first), so "faces after the highest row seen" misses none.

:class:`Store` opens the database and holds one object per concern, each in its module:
``collections`` (:mod:`~facesearch.storage.collection_store`), ``images``
(:mod:`~facesearch.storage.image_store`), ``faces`` (:mod:`~facesearch.storage.face_store`),
``users`` (:mod:`~facesearch.storage.user_store`), ``generations`` (the vector change log,
:mod:`~facesearch.storage.generations`), ``requests`` (signatures and answers,
:mod:`~facesearch.storage.request_store`) and ``outbox`` (the audit outbox,
:mod:`~facesearch.storage.outbox_store`). Methods that take a ``conn`` run in the caller's
:meth:`Store.transaction`, so that one transaction may span several concerns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

from facesearch.storage import database, schema
from facesearch.storage.collection_store import CollectionStore
from facesearch.storage.crypto import Sealer
from facesearch.storage.database import Target
from facesearch.storage.face_store import FaceStore
from facesearch.storage.generations import Generations
from facesearch.storage.image_store import ImageStore
from facesearch.storage.outbox_store import Outbox
from facesearch.storage.request_store import RequestStore
from facesearch.storage.user_store import UserStore


class Store:
    """The metadata database of one data directory (``<home>/facesearch.db``) or deployment
    (a PostgreSQL URL), made or migrated on open."""

    def __init__(self, target: Target, sealer: Sealer | None = None) -> None:
        schema.create(target)
        self.target = target
        self.sealer = sealer
        self.engine: Engine = database.create(target)
        self.postgres = database.is_postgres(self.engine)
        self.generations = Generations(self.postgres)
        self.collections = CollectionStore(self.generations)
        self.images = ImageStore()
        self.faces = FaceStore(self.postgres, sealer)
        self.users = UserStore()
        self.requests = RequestStore(self.engine, self.postgres, sealer)
        self.outbox = Outbox()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction that sees one state of the database throughout."""
        with database.snapshot(self.engine) as conn:
            yield conn

    def checkpoint(self) -> None:
        """After an erasure. SQLite: fold the write-ahead log into the database file and
        truncate it, so that deleted rows (zeroed by ``secure_delete``) leave no copy in the
        log. PostgreSQL: ``VACUUM`` the tables, so that no row version of what was deleted is
        left in them (their bytes stay in the pages until reused: :meth:`vacuum` with
        ``full`` rewrites the tables; see ``docs/deploy.md``)."""
        if self.postgres:
            self.vacuum()
            return
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def vacuum(self, full: bool = False) -> None:
        """Reclaim deleted rows: ``VACUUM`` every table (``full``: ``VACUUM (FULL)`` on
        PostgreSQL, which rewrites each table into new files and locks it meanwhile; on
        SQLite ``VACUUM`` rebuilds the file either way)."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if not self.postgres:
                conn.exec_driver_sql("VACUUM")
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                return
            tables = ", ".join(t.name for t in schema.metadata.sorted_tables)
            conn.exec_driver_sql(f"VACUUM {'(FULL) ' if full else ''}{tables}")
