"""Request signatures (replays refused across API nodes) and the answers of requests that run
once (repeated signatures, client request tokens)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from facesearch.storage.crypto import Sealer
from facesearch.storage.schema import answers_t, signatures_t


class RequestStore:
    """The ``signatures`` and ``answers`` tables. Each method runs its own transaction."""

    def __init__(self, engine: Engine, postgres: bool, sealer: Sealer | None) -> None:
        self.engine = engine
        self.postgres = postgres
        self.sealer = sealer

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def admit_signature(self, signature: str, expires_at: float, now: float) -> bool:
        """Remember ``signature`` until ``expires_at`` (s since the epoch); False when it is
        remembered already and has not expired (a replay). One statement: an insert, or the
        renewal of the same signature's expired row."""
        dialect = postgresql if self.postgres else sqlite
        stmt = dialect.insert(signatures_t).values(signature=signature, expires_at=expires_at)
        stmt = stmt.on_conflict_do_update(
            index_elements=[signatures_t.c.signature],
            set_={"expires_at": stmt.excluded.expires_at},
            where=signatures_t.c.expires_at <= now)
        with self.transaction() as conn:
            return conn.execute(stmt.returning(signatures_t.c.signature)).first() is not None

    def purge_signatures(self, now: float) -> int:
        """Delete the signatures expired by ``now``; how many."""
        with self.transaction() as conn:
            return int(conn.execute(delete(signatures_t)
                                    .where(signatures_t.c.expires_at <= now)).rowcount)

    def forget_signature(self, signature: str) -> None:
        with self.transaction() as conn:
            conn.execute(delete(signatures_t).where(signatures_t.c.signature == signature))

    def claim_answer(self, key: str, fingerprint: str, expires_at: float, now: float) -> bool:
        """Claim ``key`` for a request about to run (its answer pending) until ``expires_at``;
        False when another request holds it and it has not expired. One statement, as
        :meth:`admit_signature`."""
        dialect = postgresql if self.postgres else sqlite
        stmt = dialect.insert(answers_t).values(key=key, fingerprint=fingerprint,
                                                expires_at=expires_at, status=None, body=None)
        stmt = stmt.on_conflict_do_update(
            index_elements=[answers_t.c.key],
            set_={"fingerprint": stmt.excluded.fingerprint,
                  "expires_at": stmt.excluded.expires_at, "status": None, "body": None},
            where=answers_t.c.expires_at <= now)
        with self.transaction() as conn:
            return conn.execute(stmt.returning(answers_t.c.key)).first() is not None

    def answer_of(self, key: str) -> tuple[str, int | None, bytes | None] | None:
        """``(fingerprint, status, body)`` of a claimed key (status None: still running), or
        None when nothing holds it. The body is opened when it was sealed."""
        with self.transaction() as conn:
            r = conn.execute(select(answers_t.c.fingerprint, answers_t.c.status,
                                    answers_t.c.body).where(answers_t.c.key == key)).first()
        if r is None:
            return None
        body = r.body
        if body is not None and self.sealer is not None:
            body = self.sealer.open(body, key.encode())
        return str(r.fingerprint), r.status, body

    def record_answer(self, key: str, status: int, body: bytes, expires_at: float) -> None:
        """The answer of the request that claimed ``key``, kept until ``expires_at`` (sealed
        when encryption at rest is on: answers name faces, images and people)."""
        if self.sealer is not None:
            body = self.sealer.seal(body, key.encode())
        with self.transaction() as conn:
            conn.execute(update(answers_t).where(answers_t.c.key == key)
                         .values(status=status, body=body, expires_at=expires_at))

    def drop_answer(self, key: str) -> None:
        """Release ``key``: its request did nothing to remember (it may run again)."""
        with self.transaction() as conn:
            conn.execute(delete(answers_t).where(answers_t.c.key == key))

    def purge_answers(self, now: float) -> int:
        """Delete the answers expired by ``now``; how many."""
        with self.transaction() as conn:
            return int(conn.execute(delete(answers_t)
                                    .where(answers_t.c.expires_at <= now)).rowcount)
