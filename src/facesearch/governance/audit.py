"""Audit trail: an append-only, hash-chained, signed log of every operation on biometric data.

Each :class:`AuditEvent` says who (actor, role, client address), why (purpose, case reference),
what (operation, collection, probe image hash - never the image -, threshold, model version,
result face ids with similarities) and when (seconds since the epoch, from an injectable
clock). :meth:`AuditLog.record` appends it to its own database (``<home>/audit.db``, or a
PostgreSQL database shared by several API nodes: ``FACESEARCH_AUDIT_DATABASE_URL``), apart
from the metadata database so that erasure and VACUUM there never touch it.

Tamper evidence:

- **Hash chain.** Event ``seq`` (1, 2, ...) stores ``prev_hash`` (the hash of event
  ``seq - 1``; 64 zeros for the first) and ``hash`` = SHA-256 of :func:`canonical_bytes`, a
  sorted-key compact UTF-8 JSON of every field plus ``seq`` and ``prev_hash``. Floats are written
  as their shortest round-trip decimal (``repr``), which is exact: any change to a stored double
  changes the text. Anyone can recompute the chain from an export.
- **Signed checkpoints.** Every ``checkpoint_every`` events, on :meth:`AuditLog.checkpoint` and
  on :meth:`AuditLog.shutdown` (when this process appended something), the head ``(seq, hash)``
  and a timestamp are signed with an Ed25519 key kept in a 0600 PEM file. A checkpoint pins
  everything up to its seq: a consistent rewrite of the chain or a cut tail shows against it.
  An auditor keeps :meth:`AuditLog.public_key` (and, ideally, copies of recent checkpoints)
  outside the data directory and verifies with it, so a replaced key file shows too.

Limits, by construction: someone who can write the file can append well-formed events after the
last checkpoint, and can cut or rewrite events after the last checkpoint unnoticed unless a
checkpoint kept elsewhere covers them. UPDATE and DELETE (and on PostgreSQL TRUNCATE) are
refused by triggers, which stops mistakes, not an attacker with the file or the tables' owner
role; on PostgreSQL a role that may only SELECT and INSERT cannot even do that (see
``docs/deploy.md``).

Concurrency: appends take a lock up front (SQLite's write lock, ``BEGIN IMMEDIATE``; on
PostgreSQL a transaction-scoped advisory lock), then read the head, hash and insert in that
one transaction, so appends from any number of threads, processes and API nodes serialise
into one chain without forks or retries; waiters queue (SQLite: for up to 30 s).
``seq`` (primary key) and ``prev_hash`` / ``hash`` (UNIQUE) would also reject a fork outright
should anything ever write without that lock.
"""

from __future__ import annotations

import csv
import enum
import hashlib
import json
import math
import os
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TextIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import (
    Connection,
    Engine,
    insert,
    select,
)

from facesearch.errors import AccessDeniedError, FaceSearchError, InvalidParameterError
from facesearch.storage import database
from facesearch.storage.crypto import create_secret_file
from facesearch.storage.database import Target
from facesearch.storage.migrate import Schema, upgrade
from facesearch.storage.schema import checkpoints_t, events_t, outbox_applied_t
from facesearch.types import Caller

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first event."""
CHAIN_VERSION = 1
"""Version of the canonical serialisation, hashed into every event and checkpoint."""
MAX_QUERY_LIMIT = 10_000

Clock = Callable[[], float]
DetailValue = str | int | float | bool | None
ExportFormat = Literal["jsonl", "csv"]

_OPERATION_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_RENUMBER_WINDOW = 8
"""How far (in seq numbers) verify looks for an event's original position."""


class AuditKeyError(FaceSearchError):
    """The audit signing key cannot be read, or a given public key is not an Ed25519 key."""

    code = "audit_key"


# -- data -----------------------------------------------------------------------------------

def _opt_str(name: str, v: object) -> str | None:
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise TypeError(f"AuditEvent.{name} must be a string or None, got {type(v).__name__}")
    return v


