"""Erasure for good, with receipts, and retention.

A face is erased by deleting its row, vector and review crop with SQLite's ``secure_delete``
(the pages are overwritten), truncating the write-ahead log, and rewriting the collection's
index file (the old one still held the vector). Image records left without faces go too, and
so do the rows derived from the faces (video job results naming them), in the same
transaction; once it commits, the stream snapshots of matches to them (files,
:mod:`facesearch.storage.snapshots`) are removed, and a snapshot that cannot be removed is
logged and named in the audit event (``snapshots_failed``). Every erasure returns an
:class:`ErasureReceipt` and is audited.

Retention: :meth:`Erasure.expire` erases the faces older than their collection's
``retention_days`` (the server calls it hourly, :mod:`facesearch.governance.retention`).

Deleting faces by id (:meth:`Erasure.delete_faces`: Rekognition's DeleteFaces, ``facesearch
faces delete``, ``/v1/.../faces/delete``) leaves a face that belongs to a user alone, as
Rekognition does (reason ``ASSOCIATED_TO_AN_EXISTING_USER``): disassociate it first, so that a
user is never emptied as a side effect. Erasure (:meth:`Erasure.erase`, the governance path:
``facesearch erase``, EraseFaces) is not held back by an association: a person's right to
erasure does not depend on how their faces were grouped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facesearch import limits
from facesearch.errors import InvalidParameterError, UserNotFoundError
from facesearch.governance.policy import of_collection
from facesearch.governance.trail import AuditTrail
from facesearch.storage.snapshots import remove_snapshots
from facesearch.storage.store import Store
from facesearch.storage.vectors import VectorBackend
from facesearch.types import Caller


@dataclass(frozen=True)
class Deletion:
    """What deleting faces by id did: ``deleted`` and ``not_found`` (ids in request order),
    and ``associated``: faces of a user, left alone (disassociate them first, or erase)."""

    deleted: list[str]
    not_found: list[str]
    associated: list[str]


@dataclass(frozen=True)
class ErasureReceipt:
    """Proof of an erasure: what went, when, and the audit event that records it."""

    receipt_id: str
    collection: str
    face_ids: list[str]
    images_erased: int
    erased_at: float
    reason: str
    derived_erased: int = 0
    """Records derived from these faces that went too: stream snapshots of matches to them,
    video job results naming them."""
    crops_erased: int = 0
    """Review crops (small JPEGs of the faces) that went with them."""
    vector_copies: str = ""
    """Where copies of the erased vectors outlive the erasure in the vector backend, and for
    how long (:attr:`facesearch.storage.vectors.VectorBackend.erasure_bound`)."""


class Erasure:
    """Erases faces of one data directory's collections (``snapshots``: the folder of its
    stream snapshots, ``<home>/snapshots``; None: there are none to remove)."""

    def __init__(self, store: Store, indexes: VectorBackend, trail: AuditTrail, *,
                 snapshots: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.indexes = indexes
        self.trail = trail
        self.snapshots = snapshots
        self.clock = clock

    def delete_faces(self, collection: str, face_ids: Sequence[str], *,
                     caller: Caller | None = None) -> Deletion:
        """Delete (erase) faces by id, but those that belong to a user (see the module
        docstring)."""
        for fid in face_ids:
            limits.face_id(fid)
        receipt, kept = self._erase(collection, "delete", caller, face_ids=face_ids,
                                    keep_user_faces=True)
        gone = set(receipt.face_ids)
        asked = list(dict.fromkeys(face_ids))
        return Deletion([f for f in asked if f in gone], [f for f in asked
                                                          if f not in gone and f not in kept],
                        [f for f in asked if f in kept])

    def erase(self, collection: str, *, face_ids: Sequence[str] | None = None,
              external_id: str | None = None, user_id: str | None = None,
              caller: Caller | None = None) -> ErasureReceipt:
        """Erase faces for good, chosen by face ids, external id or user (with the user)."""
        if sum(x is not None for x in (face_ids, external_id, user_id)) != 1:
            raise InvalidParameterError("erase by exactly one of: face ids, external id, user id")
        for fid in face_ids or ():
            limits.face_id(fid)
        return self._erase(collection, "erase", caller, face_ids=face_ids,
                           external_id=external_id, user_id=user_id)[0]

    def expire(self, now: float | None = None) -> list[ErasureReceipt]:
        """Erase faces older than their collection's retention period (as of ``now``)."""
        now = self.clock() if now is None else now
        receipts = []
        with self.store.transaction() as conn:
            colls = self.store.collections.list_all(conn)
        for coll in colls:
            days = of_collection(coll.settings, None)[1].retention_days
            if days is None:
                continue
            with self.store.transaction() as conn:
                old = self.store.faces.rows_older_than(conn, coll.id, now - days * 86400.0)
            if old:
                receipts.append(self._erase(coll.name, "expire",
                                            Caller("system:retention", role="system"),
                                            rows=old)[0])
        return receipts

    def _erase(self, collection: str, reason: str, caller: Caller | None, *,
               face_ids: Sequence[str] | None = None, external_id: str | None = None,
               user_id: str | None = None, rows: Sequence[int] | None = None,
               keep_user_faces: bool = False) -> tuple[ErasureReceipt, set[str]]:
        """Erase the chosen faces (``keep_user_faces``: not those of a user); the receipt and
        the face ids kept for belonging to a user."""
        kept: set[str] = set()
        with self.store.transaction() as conn:
            collection_id = self.store.collections.get(conn, collection).id
        with self.indexes.locked(collection_id):
            with self.store.transaction() as conn:
                coll = self.store.collections.get(conn, collection)
                generation = self.store.generations.index_state(conn, coll.id)[0]
                urow = None
                if face_ids is not None:
                    found = self.store.faces.by_face_ids(conn, coll.id, face_ids)
                    if keep_user_faces:
                        kept = {f.face_id for f in found.values() if f.user_id is not None}
                    target = [f.row for f in found.values() if f.face_id not in kept]
                elif external_id is not None:
                    target = self.store.faces.rows_of(conn, coll.id, external_id=external_id)
                elif user_id is not None:
                    urow = self.store.users.find(conn, coll.id, user_id)
                    if urow is None:
                        raise UserNotFoundError(f"user {user_id!r} does not exist in "
                                                f"{collection!r}")
                    target = self.store.faces.rows_of(conn, coll.id, user_row=urow)
                else:
                    target = list(rows or ())
                crops = self.store.faces.count_crops(conn, target)
                # what this transaction deleted: a node erasing the same faces at once (its
                # retention worker) finds them gone and names none of them in its receipt
                erased = self.store.faces.delete(conn, target)
                derived = self.store.faces.delete_derived(conn, erased)
                images = self.store.images.delete_orphans(conn, coll.id)
                if urow is not None:
                    self.store.users.delete(conn, urow)
                if target:
                    self.store.generations.bump_generation(conn, coll.id, target, self.clock())
            if target:
                self.indexes.remove(coll, np.asarray(target, np.int64), generation)
                self.store.checkpoint()
        files = (remove_snapshots(self.snapshots, erased) if self.snapshots is not None
                 else None)
        if files is not None:
            derived += files.removed
        receipt = ErasureReceipt(str(uuid.uuid4()), collection, sorted(erased), images,
                                 self.clock(), reason, derived, crops,
                                 self.indexes.erasure_bound)
        self.trail.note(f"faces.{reason}", caller, collection=collection,
                        results=[(f, None) for f in receipt.face_ids],
                        details={"receipt_id": receipt.receipt_id, "faces": len(erased),
                                 "images": images, "derived": derived, "crops": crops,
                                 "external_id": external_id, "user_id": user_id,
                                 **({"kept_for_user": ",".join(sorted(kept))}
                                    if kept else {}),
                                 **({"snapshots_failed": len(files.failed)}
                                    if files is not None and files.failed else {})})
        return receipt, kept
