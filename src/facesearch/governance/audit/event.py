"""The audit event and its canonical form: what is hashed into the chain.

:class:`AuditEvent` (before it is appended), :class:`AuditRecord` (appended: seq, time,
hashes), :class:`SearchRecord` (what the trail says of one search); :func:`canonical_bytes`
and :func:`event_hash`, the exact bytes and hash every event is chained with (any change here
changes every stored hash: :data:`CHAIN_VERSION`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from facesearch.types import Caller

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first event."""
CHAIN_VERSION = 1
"""Version of the canonical serialisation, hashed into every event and checkpoint."""

DetailValue = str | int | float | bool | None

_OPERATION_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


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


def canonical_json(obj: object) -> bytes:
    """Sorted-key compact UTF-8 JSON (no NaN): the form every hash and signature is over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def canonical_raw(seq: object, ts: object, prev_hash: object, operation: object, actor: object,
                  role: object, collection: object, purpose: object, case_ref: object,
                  client: object, probe_sha256: object, threshold: object,
                  model_version: object, results: object, details: object) -> bytes:
    """:func:`canonical_bytes` of an event's fields as stored (also of rows that may have been
    tampered with, hence untyped)."""
    return canonical_json({
        "v": CHAIN_VERSION, "seq": seq, "ts": ts, "prev_hash": prev_hash,
        "operation": operation, "actor": actor, "role": role, "collection": collection,
        "purpose": purpose, "case_ref": case_ref, "client": client,
        "probe_sha256": probe_sha256, "threshold": threshold, "model_version": model_version,
        "results": results, "details": details,
    })


def canonical_bytes(seq: int, ts: float, prev_hash: str, event: AuditEvent) -> bytes:
    """The bytes an event's hash is taken over (sorted-key compact UTF-8 JSON)."""
    e = event
    return canonical_raw(seq, float(ts), prev_hash, e.operation, e.actor, e.role,
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


def record_from_json(o: Mapping[str, Any]) -> AuditRecord:
    """An appended record from its export form (:meth:`AuditRecord.to_json`)."""
    ev = AuditEvent(operation=o["operation"], actor=o["actor"], role=o["role"],
                    collection=o["collection"], purpose=o["purpose"], case_ref=o["case_ref"],
                    client=o["client"], probe_sha256=o["probe_sha256"],
                    threshold=o["threshold"], model_version=o["model_version"],
                    results=tuple((f, s) for f, s in o["results"]), details=o["details"])
    return AuditRecord(seq=int(o["seq"]), ts=float(o["ts"]), event=ev,
                       prev_hash=o["prev_hash"], hash=o["hash"])