def _finite(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite, got {f}")
    return f


@dataclass(frozen=True)
class AuditEvent:
    """One operation on biometric data, as recorded (before it gets a seq, time and hash).

    ``threshold`` and ``results`` similarities are on the 0-100 similarity scale;
    ``probe_sha256`` is the hex SHA-256 of the probe image's bytes; ``details`` holds further
    flat facts (counts, receipt ids...). Empty strings mean "not given" and become None.
    """

    operation: str
    """Dotted lower-case name: ``search.image``, ``index``, ``faces.delete``, ``policy.set``..."""
    actor: str
    """Access key id, or ``local:<os user>``."""
    role: str | None = None
    collection: str | None = None
    purpose: str | None = None
    case_ref: str | None = None
    client: str | None = None
    """Remote address, if any."""
    probe_sha256: str | None = None
    threshold: float | None = None
    model_version: str | None = None
    results: tuple[tuple[str, float | None], ...] = ()
    """``(face_id, similarity)`` pairs in result order; similarity None where there is none
    (faces indexed, deleted, reviewed)."""
    details: Mapping[str, DetailValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.operation, str) or not _OPERATION_RE.fullmatch(self.operation):
            raise ValueError(f"AuditEvent.operation must be a dotted lower-case name, "
                             f"got {self.operation!r}")
        if not isinstance(self.actor, str):
            raise TypeError(f"AuditEvent.actor must be a string, got {type(self.actor).__name__}")
        if not self.actor:
            raise ValueError("AuditEvent.actor must not be empty")
        for name in ("role", "collection", "purpose", "case_ref", "client", "model_version"):
            object.__setattr__(self, name, _opt_str(name, getattr(self, name)))
        sha = _opt_str("probe_sha256", self.probe_sha256)
        if sha is not None and not _SHA256_RE.fullmatch(sha):
            raise ValueError("AuditEvent.probe_sha256 must be 64 lower-case hex digits")
        object.__setattr__(self, "probe_sha256", sha)
        if self.threshold is not None:
            object.__setattr__(self, "threshold", _finite("AuditEvent.threshold", self.threshold))
        results: list[tuple[str, float | None]] = []
        for face_id, similarity in self.results:
            if not isinstance(face_id, str) or not face_id:
                raise ValueError(f"AuditEvent.results face id must be a non-empty string, "
                                 f"got {face_id!r}")
            results.append((face_id, None if similarity is None
                            else _finite("AuditEvent.results similarity", similarity)))
        object.__setattr__(self, "results", tuple(results))
        details: dict[str, DetailValue] = {}
        for key in sorted(self.details):
            value = self.details[key]
            if not isinstance(key, str) or not key:
                raise ValueError(f"AuditEvent.details key must be a non-empty string, "
                                 f"got {key!r}")
            if isinstance(value, float):
                value = _finite(f"AuditEvent.details[{key!r}]", value)
            elif value is not None and not isinstance(value, (str, int, bool)):
                raise TypeError(f"AuditEvent.details[{key!r}] must be str, int, float, bool or "
                                 f"None, got {type(value).__name__}")
            details[key] = value
        object.__setattr__(self, "details", MappingProxyType(details))

    @classmethod
    def of(cls, caller: Caller, operation: str, *, collection: str | None = None,
           probe_sha256: str | None = None, threshold: float | None = None,
           model_version: str | None = None,
           results: Iterable[tuple[str, float | None]] = (),
           details: Mapping[str, DetailValue] | None = None) -> AuditEvent:
        """The event of ``operation`` done by ``caller`` (who, role, purpose, case, client)."""
        return cls(operation=operation, actor=caller.actor, role=caller.role,
                   collection=collection, purpose=caller.purpose, case_ref=caller.case_ref,
                   client=caller.client, probe_sha256=probe_sha256, threshold=threshold,
                   model_version=model_version, results=tuple(results),
                   details=dict(details or {}))


@dataclass(frozen=True)
class AuditRecord:
    """An appended event: its position ``seq`` (from 1), time ``ts`` (seconds since the epoch),
    and the chain hashes (hex SHA-256)."""

    seq: int
    ts: float
    event: AuditEvent
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, object]:
        """The export form: flat, JSON-able, every field (results as ``[[face_id, sim]]``)."""
        e = self.event
        return {"seq": self.seq, "ts": self.ts, "operation": e.operation, "actor": e.actor,
                "role": e.role, "collection": e.collection, "purpose": e.purpose,
                "case_ref": e.case_ref, "client": e.client, "probe_sha256": e.probe_sha256,
                "threshold": e.threshold, "model_version": e.model_version,
                "results": [[f, s] for f, s in e.results], "details": dict(e.details),
                "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True)
class SearchRecord:
    """What the audit trail says of one search: its operation, collection, case and the face
    ids of its candidates."""

    search_id: str
    operation: str
    collection: str | None
    case_ref: str | None
    candidates: frozenset[str]


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement "the chain's event ``seq`` has hash ``head_hash``", made at ``ts``
    (seconds since the epoch). ``signature`` is hex Ed25519 over :meth:`message`;
    ``key_fingerprint`` is the hex SHA-256 of the raw 32-byte public key."""

    seq: int
    head_hash: str
    ts: float
    signature: str
    key_fingerprint: str
    tree_root: str | None = None
    """Hex RFC 9162 Merkle tree root over the first ``seq`` event hashes (signed with the
    rest; None in checkpoints made before the tree)."""

    def message(self) -> bytes:
        body: dict[str, object] = {"v": CHAIN_VERSION, "type": "facesearch-audit-checkpoint",
                                   "seq": self.seq, "head_hash": self.head_hash, "ts": self.ts,
                                   "key": self.key_fingerprint}
        if self.tree_root is not None:
            body["tree_root"] = self.tree_root
        return _canonical_json(body)

    def to_json(self) -> dict[str, object]:
        return {"seq": self.seq, "head_hash": self.head_hash, "ts": self.ts,
                "signature": self.signature, "key_fingerprint": self.key_fingerprint,
                "tree_root": self.tree_root}


class ProblemKind(str, enum.Enum):
    """What :meth:`AuditLog.verify` found."""

    EDITED = "edited"
    """An event's content no longer matches its hash."""
    DELETED = "deleted"
    """Events are missing (a seq gap, or an event links to a hash no event has any more)."""
    INSERTED = "inserted"
    """Events sit in the chain that the following event does not link through."""
    REORDERED = "reordered"
    """Events are out of order (an event links to a later one)."""
    RENUMBERED = "renumbered"
    """Authentic events carry another seq than they were written with."""
    BROKEN_LINK = "broken_link"
    """An event does not link to its predecessor: one of the two was replaced."""
    TRUNCATED = "truncated"
    """A signed checkpoint refers to events that are no longer there."""
    REWRITTEN = "rewritten"
    """The chain at a signed checkpoint's seq differs from what was signed."""
    CHECKPOINT_FORGED = "checkpoint_forged"
    """A checkpoint's signature is invalid or made with another key."""
    KEY_MISSING = "key_missing"
    """There are checkpoints but no public key to check them with."""


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    seq: int
    """Where: the (first) event seq concerned."""
    message: str


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :meth:`AuditLog.verify`; ``problems`` are ordered by seq."""

    events: int
    head_seq: int
    head_hash: str
    checkpoints: int
    checkpoints_valid: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


# -- canonical form and keys ----------------------------------------------------------------

def _canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _canonical_raw(seq: object, ts: object, prev_hash: object, operation: object, actor: object,
                   role: object, collection: object, purpose: object, case_ref: object,
                   client: object, probe_sha256: object, threshold: object,
                   model_version: object, results: object, details: object) -> bytes:
    return _canonical_json({
        "v": CHAIN_VERSION, "seq": seq, "ts": ts, "prev_hash": prev_hash,
        "operation": operation, "actor": actor, "role": role, "collection": collection,
        "purpose": purpose, "case_ref": case_ref, "client": client,
        "probe_sha256": probe_sha256, "threshold": threshold, "model_version": model_version,
        "results": results, "details": details,
    })


def canonical_bytes(seq: int, ts: float, prev_hash: str, event: AuditEvent) -> bytes:
    """The bytes an event's hash is taken over (sorted-key compact UTF-8 JSON)."""
    e = event
    return _canonical_raw(seq, float(ts), prev_hash, e.operation, e.actor, e.role,
                          e.collection, e.purpose, e.case_ref, e.client, e.probe_sha256,
                          e.threshold, e.model_version, [[f, s] for f, s in e.results],
                          dict(e.details))


def event_to_json(event: AuditEvent) -> str:
    """An event (not yet appended) as JSON, e.g. for an outbox row; :func:`event_from_json`
    reads it back."""
    e = event
    return json.dumps({"operation": e.operation, "actor": e.actor, "role": e.role,
                       "collection": e.collection, "purpose": e.purpose,
                       "case_ref": e.case_ref, "client": e.client,
                       "probe_sha256": e.probe_sha256, "threshold": e.threshold,
                       "model_version": e.model_version,
                       "results": [[f, s] for f, s in e.results], "details": dict(e.details)},
                      sort_keys=True, allow_nan=False)


def event_from_json(text: str) -> AuditEvent:
    o = json.loads(text)
    return AuditEvent(operation=o["operation"], actor=o["actor"], role=o["role"],
                      collection=o["collection"], purpose=o["purpose"], case_ref=o["case_ref"],
                      client=o["client"], probe_sha256=o["probe_sha256"],
                      threshold=o["threshold"], model_version=o["model_version"],
                      results=tuple((f, s) for f, s in o["results"]), details=o["details"])


def event_hash(seq: int, ts: float, prev_hash: str, event: AuditEvent) -> str:
    """Hex SHA-256 of :func:`canonical_bytes`."""
    return hashlib.sha256(canonical_bytes(seq, ts, prev_hash, event)).hexdigest()


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """Hex SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (as :meth:`AuditLog.public_key` exports it)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise AuditKeyError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditKeyError("the public key is not an Ed25519 key")
    return key


def _load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Load the signing key, or create it (0600 PEM) without clobbering one made concurrently."""
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        create_secret_file(path, pem)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise AuditKeyError(f"cannot read the audit signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{path} is not an Ed25519 private key")
    return key


# -- Merkle tree (RFC 9162, section 2.1) ----------------------------------------------------
# Leaves are the events' 32-byte hashes, in seq order: leaf i (from 0) is event seq i + 1.

def merkle_leaf(event_hash_hex: str) -> bytes:
    return hashlib.sha256(b"\x00" + bytes.fromhex(event_hash_hex)).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (:func:`merkle_leaf`)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)  # largest power of 2 below n
    return _node(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


def inclusion_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(index, leaves): the audit path of leaf ``index``, bottom up."""
    if len(leaves) <= 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if index < k:
        return inclusion_path(index, leaves[:k]) + [merkle_root(leaves[k:])]
    return inclusion_path(index - k, leaves[k:]) + [merkle_root(leaves[:k])]


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes],
                     root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: whether ``leaf`` is leaf ``index`` of the tree of ``size``
    leaves whose root is ``root``."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


class _Frontier:
    """The roots of the perfect subtrees of a growing Merkle tree: O(log n) state from which
    the root of the first n leaves follows."""

    def __init__(self, size: int = 0, nodes: Sequence[tuple[int, bytes]] = ()) -> None:
        self.size = size
        self.nodes = list(nodes)  # (leaf count, hash), counts decreasing

    def add(self, leaf: bytes) -> None:
        self.nodes.append((1, leaf))
        self.size += 1
        while len(self.nodes) >= 2 and self.nodes[-1][0] == self.nodes[-2][0]:
            (n, left), (_, right) = self.nodes[-2], self.nodes[-1]
            self.nodes[-2:] = [(2 * n, _node(left, right))]

    def root(self) -> bytes:
        if not self.nodes:
            return hashlib.sha256(b"").digest()
        r = self.nodes[-1][1]
        for _, h in reversed(self.nodes[:-1]):
            r = _node(h, r)
        return r

    def dump(self) -> str:
        return json.dumps([[n, h.hex()] for n, h in self.nodes])

    @classmethod
    def load(cls, size: int, text: str) -> _Frontier:
        nodes = [(int(n), bytes.fromhex(h)) for n, h in json.loads(text)]
        if sum(n for n, _ in nodes) != size:
            raise ValueError("frontier does not add up to its size")
        return cls(size, nodes)


# -- schema: storage/schema.py (audit_metadata, events_t, checkpoints_t, outbox_applied_t) ---

_APPEND_LOCK = database.lock_key("audit-append")
"""The advisory lock every append and checkpoint holds on PostgreSQL."""


def _record_from_row(r: Any) -> AuditRecord:
    ev = AuditEvent(
        operation=r.operation, actor=r.actor, role=r.role, collection=r.collection,
        purpose=r.purpose, case_ref=r.case_ref, client=r.client, probe_sha256=r.probe_sha256,
        threshold=r.threshold, model_version=r.model_version,
        results=tuple((f, s) for f, s in json.loads(r.results)), details=json.loads(r.details))
    return AuditRecord(seq=r.seq, ts=r.ts, event=ev, prev_hash=r.prev_hash, hash=r.hash)


def _stored_hash(r: Any, seq: int) -> str | None:
    """SHA-256 of a stored row's canonical form as if it were at ``seq``; None if unreadable."""
    try:
        data = _canonical_raw(seq, r.ts, r.prev_hash, r.operation, r.actor, r.role,
                              r.collection, r.purpose, r.case_ref, r.client, r.probe_sha256,
                              r.threshold, r.model_version, json.loads(r.results),
                              json.loads(r.details))
    except (ValueError, TypeError):  # malformed JSON or values that are not JSON-able
        return None
    return hashlib.sha256(data).hexdigest()


CSV_FIELDS = ("seq", "ts", "operation", "actor", "role", "collection", "purpose", "case_ref",
              "client", "probe_sha256", "threshold", "model_version", "results", "details",
              "prev_hash", "hash")


# -- the log --------------------------------------------------------------------------------

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
        :func:`read_witness`)."""
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
        self._tree: _Frontier | None = None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A transaction holding the chain's write lock from its start."""
        with database.exclusive(self.engine, _APPEND_LOCK) as conn:
            yield conn

    def _signer(self) -> Ed25519PrivateKey | None:
        if self._key is None and self.signing_key_path is not None:
            self._key = _load_or_create_key(self.signing_key_path)
        return self._key

    # -- writing ----------------------------------------------------------------------------

    def record(self, event: AuditEvent) -> AuditRecord:
        """Append ``event`` (time from the clock) and return it as chained; may checkpoint."""
        return self.record_many([event])[0]

    def record_many(self, events: Sequence[AuditEvent],
                    outbox_ids: Sequence[str] | None = None) -> list[AuditRecord]:
        """Append several events in one write transaction (one sync to disk), in order.

        ``outbox_ids`` (one per event) name the outbox rows the events come from: an event
        whose id was appended before is skipped, so replaying an outbox appends each once.
        """
        out: list[AuditRecord] = []
        if not events:
            return out
        if outbox_ids is not None and len(outbox_ids) != len(events):
            raise ValueError("record_many: one outbox id per event")
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
                    rows.append(dict(
                        seq=seq, ts=ts, operation=e.operation, actor=e.actor, role=e.role,
                        collection=e.collection, purpose=e.purpose, case_ref=e.case_ref,
                        client=e.client, probe_sha256=e.probe_sha256, threshold=e.threshold,
                        model_version=e.model_version,
                        results=json.dumps([[f, s] for f, s in e.results]),
                        details=json.dumps(dict(e.details), sort_keys=True),
                        prev_hash=prev, hash=digest))
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

    def _tree_at(self, conn: Connection, seq: int) -> _Frontier:
        """The Merkle frontier over events 1..``seq``: this process's, else the latest
        checkpoint's (when it matches its signed root), else from scratch; then brought up to
        ``seq`` from the stored event hashes."""
        tree = self._tree
        if tree is None or tree.size > seq:
            tree = _Frontier()
            last = conn.execute(select(checkpoints_t).where(
                checkpoints_t.c.seq <= seq, checkpoints_t.c.tree_frontier.is_not(None))
                .order_by(checkpoints_t.c.seq.desc()).limit(1)).first()
            if last is not None:
                try:
                    loaded = _Frontier.load(int(last.seq), last.tree_frontier)
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
        """Write the matching events to ``out`` as JSON lines or CSV (a page at a time);
        returns how many (``bound_case`` as :meth:`query`). CSV cells hold results and details as JSON, None as empty."""
        if fmt not in ("jsonl", "csv"):
            raise InvalidParameterError(f"export format must be jsonl or csv, got {fmt!r}")
        writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if writer is not None:
            writer.writerow(CSV_FIELDS)
        n, cursor = 0, 0
        while True:
            page, nxt = self.query(actor=actor, case_ref=case_ref, collection=collection,
                                   operation=operation, since=since, until=until,
                                   limit=1000, after_seq=cursor, purpose=purpose,
                                   bound_case=bound_case)
            for rec in page:
                obj = rec.to_json()
                if writer is None:
                    out.write(json.dumps(obj, ensure_ascii=False) + "\n")
                else:
                    writer.writerow([_csv_cell(obj[k]) for k in CSV_FIELDS])
            n += len(page)
            if nxt is None:
                return n
            cursor = nxt

    # -- verification -----------------------------------------------------------------------

    def verify(self, public_key: bytes | None = None,
               witness: Sequence[Checkpoint] | None = None) -> VerifyReport:
        """Walk the chain and the checkpoints and report every inconsistency and where.

        Checkpoint signatures are checked against ``public_key`` (PEM, e.g. one an auditor
        exported earlier) or, when None, against this log's own key file. ``witness``:
        checkpoints kept outside the data directory (:func:`read_witness`); the chain must
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
            walk = _ChainWalk(conn)
            walk.run()
            cps = conn.execute(select(checkpoints_t).order_by(checkpoints_t.c.seq)).all()
            problems = walk.problems
            valid = _check_checkpoints(conn, cps, trusted, walk, problems)
            if witness is not None:
                _check_witness(conn, witness, trusted, walk, problems)
        problems.sort(key=lambda p: (p.seq, p.kind.value))
        return VerifyReport(events=walk.count, head_seq=walk.head_seq, head_hash=walk.head_hash,
                            checkpoints=len(cps), checkpoints_valid=valid,
                            problems=tuple(problems))


def _csv_cell(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False, sort_keys=True)
    return str(v)  # str(float) is the shortest round-trip repr


def load_export(fmt: ExportFormat, inp: TextIO) -> Iterator[AuditRecord]:
    """Read back what :meth:`AuditLog.export` wrote (for offline checks and imports)."""
    if fmt == "jsonl":
        for line in inp:
            if line.strip():
                yield _record_from_json(json.loads(line))
    elif fmt == "csv":
        for row in csv.DictReader(inp):
            obj: dict[str, object] = {k: (v if v != "" else None) for k, v in row.items()}
            for k in ("results", "details"):
                obj[k] = json.loads(row[k])
            obj["seq"] = int(row["seq"])
            obj["ts"] = float(row["ts"])
            obj["threshold"] = None if row["threshold"] == "" else float(row["threshold"])
            yield _record_from_json(obj)
    else:
        raise InvalidParameterError(f"export format must be jsonl or csv, got {fmt!r}")


def _record_from_json(o: Mapping[str, Any]) -> AuditRecord:
    ev = AuditEvent(operation=o["operation"], actor=o["actor"], role=o["role"],
                    collection=o["collection"], purpose=o["purpose"], case_ref=o["case_ref"],
                    client=o["client"], probe_sha256=o["probe_sha256"],
                    threshold=o["threshold"], model_version=o["model_version"],
                    results=tuple((f, s) for f, s in o["results"]), details=o["details"])
    return AuditRecord(seq=int(o["seq"]), ts=float(o["ts"]), event=ev,
                       prev_hash=o["prev_hash"], hash=o["hash"])


class _ChainWalk:
    """One pass over the events in seq order, classifying every break in the chain."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.problems: list[Problem] = []
        self.count = 0
        self.head_seq = 0
        self.head_hash = GENESIS_HASH
        self.moved: list[tuple[int, int]] = []  # (stored seq, seq it was written with)
        self._moved_seqs: list[int] = []
        self.edited: set[int] = set()
        self.reordered: set[int] = set()
        self._shift = 0

    def _add(self, kind: ProblemKind, seq: int, message: str) -> None:
        self.problems.append(Problem(kind, seq, message))

    def _rows(self) -> Iterator[Any]:
        after = 0
        while True:
            rows = self.conn.execute(select(events_t).where(events_t.c.seq > after)
                                     .order_by(events_t.c.seq).limit(2000)).all()
            yield from rows
            if len(rows) < 2000:
                return
            after = rows[-1].seq

    def _original_seq(self, r: Any) -> int | None:
        """The seq the stored row hashes correctly at (its own, or a nearby one)."""
        if _stored_hash(r, r.seq) == r.hash:
            return int(r.seq)
        offsets = [self._shift] if self._shift else []
        offsets += [d for k in range(1, _RENUMBER_WINDOW + 1) for d in (k, -k)]
        for d in offsets:
            if r.seq + d >= 1 and _stored_hash(r, r.seq + d) == r.hash:
                self._shift = d
                return int(r.seq + d)
        return None

    def _seq_of_hash(self, h: str) -> int | None:
        return self.conn.execute(select(events_t.c.seq).where(events_t.c.hash == h)
                                 .limit(1)).scalar()

    def _any_moved(self, lo: int, hi: int) -> bool:
        """Whether an event with stored seq in ``[lo, hi]`` is authentic but misplaced."""
        i = bisect_left(self._moved_seqs, lo)
        return i < len(self._moved_seqs) and self._moved_seqs[i] <= hi

    def run(self) -> None:
        prev: Any = None
        for r in self._rows():
            self.count += 1
            expected_seq = 1 if prev is None else prev.seq + 1
            expected_prev = GENESIS_HASH if prev is None else prev.hash
            orig = self._original_seq(r)
            if orig is None:
                self.edited.add(r.seq)
                self._add(ProblemKind.EDITED, r.seq,
                          f"event {r.seq} does not match its hash: its content was changed")
            elif orig != r.seq:
                self.moved.append((r.seq, orig))
                self._moved_seqs.append(r.seq)
            gap = r.seq - expected_seq
            if gap > 0:
                last = r.seq - 1
                span = f"event {expected_seq}" if gap == 1 else f"events {expected_seq}-{last}"
                self._add(ProblemKind.DELETED, expected_seq, f"{span} missing (seq gap)")
            elif orig is not None and r.prev_hash != expected_prev:
                self._classify_link(r, prev, orig)
            prev = r
        if prev is not None:
            self.head_seq, self.head_hash = int(prev.seq), str(prev.hash)
        self._report_moved_runs()

    def _classify_link(self, r: Any, prev: Any, orig: int) -> None:
        target = self._seq_of_hash(r.prev_hash) if r.prev_hash != GENESIS_HASH else 0
        pseq = 0 if prev is None else int(prev.seq)
        if target is None:
            if orig > r.seq:
                n = orig - r.seq
                self._add(ProblemKind.DELETED, r.seq,
                          f"{n} event(s) deleted before event {r.seq}, and the later events "
                          f"renumbered to hide the gap")
            elif pseq not in self.edited:
                self._add(ProblemKind.BROKEN_LINK, r.seq,
                          f"event {r.seq} does not link to event {pseq}: one of them was "
                          f"replaced")
        elif target >= r.seq:
            self.reordered.add(r.seq)
            self._add(ProblemKind.REORDERED, r.seq,
                      f"event {r.seq} links to event {target}, which comes after it")
        elif target < pseq and not self._any_moved(target + 1, pseq):
            span = f"event {pseq}" if target + 1 == pseq else f"events {target + 1}-{pseq}"
            self._add(ProblemKind.INSERTED, target + 1,
                      f"{span} inserted: event {r.seq} links to event {target}")

    def _report_moved_runs(self) -> None:
        runs: list[list[tuple[int, int]]] = []
        for s, o in self.moved:
            if runs and runs[-1][-1][0] == s - 1:
                runs[-1].append((s, o))
            else:
                runs.append([(s, o)])
        for run in runs:
            stored = [s for s, _ in run]
            first, last = stored[0], stored[-1]
            if sorted(o for _, o in run) == stored:
                if not any(first <= s <= last for s in self.reordered):
                    self._add(ProblemKind.REORDERED, first,
                              f"events {first}-{last} are in another order than written")
            else:
                shift = run[0][0] - run[0][1]
                span = f"event {first}" if first == last else f"events {first}-{last}"
                self._add(ProblemKind.RENUMBERED, first,
                          f"{span} were written as seq {run[0][1]}-{run[-1][1]} "
                          f"(shifted by {shift:+d}): events were inserted or deleted before")


