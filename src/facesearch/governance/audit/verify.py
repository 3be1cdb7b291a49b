"""Checking the audit trail: the walk over the chain that classifies every break, the
checkpoints and witnessed checkpoints it must still hold, and inclusion proofs offline."""

from __future__ import annotations

import enum
import hashlib
import json
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, select

from facesearch.governance.audit.chain import (
    AuditKeyError,
    Checkpoint,
    Frontier,
    fingerprint,
    load_public_key,
    merkle_leaf,
    verify_inclusion,
)
from facesearch.governance.audit.event import (
    GENESIS_HASH,
    AuditRecord,
    canonical_raw,
    event_hash,
    record_from_json,
)
from facesearch.storage.schema import checkpoints_t, events_t

_RENUMBER_WINDOW = 8
"""How far (in seq numbers) verify looks for an event's original position."""


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


def _stored_hash(r: Any, seq: int) -> str | None:
    """SHA-256 of a stored row's canonical form as if it were at ``seq``; None if unreadable."""
    try:
        data = canonical_raw(seq, r.ts, r.prev_hash, r.operation, r.actor, r.role,
                             r.collection, r.purpose, r.case_ref, r.client, r.probe_sha256,
                             r.threshold, r.model_version, json.loads(r.results),
                             json.loads(r.details))
    except (ValueError, TypeError):  # malformed JSON or values that are not JSON-able
        return None
    return hashlib.sha256(data).hexdigest()


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
    tree = Frontier()
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
        rec = record_from_json(proof["event"])
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


def verify_chain(conn: Connection, trusted: Ed25519PublicKey | None,
                 witness: Sequence[Checkpoint] | None = None) -> VerifyReport:
    """Walk the chain and the checkpoints as ``conn`` (one snapshot) sees them and report
    every inconsistency and where (:meth:`AuditLog.verify`): checkpoint signatures against
    ``trusted`` (None: none can be checked), and each ``witness`` checkpoint must still hold."""
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
