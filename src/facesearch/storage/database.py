"""Database engines: SQLite files in the data directory (the embedded default) or PostgreSQL
(one server shared by several API nodes), for the metadata database and the audit trail.

A database is named by a :data:`Target`: a :class:`~pathlib.Path` is an SQLite file, a string
a SQLAlchemy URL (``sqlite:///...`` or ``postgresql://user@host/db``; a PostgreSQL URL
without a driver uses psycopg 3). What differs between the two is kept here:

- SQLite connections run in WAL mode with foreign keys and ``secure_delete`` on and a busy
  timeout of 30 s; an engine made with ``explicit_begin`` issues ``BEGIN`` itself, so that
  its transactions are real (DDL included) and :func:`exclusive` can take the write lock up
  front (``BEGIN IMMEDIATE``);
- PostgreSQL connections time out after :data:`CONNECT_TIMEOUT_S` and notice a dead server
  by TCP keepalives; :func:`unavailable` tells a database that is down (answer 503 at once,
  retry later) from a bug;
- on PostgreSQL, :func:`exclusive` takes a transaction-scoped advisory lock instead (its key
  names what it serialises), and :func:`snapshot` reads at ``REPEATABLE READ``, so that a
  walk over many statements sees one state of the database.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from facesearch.errors import DatabaseError, UnavailableError

Target = Path | str
"""An SQLite file, or a SQLAlchemy URL."""

_IMMEDIATE = "facesearch_immediate"
"""Execution option: an explicit-begin SQLite connection begins with ``BEGIN IMMEDIATE``."""


CONNECT_TIMEOUT_S = 3
"""How long opening a PostgreSQL connection may take (then the database is unavailable)."""
POOL_TIMEOUT_S = 10
"""How long a request may wait for a free connection of the pool."""

_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o")


def unavailable(exc: BaseException) -> UnavailableError | None:
    """The :class:`UnavailableError` a database exception means (the server down, restarting
    or unreachable, a connection lost, the pool exhausted, an SQLite file busy), or None for
    any other (a bug: no such table, a constraint...)."""
    if isinstance(exc, PoolTimeoutError):
        return UnavailableError("the database has no free connection now; retry",
                                "database")
    if not isinstance(exc, (OperationalError, InterfaceError)) and not (
            isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return None
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = detail[0] if detail else type(exc).__name__
    if isinstance(exc, OperationalError) and type(exc.orig).__module__.startswith("sqlite3") \
            and not any(w in first.lower() for w in _SQLITE_TRANSIENT):
        return None
    return UnavailableError(f"the database is unavailable ({first}); retry", "database")


def lock_key(name: str) -> int:
    """A PostgreSQL advisory lock key (signed 64 bits) for ``name``."""
    return int.from_bytes(hashlib.sha256(f"facesearch:{name}".encode()).digest()[:8], "big",
                          signed=True)


def url_of(target: Target) -> URL:
    """The SQLAlchemy URL of a target (a driverless PostgreSQL URL gets psycopg 3);
    :class:`DatabaseError` for anything but SQLite and PostgreSQL."""
    if isinstance(target, Path):
        return URL.create("sqlite", database=str(target))
    try:
        url = make_url(target)
    except ArgumentError:
        raise DatabaseError("a database URL must look like postgresql://user@host:5432/name "
                            "or sqlite:////path/to/file.db") from None
    backend = url.get_backend_name()
    if backend == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        return url
    if backend == "sqlite":
        return url
    raise DatabaseError(f"unsupported database {backend!r}: facesearch runs on SQLite or "
                        f"PostgreSQL")


def describe(target: Target) -> str:
    """The target for messages and logs, without its password."""
    return url_of(target).render_as_string(hide_password=True)


def is_sqlite(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "sqlite"


def is_postgres(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "postgresql"


def _enable_wal(cur: sqlite3.Cursor) -> None:
    """Switch to WAL (persistent in the file). Processes opening a new file at once get
    "locked" here whatever the busy timeout, so retry for up to about 10 s."""
    for attempt in range(1000):
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 999:
                raise
            time.sleep(0.01)


def create(target: Target, *, synchronous: str = "NORMAL",
           explicit_begin: bool = False) -> Engine:
    """An engine on ``target``. SQLite: ``synchronous`` (``NORMAL`` or ``FULL``) and
    ``explicit_begin`` as described above (the file's folder is made if missing);
    PostgreSQL: connections checked before use (a restarted server is no error)."""
    url = url_of(target)
    if url.get_backend_name() == "postgresql":
        args: dict[str, Any] = {}
        if "application_name" not in url.query:
            args["application_name"] = "facesearch"
        if "connect_timeout" not in url.query:  # a server that does not answer: fail fast
            args["connect_timeout"] = CONNECT_TIMEOUT_S
        if "keepalives" not in url.query:  # a server gone mid-query: noticed in seconds
            args.update(keepalives=1, keepalives_idle=5, keepalives_interval=2,
                        keepalives_count=2)
        return create_engine(url, pool_pre_ping=True, pool_timeout=POOL_TIMEOUT_S,
                             connect_args=args)
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)

    def on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        if explicit_begin:
            dbapi_conn.isolation_level = None  # BEGIN is ours (see on_begin)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        _enable_wal(cur)
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA secure_delete=ON")
        cur.close()

    event.listen(engine, "connect", on_connect)
    if explicit_begin:
        def on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get(_IMMEDIATE, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        event.listen(engine, "begin", on_begin)
    return engine


@contextmanager
def exclusive(engine: Engine, lock: int) -> Iterator[Connection]:
    """A transaction that holds, from its start, the write lock of an SQLite database (the
    engine must be made with ``explicit_begin``) or the PostgreSQL advisory lock ``lock``
    (:func:`lock_key`): the writers that take it run one at a time, and each sees what the
    one before committed."""
    with engine.connect() as conn:
        if is_sqlite(conn):
            conn.execution_options(**{_IMMEDIATE: True})
        with conn.begin():
            if is_postgres(conn):
                conn.execute(select(func.pg_advisory_xact_lock(lock)))
            yield conn


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A read transaction that sees one state of the database throughout (on SQLite a
    deferred ``BEGIN`` does; PostgreSQL reads at ``REPEATABLE READ``)."""
    with engine.connect() as conn:
        if is_postgres(conn):
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn
