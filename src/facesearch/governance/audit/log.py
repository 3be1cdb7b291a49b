"""The audit log: appends events to the chain (and checkpoints it), answers queries and
proofs; exports and verification are in :mod:`~facesearch.governance.audit.export` and
:mod:`~facesearch.governance.audit.verify`.

Concurrency: appends take a lock up front (SQLite's write lock, ``BEGIN IMMEDIATE``; on
PostgreSQL a transaction-scoped advisory lock), then read the head, hash and insert in that
one transaction, so appends from any number of threads, processes and API nodes serialise
into one chain without forks or retries; waiters queue (SQLite: for up to 30 s).
``seq`` (primary key) and ``prev_hash`` / ``hash`` (UNIQUE) would also reject a fork outright
should anything ever write without that lock.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Engine, insert, select

from facesearch.errors import AccessDeniedError, InvalidParameterError
from facesearch.governance.audit.chain import (
    AuditKeyError,
    Checkpoint,
    Frontier,
    fingerprint,
    inclusion_path,
    load_or_create_key,
    load_public_key,
    merkle_leaf,
)
from facesearch.governance.audit.event import (
    GENESIS_HASH,
    AuditEvent,
    AuditRecord,
    SearchRecord,
    event_hash,
)
from facesearch.governance.audit.export import ExportFormat, write_export
from facesearch.governance.audit.verify import VerifyReport, verify_chain
from facesearch.storage import database
from facesearch.storage.database import Target
from facesearch.storage.migrate import Schema, upgrade
from facesearch.storage.schema import checkpoints_t, events_t, outbox_applied_t

MAX_QUERY_LIMIT = 10_000

Clock = Callable[[], float]

_APPEND_LOCK = database.lock_key("audit-append")
"""The advisory lock every append and checkpoint holds on PostgreSQL."""


def _record_from_row(r: Any) -> AuditRecord:
    ev = AuditEvent(
        operation=r.operation, actor=r.actor, role=r.role, collection=r.collection,
        purpose=r.purpose, case_ref=r.case_ref, client=r.client, probe_sha256=r.probe_sha256,
        threshold=r.threshold, model_version=r.model_version,
        results=tuple((f, s) for f, s in json.loads(r.results)), details=json.loads(r.details))
    return AuditRecord(seq=r.seq, ts=r.ts, event=ev, prev_hash=r.prev_hash, hash=r.hash)


class AuditLog:
    """The audit trail of one data directory or deployment. Safe to share between threads;
    any number of processes (on PostgreSQL: API nodes) may append to the same chain."""

    def __init__(self, target: Target, signing_key: Path | None, clock: Clock = time.time,
                 checkpoint_every: int = 100, witness: Path | None = None) -> None:
        """``target``: the database, an SQLite file or a URL
        (:mod:`facesearch.storage.database`), made or migrated on open. ``signing_key``: PEM
        file of the Ed25519 key, created on first use; None keeps the hash chain without
        checkpoints (nodes sharing a database must share the key). ``checkpoint_every``:
        events between checkpoints. ``witness``: a file (outside the data directory) every
        checkpoint this process makes is also appended to, one JSON line each (see
        :func:`~facesearch.governance.audit.verify.read_witness`)."""
        if checkpoint_every < 1:
            raise InvalidParameterError("checkpoint_every must be at least 1")
        upgrade(target, Schema.AUDIT)
        self.target = target
        self.signing_key_path = signing_key
        self.witness_path = witness
        self.checkpoint_every = checkpoint_every
        self._clock = clock
        self._lock = threading.Lock()
        self._key: Ed25519PrivateKey | None = None
        self._dirty = False
        self.engine: Engine = database.create(target, synchronous="FULL", explicit_begin=True)
        self._tree: Frontier | None = None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A transaction holding the chain's write lock from its start."""
        with database.exclusive(self.engine, _APPEND_LOCK) as conn:
            yield conn

    def _signer(self) -> Ed25519PrivateKey | None:
        if self._key is None and self.signing_key_path is not None:
            self._key = load_or_create_key(self.signing_key_path)
        return self._key

    # -- writing ----------------------------------------------------------------------------

    def append(self, event: AuditEvent) -> AuditRecord:
        """Append ``event`` (time from the clock) and return it as chained; may checkpoint."""
        return self.append_many([event])[0]

    def append_many(self, events: Sequence[AuditEvent],
                    outbox_ids: Sequence[str] | None = None) -> list[AuditRecord]:
        """Append several events in one write transaction (one sync to disk), in order.

        ``outbox_ids`` (one per event) name the outbox rows the events come from: an event
        whose id was appended before is skipped, so replaying an outbox appends each once.
        """
        out: list[AuditRecord] = []
        if not events:
            return out
        if outbox_ids is not None and len(outbox_ids) != len(events):
            raise ValueError("append_many: one outbox id per event")
        published: Checkpoint | None = None
        with self._lock:
            with self._write() as conn:
                if outbox_ids is not None:
                    done = set(conn.execute(select(outbox_applied_t.c.outbox_id).where(
                        outbox_applied_t.c.outbox_id.in_(list(outbox_ids)))).scalars())
                    pairs = [(e, o) for e, o in zip(events, outbox_ids, strict=True)
                             if o not in done]
                    events = [e for e, _ in pairs]
                    if not events:
                        return out
                head = conn.execute(select(events_t.c.seq, events_t.c.hash)
                                    .order_by(events_t.c.seq.desc()).limit(1)).first()
                seq = 0 if head is None else head.seq
                prev = GENESIS_HASH if head is None else head.hash
                rows = []
                for e in events:
                    seq += 1
                    ts = float(self._clock())
                    digest = event_hash(seq, ts, prev, e)
                    rows.append({
                        "seq": seq, "ts": ts, "operation": e.operation, "actor": e.actor,
                        "role": e.role, "collection": e.collection, "purpose": e.purpose,
                        "case_ref": e.case_ref, "client": e.client,
                        "probe_sha256": e.probe_sha256, "threshold": e.threshold,
                        "model_version": e.model_version,
                        "results": json.dumps([[f, s] for f, s in e.results]),
                        "details": json.dumps(dict(e.details), sort_keys=True),
                        "prev_hash": prev, "hash": digest})
                    out.append(AuditRecord(seq=seq, ts=ts, event=e, prev_hash=prev, hash=digest))
                    prev = digest
                conn.execute(insert(events_t), rows)
                if outbox_ids is not None:
                    conn.execute(insert(outbox_applied_t),
                                 [{"outbox_id": o, "seq": r.seq}
                                  for (_, o), r in zip(pairs, out, strict=True)])
                self._dirty = True
                if any(r.seq % self.checkpoint_every == 0 for r in out):
                    published = self._checkpoint(conn, seq, prev)
            if published is not None:
                self._publish(published)
        return out

    def _publish(self, cp: Checkpoint) -> None:
        """Append a committed checkpoint to the witness file (O_APPEND, synced), if any."""
        if self.witness_path is None:
            return
        line = json.dumps({"type": "facesearch-audit-checkpoint", **cp.to_json()},
                          sort_keys=True) + "\n"
        try:
            fd = os.open(self.witness_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise AuditKeyError(f"cannot append to the audit witness file "
                                f"{self.witness_path}: {exc.strerror}") from None

    def _checkpoint(self, conn: Connection, seq: int, head_hash: str) -> Checkpoint | None:
        key = self._signer()
        if key is None:
            return None
        tree = self._tree_at(conn, seq)
        unsigned = Checkpoint(seq=seq, head_hash=head_hash, ts=float(self._clock()),
                              signature="", key_fingerprint=fingerprint(key.public_key()),
                              tree_root=tree.root().hex())
        cp = replace(unsigned, signature=key.sign(unsigned.message()).hex())
        conn.execute(insert(checkpoints_t).values(
            seq=cp.seq, head_hash=cp.head_hash, ts=cp.ts, signature=cp.signature,
            key_fingerprint=cp.key_fingerprint, tree_root=cp.tree_root,
            tree_frontier=tree.dump()))
        self._dirty = False
        return cp

    def _tree_at(self, conn: Connection, seq: int) -> Frontier:
        """The Merkle frontier over events 1..``seq``: this process's, else the latest
        checkpoint's (when it matches its signed root), else from scratch; then brought up to
        ``seq`` from the stored event hashes."""
        tree = self._tree
        if tree is None or tree.size > seq:
            tree = Frontier()
            last = conn.execute(select(checkpoints_t).where(
                checkpoints_t.c.seq <= seq, checkpoints_t.c.tree_frontier.is_not(None))
                .order_by(checkpoints_t.c.seq.desc()).limit(1)).first()
            if last is not None:
                try:
                    loaded = Frontier.load(int(last.seq), last.tree_frontier)
                except (ValueError, TypeError):
                    loaded = None
                if loaded is not None and loaded.root().hex() == last.tree_root:
                    tree = loaded
        rows = conn.execute(select(events_t.c.hash).where(
            events_t.c.seq > tree.size, events_t.c.seq <= seq).order_by(events_t.c.seq))
        for (h,) in rows:
            tree.add(merkle_leaf(h))
        self._tree = tree
        return tree

    def prove(self, seq: int) -> dict[str, object]:
        """An inclusion proof of event ``seq`` in the tree of the latest checkpoint that
        covers it: the event (export form), its leaf index, the audit path (hex, bottom up)
        and the signed checkpoint. Check it offline with :func:`check_proof`."""
        with database.snapshot(self.engine) as conn:
            cp = conn.execute(select(checkpoints_t).where(
                checkpoints_t.c.seq >= seq, checkpoints_t.c.tree_root.is_not(None))
                .order_by(checkpoints_t.c.seq.desc()).limit(1)).first()
            row = conn.execute(select(events_t).where(events_t.c.seq == seq)).first()
            if row is None:
                raise InvalidParameterError(f"there is no audit event {seq}")
            if cp is None:
                raise InvalidParameterError(f"no checkpoint covers event {seq} yet (run "
                                            f"'facesearch audit checkpoint')")
            leaves = [merkle_leaf(h) for h in conn.execute(
                select(events_t.c.hash).where(events_t.c.seq <= cp.seq)
                .order_by(events_t.c.seq)).scalars()]
        path = inclusion_path(seq - 1, leaves)
        checkpoint = Checkpoint(cp.seq, cp.head_hash, cp.ts, cp.signature, cp.key_fingerprint,
                                cp.tree_root)
        return {"event": _record_from_row(row).to_json(), "leaf_index": seq - 1,
                "tree_size": cp.seq, "audit_path": [p.hex() for p in path],
                "checkpoint": checkpoint.to_json()}

    def checkpoint(self) -> Checkpoint | None:
        """Sign the current head (unless the latest checkpoint already covers it) and return
        the latest checkpoint; None when the log is empty or has no signing key."""
        if self.signing_key_path is None:
            return None
        with self._lock:
            with self._write() as conn:
                head = conn.execute(select(events_t.c.seq, events_t.c.hash)
                                    .order_by(events_t.c.seq.desc()).limit(1)).first()
                last = conn.execute(select(checkpoints_t)
                                    .order_by(checkpoints_t.c.seq.desc()).limit(1)).first()
                if head is None:
                    return None
                if last is not None and last.seq >= head.seq:
                    self._dirty = False
                    return Checkpoint(last.seq, last.head_hash, last.ts, last.signature,
                                      last.key_fingerprint, last.tree_root)
                cp = self._checkpoint(conn, head.seq, head.hash)
            if cp is not None:
                self._publish(cp)
            return cp

    def checkpoints(self) -> list[Checkpoint]:
        """Every stored checkpoint, by seq."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(checkpoints_t).order_by(checkpoints_t.c.seq)).all()
        return [Checkpoint(r.seq, r.head_hash, r.ts, r.signature, r.key_fingerprint,
                           r.tree_root) for r in rows]

    def public_key(self) -> bytes:
        """The checkpoint signing key's public half, PEM (SubjectPublicKeyInfo)."""
        key = self._signer()
        if key is None:
            raise AuditKeyError("this audit log has no signing key")
        return key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)

    def shutdown(self) -> None:
        """Checkpoint what this process appended since the last checkpoint, then close."""
        if self._dirty:
            self.checkpoint()
        self.engine.dispose()

    # -- reading ----------------------------------------------------------------------------

    def find_search(self, search_id: str) -> SearchRecord | None:
        """The search ``search_id`` as its audit records tell it (``search.*`` or
        ``users.search*`` events carrying it), or None: the first record's operation,
        collection and case, and the candidates of all its records (a video job records one
        per batch of up to 1,000 faces, under the job's id). Scans the events' details (no
        index on them): reviews, which ask, are rare."""
        c = events_t.c
        q = (select(c.collection, c.case_ref, c.results, c.operation)
             .where(c.details.contains(f'"search_id": "{search_id}"', autoescape=True))
             .order_by(c.seq))
        first = None
        candidates: set[str] = set()
        with self.engine.connect() as conn:
            for r in conn.execute(q):
                if not r.operation.startswith(("search.", "users.search")):
                    continue
                if first is None:
                    first = r
                elif r.operation != first.operation:
                    continue
                candidates.update(f for f, _ in json.loads(r.results))
        if first is None:
            return None
        return SearchRecord(search_id, first.operation, first.collection, first.case_ref,
                            frozenset(candidates))

    def query(self, actor: str | None = None, case_ref: str | None = None,
              collection: str | None = None, operation: str | None = None,
              since: float | None = None, until: float | None = None, limit: int = 100,
              after_seq: int = 0, purpose: str | None = None,
              search_id: str | None = None, bound_case: str | None = None,
              ) -> tuple[list[AuditRecord], int | None]:
        """Events matching every filter given, by seq, at most ``limit`` after ``after_seq``.

        ``operation`` is exact, or a prefix when it ends with ``*`` (``search.*``); ``since``
        and ``until`` (seconds since the epoch) bound ``ts`` as ``since <= ts < until``;
        ``purpose`` is exact; ``search_id`` keeps the events naming that search (the search
        itself, and the reviews of its candidates). ``bound_case``: the case the asking key is
        bound to; only that case's events are read (:class:`AccessDeniedError` when
        ``case_ref`` names another).
        Returns the page and the cursor (``after_seq``) of the next one, None at the end.
        """
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise InvalidParameterError(f"limit must be 1..{MAX_QUERY_LIMIT}, got {limit}")
        if bound_case is not None:
            if case_ref is not None and case_ref != bound_case:
                raise AccessDeniedError("a key bound to a case reads only its case's events")
            case_ref = bound_case
        c = events_t.c
        q = select(events_t).where(c.seq > after_seq)
        if actor is not None:
            q = q.where(c.actor == actor)
        if case_ref is not None:
            q = q.where(c.case_ref == case_ref)
        if purpose is not None:
            q = q.where(c.purpose == purpose)
        if search_id is not None:
            q = q.where(c.details.contains(f'"search_id": {json.dumps(search_id)}',
                                           autoescape=True))
        if collection is not None:
            q = q.where(c.collection == collection)
        if operation is not None:
            if operation.endswith("*"):
                q = q.where(c.operation.startswith(operation[:-1], autoescape=True))
            else:
                q = q.where(c.operation == operation)
        if since is not None:
            q = q.where(c.ts >= since)
        if until is not None:
            q = q.where(c.ts < until)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(c.seq).limit(limit + 1)).all()
        records = [_record_from_row(r) for r in rows[:limit]]
        return records, (records[-1].seq if len(rows) > limit else None)

    def export(self, fmt: ExportFormat, out: TextIO, actor: str | None = None,
               case_ref: str | None = None, collection: str | None = None,
               operation: str | None = None, since: float | None = None,
               until: float | None = None, purpose: str | None = None,
               bound_case: str | None = None) -> int:
        """Write the matching events to ``out`` as JSON lines or CSV (read a page at a time;
        :func:`~facesearch.governance.audit.export.write_export`); returns how many
        (``bound_case`` as :meth:`query`)."""

        def records() -> Iterator[AuditRecord]:
            cursor: int | None = 0
            while cursor is not None:
                page, cursor = self.query(actor=actor, case_ref=case_ref, collection=collection,
                                          operation=operation, since=since, until=until,
                                          limit=1000, after_seq=cursor, purpose=purpose,
                                          bound_case=bound_case)
                yield from page

        return write_export(fmt, out, records())

    # -- verification -----------------------------------------------------------------------

    def verify(self, public_key: bytes | None = None,
               witness: Sequence[Checkpoint] | None = None) -> VerifyReport:
        """Walk the chain and the checkpoints and report every inconsistency and where.

        Checkpoint signatures are checked against ``public_key`` (PEM, e.g. one an auditor
        exported earlier) or, when None, against this log's own key file. ``witness``:
        checkpoints kept outside the data directory
        (:func:`~facesearch.governance.audit.verify.read_witness`); the chain must
        still hold each one (a cut tail or a rewrite shows, even re-signed with a stolen key).
        """
        trusted: Ed25519PublicKey | None
        if public_key is not None:
            trusted = load_public_key(public_key)
        elif self.signing_key_path is not None and self.signing_key_path.exists():
            trusted = load_public_key(self.public_key())
        else:
            trusted = None
        with database.snapshot(self.engine) as conn:  # one state throughout
            return verify_chain(conn, trusted, witness)
