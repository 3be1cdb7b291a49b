"""A real PostgreSQL server for the tests: ``initdb`` into a temporary folder and ``pg_ctl``
start, listening on a unix socket in that folder only (no port to collide on), one per test
session; each test gets a database of its own.

The server runs as the user running the tests, or, when that is root (CI containers), as the
``postgres`` user the Debian package makes (``runuser``), since PostgreSQL refuses to run as
root. Its durability settings are off (fsync, synchronous commit): the tests need a real
server's behaviour, not its crash safety, and creating databases is much faster so.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

SUPERUSER = "postgres"


def binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest
    ``/usr/lib/postgresql/<version>/bin``; None when PostgreSQL is not installed."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


@dataclass
class PostgresServer:
    """A running server: ``root`` holds its data (``data``), log and socket."""

    root: Path
    bin: Path
    run_as: str | None
    """The OS user the server runs as (None: the current one)."""

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", self.run_as, "--"] if self.run_as else []) + list(args)

    @classmethod
    def start(cls, bindir: Path) -> PostgresServer:
        run_as = SUPERUSER if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix="facesearch-pg-"))
        server = cls(root, bindir, run_as)
        server.socket_dir.mkdir()
        if run_as is not None:
            pw = pwd.getpwnam(run_as)
            for p in (root, server.socket_dir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        try:
            subprocess.run(server._cmd(str(bindir / "initdb"), "-D", str(root / "data"),
                                       "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                                       "--locale=C.UTF-8", "--no-sync"),
                           check=True, capture_output=True, timeout=120)
            options = (f"-k {server.socket_dir} -c listen_addresses='' -c fsync=off "
                       f"-c synchronous_commit=off -c full_page_writes=off "
                       f"-c max_connections=300")
            subprocess.run(server._cmd(str(bindir / "pg_ctl"), "-D", str(root / "data"),
                                       "-l", str(root / "server.log"), "-o", options, "-w",
                                       "-t", "60", "start"),
                           check=True, capture_output=True, timeout=120)
        except subprocess.CalledProcessError as exc:
            log = root / "server.log"
            detail = log.read_text() if log.exists() else ""
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr.decode()}{detail}") from exc
        return server

    def pause(self) -> None:
        """Stop the server (``fast``: every client is disconnected at once), keeping its
        data. Not ``immediate``: with synchronous commit off (above), a crash-like stop loses
        the last fraction of a second of commits, which made tests that stop the server
        right after a write fail at random."""
        subprocess.run(self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"),
                                 "-m", "fast", "-w", "stop"),
                       check=True, capture_output=True, timeout=120)

    def resume(self) -> None:
        """Start a paused server again on its data."""
        options = (f"-k {self.socket_dir} -c listen_addresses='' -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        subprocess.run(self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"),
                                 "-l", str(self.root / "server.log"), "-o", options, "-w",
                                 "-t", "60", "start"),
                       check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        subprocess.run(self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"),
                                 "-m", "fast", "-w", "stop"),
                       check=False, capture_output=True, timeout=120)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        """A SQLAlchemy URL of ``database`` as ``user`` (over the unix socket)."""
        return f"postgresql://{user}@/{database}?host={self.socket_dir}"

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        """A superuser connection (autocommit), as an administrator - or an attacker with
        the server's keys - would have."""
        return psycopg.connect(host=str(self.socket_dir), user=SUPERUSER, dbname=database,
                               autocommit=True)

    def create_database(self) -> str:
        """A new, empty database; returns its name."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def data_file(self, database: str, table: str) -> Path:
        """The file holding ``table``'s rows (its first segment)."""
        with self.connect(database) as conn:
            rel = conn.execute("SELECT pg_relation_filepath(%s)", (table,)).fetchone()
        assert rel is not None
        return self.root / "data" / rel[0]