def _check_checkpoints(conn: Connection, cps: Sequence[Any], trusted: Ed25519PublicKey | None,
                       walk: _ChainWalk, problems: list[Problem]) -> int:
    """Check signatures and what each checkpoint pins; returns how many verified."""
    if trusted is None:
        if cps:
            problems.append(Problem(ProblemKind.KEY_MISSING, int(cps[0].seq),
                                    f"{len(cps)} checkpoint(s) but no public key to verify them"))
        return 0
    valid = 0
    truncated_to: int | None = None
    want_fp = fingerprint(trusted)
    for r in cps:
        cp = Checkpoint(r.seq, r.head_hash, r.ts, r.signature, r.key_fingerprint, r.tree_root)
        if cp.key_fingerprint != want_fp:
            problems.append(Problem(ProblemKind.CHECKPOINT_FORGED, int(cp.seq),
                                    f"checkpoint at event {cp.seq} is signed by another key "
                                    f"({cp.key_fingerprint[:16]}...)"))
            continue
        try:
            trusted.verify(bytes.fromhex(cp.signature), cp.message())
        except (InvalidSignature, ValueError, TypeError):
            problems.append(Problem(ProblemKind.CHECKPOINT_FORGED, int(cp.seq),
                                    f"checkpoint at event {cp.seq} has an invalid signature"))
            continue
        valid += 1
        if cp.seq > walk.head_seq:
            truncated_to = cp.seq
            continue
        stored = conn.execute(select(events_t.c.hash).where(events_t.c.seq == cp.seq)).scalar()
        if stored is not None and stored != cp.head_hash:
            problems.append(Problem(ProblemKind.REWRITTEN, int(cp.seq),
                                    f"event {cp.seq} differs from the signed checkpoint: the "
                                    f"chain up to it was rewritten"))
    if truncated_to is not None:
        first = walk.head_seq + 1
        problems.append(Problem(ProblemKind.TRUNCATED, first,
                                f"events from {first} on were removed: a signed checkpoint "
                                f"covers event {truncated_to}"))
    _check_tree_roots(conn, [r for r in cps if r.tree_root is not None and
                             r.key_fingerprint == want_fp and r.seq <= walk.head_seq],
                      problems)
    return valid


