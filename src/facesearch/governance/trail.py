"""What every service calls to leave its mark in the audit trail.

:class:`AuditTrail` turns an operation, its caller and what it touched into an
:class:`~facesearch.governance.audit.event.AuditEvent` and appends it to the
:class:`~facesearch.governance.audit.log.AuditLog` (``audit.db``). Events that must commit with
the data they describe (an indexed image's faces) go through the outbox: a row of
``facesearch.db`` written in the data's own transaction (:meth:`AuditTrail.stage`), appended
to the chain after the commit (:meth:`AuditTrail.drain`); a crash in between leaves the row,
and the next open appends it, exactly once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from facesearch.errors import FaceSearchError
from facesearch.governance.audit.event import AuditEvent, event_from_json, event_to_json
from facesearch.storage.store import Store
from facesearch.types import Caller

log = logging.getLogger("facesearch.audit")

DATABASE_DOWN = (DBAPIError, PoolTimeoutError)

Details = dict[str, str | int | float | bool | None]
Results = Sequence[tuple[str, float | None]]


class AuditSink(Protocol):
    """Where audited operations go (:class:`facesearch.governance.audit.log.AuditLog`)."""

    def append(self, event: AuditEvent) -> object: ...

    def append_many(self, events: Sequence[AuditEvent],
                    outbox_ids: Sequence[str] | None = None) -> object: ...


class AuditTrail:
    """Audit events of one data directory's services (``sink`` None: recording is off, as in
    evaluation runs that audit nothing)."""

    def __init__(self, sink: AuditSink | None, store: Store,
                 model_version: Callable[[], str | None] = lambda: None,
                 clock: Callable[[], float] | None = None) -> None:
        self.sink = sink
        self.store = store
        self._model_version = model_version
        self._clock = clock

    def event(self, operation: str, caller: Caller | None, *, collection: str | None = None,
              probe_sha256: str | None = None, threshold: float | None = None,
              results: Results = (), details: Details | None = None) -> AuditEvent:
        """The event of ``operation`` by ``caller`` (the local user when None)."""
        c = caller or Caller.local()
        return AuditEvent(
            operation=operation, actor=c.actor, role=c.role, collection=collection,
            purpose=c.purpose, case_ref=c.case_ref, client=c.client, probe_sha256=probe_sha256,
            threshold=threshold, model_version=self._model_version(),
            results=tuple(results), details=details or {})

    def note(self, operation: str, caller: Caller | None, *, collection: str | None = None,
             probe_sha256: str | None = None, threshold: float | None = None,
             results: Results = (), details: Details | None = None) -> None:
        """Append the event of ``operation`` by ``caller`` (:meth:`event`) now."""
        if self.sink is not None:
            self.sink.append(self.event(operation, caller, collection=collection,
                                        probe_sha256=probe_sha256, threshold=threshold,
                                        results=results, details=details))

    def stage(self, conn: Connection, event: AuditEvent, now: float) -> str | None:
        """Write ``event`` to the outbox in the transaction ``conn`` (it commits with the
        data); returns its outbox id (None when recording is off)."""
        if self.sink is None:
            return None
        outbox_id = str(uuid.uuid4())
        self.store.outbox.add(conn, outbox_id, event_to_json(event), now)
        return outbox_id

    def drain(self, before: float | None = None) -> int:
        """Append every event waiting in the outbox (each once, also when several processes
        drain at a time) and remove them; returns how many were appended. ``before``: only
        those staged before that time (s since the epoch): another node's that it did not
        append, having crashed (:class:`OutboxSweeper`)."""
        if self.sink is None:
            return 0
        n = 0
        while True:
            with self.store.transaction() as conn:
                rows = self.store.outbox.oldest(conn, before=before)
            if not rows:
                return n
            self.sink.append_many([event_from_json(text) for _, text in rows],
                                  outbox_ids=[oid for oid, _ in rows])
            with self.store.transaction() as conn:
                self.store.outbox.remove(conn, [oid for oid, _ in rows])
            n += len(rows)


class OutboxSweeper:
    """Drains, every ``interval_s`` seconds in its own thread, the outbox events staged more
    than ``interval_s`` ago: those of a node that crashed between committing faces and
    appending their events reach the audit trail through any node that runs, not only when
    that node restarts."""

    def __init__(self, trail: AuditTrail, interval_s: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.trail = trail
        self.interval_s = interval_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Drain the stale events now; how many were appended."""
        n = self.trail.drain(before=self.clock() - self.interval_s)
        if n:
            log.warning("appended %d audit event(s) another node staged and did not append "
                        "(it stopped or crashed)", n)
        return n

    def start(self) -> None:
        if self._thread is None and self.interval_s > 0:
            self._thread = threading.Thread(target=self._run, name="facesearch-outbox",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except FaceSearchError as exc:  # the next round tries again
                log.error("draining the audit outbox failed: %s", exc.message)
            except DATABASE_DOWN as exc:  # the database is down: the next round tries again
                log.error("draining the audit outbox failed: %s", str(exc).splitlines()[0])

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