def _check_tree_roots(conn: Connection, cps: Sequence[Any], problems: list[Problem]) -> None:
    """The Merkle root signed in each checkpoint must be the root over the stored events
    (reported only where no earlier problem already explains a difference)."""
    first = min((p.seq for p in problems), default=None)
    want = {int(r.seq): str(r.tree_root) for r in cps if first is None or int(r.seq) < first}
    if not want:
        return
    tree = _Frontier()
    top = max(want)
    for (h,) in conn.execute(select(events_t.c.hash).where(events_t.c.seq <= top)
                             .order_by(events_t.c.seq)):
        tree.add(merkle_leaf(h))
        if tree.size in want and tree.root().hex() != want[tree.size]:
            problems.append(Problem(ProblemKind.REWRITTEN, tree.size,
                                    f"the Merkle root signed at event {tree.size} differs from "
                                    f"the events stored: the chain up to it was rewritten"))


def read_witness(path: Path) -> list[Checkpoint]:
    """The checkpoints in a witness file (as :class:`AuditLog` appends them), in file order."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuditKeyError(f"cannot read the witness file {path}: {exc.strerror}") from None
    out: list[Checkpoint] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            o = json.loads(line)
            root = o.get("tree_root")
            out.append(Checkpoint(int(o["seq"]), str(o["head_hash"]), float(o["ts"]),
                                  str(o["signature"]), str(o["key_fingerprint"]),
                                  None if root is None else str(root)))
        except (ValueError, KeyError, TypeError):
            raise AuditKeyError(f"{path}:{n}: not a checkpoint line") from None
    return out


def _check_witness(conn: Connection, witness: Sequence[Checkpoint],
                   trusted: Ed25519PublicKey | None, walk: _ChainWalk,
                   problems: list[Problem]) -> None:
    """Hold the chain to checkpoints kept elsewhere: each must still be in it, unchanged."""
    want_fp = fingerprint(trusted) if trusted is not None else None
    cut: int | None = None
    for cp in witness:
        if trusted is not None:
            try:
                if cp.key_fingerprint != want_fp:
                    raise InvalidSignature
                trusted.verify(bytes.fromhex(cp.signature), cp.message())
            except (InvalidSignature, ValueError, TypeError):
                problems.append(Problem(ProblemKind.CHECKPOINT_FORGED, cp.seq,
                                        f"witnessed checkpoint at event {cp.seq} is not "
                                        f"signed by the trusted key"))
                continue
        if cp.seq > walk.head_seq:
            cut = max(cut or 0, cp.seq)
            continue
        stored = conn.execute(select(events_t.c.hash).where(events_t.c.seq == cp.seq)).scalar()
        if stored != cp.head_hash:
            problems.append(Problem(ProblemKind.REWRITTEN, cp.seq,
                                    f"event {cp.seq} differs from the witnessed checkpoint: "
                                    f"the chain up to it was rewritten"))
    if cut is not None:
        first = walk.head_seq + 1
        problems.append(Problem(ProblemKind.TRUNCATED, first,
                                f"events from {first} on were removed: a witnessed checkpoint "
                                f"covers event {cut}"))


def check_proof(proof: Mapping[str, Any], public_key: bytes) -> AuditRecord:
    """Check an inclusion proof (:meth:`AuditLog.prove`) offline: the event matches its hash,
    its leaf is in the signed tree, and the checkpoint is signed by ``public_key`` (PEM).
    Returns the proven event; raises :class:`AuditKeyError` saying what failed."""
    try:
        rec = _record_from_json(proof["event"])
        c = proof["checkpoint"]
        cp = Checkpoint(int(c["seq"]), str(c["head_hash"]), float(c["ts"]), str(c["signature"]),
                        str(c["key_fingerprint"]), str(c["tree_root"]))
        index, size = int(proof["leaf_index"]), int(proof["tree_size"])
        path = [bytes.fromhex(p) for p in proof["audit_path"]]
        root = bytes.fromhex(cp.tree_root or "")
    except (KeyError, TypeError, ValueError) as exc:
        raise AuditKeyError(f"not an inclusion proof: {exc}") from None
    if event_hash(rec.seq, rec.ts, rec.prev_hash, rec.event) != rec.hash:
        raise AuditKeyError(f"event {rec.seq} does not match its hash")
    trusted = load_public_key(public_key)
    try:
        if cp.key_fingerprint != fingerprint(trusted):
            raise InvalidSignature
        trusted.verify(bytes.fromhex(cp.signature), cp.message())
    except (InvalidSignature, ValueError):
        raise AuditKeyError("the checkpoint is not signed by the given key") from None
    if size != cp.seq or index != rec.seq - 1 or not verify_inclusion(
            merkle_leaf(rec.hash), index, size, path, root):
        raise AuditKeyError(f"event {rec.seq} is not in the tree of the checkpoint at "
                            f"event {cp.seq}")
    return rec
