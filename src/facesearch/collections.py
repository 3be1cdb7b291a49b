"""Collections service: create and delete collections, index faces, search, compare, erase.

All state is in a data directory: ``facesearch.db`` (metadata and vectors, the source of truth)
and ``indexes/<collection id>.faiss`` (each collection's vector index, a cache the service
reconciles with the database whenever the database changed, also from another process).
Writes happen one image per transaction, so an interrupted indexing run loses at most the image
in flight and never leaves the index and the metadata disagreeing.

Accountability: every operation on biometric data is recorded in the audit trail with its
:class:`~facesearch.types.Caller`; 1:N searches obey the collection's
:class:`~facesearch.policy.CollectionPolicy` (purpose and case, threshold floor, result cap)
and the per-caller rate limit; deleted faces are erased for good (rows zeroed, write-ahead log
truncated, index file rewritten) and each erasure returns a receipt.
"""

from __future__ import annotations

import builtins
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from . import similarity as sim
from .crypto import Sealer
from .decode import DEFAULT_LIMITS, DecodeLimits, ImageSource, load_image
from .errors import (
    AlreadyExistsError,
    CollectionNotFoundError,
    ConflictError,
    FaceNotFoundError,
    FaceSearchError,
    InvalidParameterError,
    ModelMismatchError,
    NoFaceError,
    ThrottledError,
    UserNotFoundError,
)
from .index import VectorIndex
from .pipeline import Pipeline
from .policy import CollectionPolicy, EffectivePolicy, SearchLimiter, check_search, resolve
from .quality import reasons as quality_reasons
from .store import CollectionRow, FaceRow, NewFace, Store
from .types import EMBEDDING_DIM, Caller, Faces, FloatArray, Image, QualityFilter

if TYPE_CHECKING:
    from .audit import AuditEvent

Clock = Callable[[], float]
MAX_RESULTS_LIMIT = 4096
REVIEW_LABEL = "candidates for human review, not identifications"
Decision = Literal["confirmed", "rejected", "inconclusive"]
DECISIONS: tuple[str, ...] = ("confirmed", "rejected", "inconclusive")


class AuditSink(Protocol):
    """Where audited operations go (``facesearch.audit.AuditLog``)."""

    def record(self, event: AuditEvent) -> object: ...

    def record_many(self, events: Sequence[AuditEvent],
                    outbox_ids: Sequence[str] | None = None) -> object: ...


class FloorCalibration(Protocol):
    """Calibration hooks the policy needs: similarity for an FMR, and the FMR at a similarity."""

    def threshold_for_fmr(self, fmr: float) -> float: ...

    def false_match_rate(self, similarity: float) -> float: ...
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def validate_collection_name(name: str) -> str:
    """Collection names: 1-255 of ``[a-zA-Z0-9_.-]`` (as Rekognition's CollectionId)."""
    if not 1 <= len(name) <= 255 or not set(name) <= _NAME_CHARS:
        raise InvalidParameterError(
            f"invalid collection name {name!r}: use 1-255 letters, digits, '_', '.' or '-'"
        )
    return name


def validate_threshold(threshold: float | None) -> float | None:
    if threshold is not None and not 0.0 <= float(threshold) <= 100.0:
        raise InvalidParameterError(f"threshold must be between 0 and 100, got {threshold}")
    return None if threshold is None else float(threshold)


def validate_max_results(max_results: int) -> int:
    if not 1 <= int(max_results) <= MAX_RESULTS_LIMIT:
        raise InvalidParameterError(
            f"max results must be between 1 and {MAX_RESULTS_LIMIT}, got {max_results}"
        )
    return int(max_results)


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    model_version: str
    created_at: float
    face_count: int
    user_count: int
    image_count: int
    policy: EffectivePolicy
    settings: CollectionPolicy


@dataclass(frozen=True)
class FaceRecord:
    """A face stored in a collection. Box (x1, y1, x2, y2) and landmarks in source pixels."""

    face_id: str
    external_id: str | None
    image_id: str | None
    image_sha256: str | None
    source: str | None
    user_id: str | None
    box: tuple[float, float, float, float]
    landmarks: list[list[float]]
    score: float
    quality: dict[str, float]
    image_width: int
    image_height: int
    created_at: float
    model_version: str

    @classmethod
    def from_row(cls, r: FaceRow) -> FaceRecord:
        return cls(r.face_id, r.external_id, r.image_id, r.image_sha256, r.source, r.user_id,
                   r.box, r.landmarks, r.score, r.quality, r.image_width, r.image_height,
                   r.created_at, r.model_version)


@dataclass(frozen=True)
class UnindexedFace:
    """A detected face that was not indexed, with Rekognition-style reasons."""

    face_index: int
    reasons: list[str]


@dataclass(frozen=True)
class IndexResult:
    """What indexing one image did. ``faces`` holds every detected face (largest first);
    ``indexed`` the stored records; ``duplicate`` is true when the same content was already
    in the collection and nothing was done."""

    image_id: str | None
    sha256: str
    width: int
    height: int
    faces: Faces
    indexed: list[FaceRecord]
    unindexed: list[UnindexedFace]
    duplicate: bool = False


@dataclass(frozen=True)
class Match:
    face: FaceRecord
    similarity: float


@dataclass(frozen=True)
class ProbeResult:
    """Candidates for one probe face (``face_index`` into ``SearchResult.faces``)."""

    face_index: int
    matches: list[Match]


@dataclass(frozen=True)
class SearchResult:
    """Candidates for the probe image's faces: leads for human review, never identifications.

    ``search_id`` names this search in the audit trail (a review refers to it).
    """

    search_id: str
    width: int
    height: int
    faces: Faces
    results: list[ProbeResult]
    threshold: float
    model_version: str
    collection_size: int
    label: str = REVIEW_LABEL


@dataclass(frozen=True)
class Comparison:
    """1:1 comparison: the source image's largest face against each face in the target."""

    similarity: float
    """The best similarity over the target's faces (0-100)."""
    match: bool
    threshold: float
    source: Faces
    target: Faces
    similarities: list[float] = field(default_factory=list)
    source_size: tuple[int, int] = (0, 0)
    target_size: tuple[int, int] = (0, 0)


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


@dataclass(frozen=True)
class ReembedReport:
    """What re-embedding a collection with the current model did (or would have to skip)."""

    collection: str
    old_model: str
    new_model: str
    faces_reembedded: int
    missing: list[tuple[str, str]]
    """(face id, why) for faces that could not be re-embedded: source file gone or changed,
    or the face no longer found in it."""
    dropped: int


@dataclass
class _IndexEntry:
    index: VectorIndex
    generation: int = -1
    top_row: int = -1
    unsaved: int = 0


class FaceCollections:
    """Collections, faces and search over one data directory."""

    SAVE_EVERY = 20_000

    def __init__(self, home: Path, store: Store, pipeline: Callable[[], Pipeline], *,
                 clock: Clock = time.time, limits: DecodeLimits = DEFAULT_LIMITS,
                 audit: AuditSink | None = None, limiter: SearchLimiter | None = None,
                 sealer: Sealer | None = None,
                 calibration: Callable[[], FloorCalibration | None] | None = None,
                 law_enforcement_allowed: bool = True) -> None:
        self.home = home
        self.law_enforcement_allowed = law_enforcement_allowed
        """Whether law-enforcement policies may be set: only where the audit signing key is
        kept outside the data directory (a deployment with such a collection refuses to start
        without it)."""
        self.store = store
        self._pipeline_factory = pipeline
        self._pipeline: Pipeline | None = None
        self.clock = clock
        self.limits = limits
        self.audit = audit
        self.limiter = limiter
        self.sealer = sealer
        self._calibration = calibration
        self.erase_hooks: builtins.list[Callable[[str, builtins.list[str]], int]] = []
        """Called with (collection, erased face ids) after an erasure; each deletes what other
        services derived from those faces and returns how many records went."""
        self._indexes: dict[int, _IndexEntry] = {}
        self._lock = threading.RLock()

    # -- plumbing ----------------------------------------------------------------------

    @property
    def pipeline(self) -> Pipeline:
        with self._lock:
            if self._pipeline is None:
                self._pipeline = self._pipeline_factory()
            return self._pipeline

    @property
    def model_version(self) -> str:
        return self.pipeline.model_version

    def _index_path(self, collection_id: int) -> Path:
        return self.home / "indexes" / f"{collection_id}.faiss"

    def collection(self, conn: Connection, name: str) -> CollectionRow:
        row = self.store.get_collection(conn, name)
        if row is None:
            raise CollectionNotFoundError(f"collection {name!r} does not exist")
        return row

    def _check_model(self, coll: CollectionRow) -> None:
        if coll.model_version != self.model_version:
            raise ModelMismatchError(
                f"collection {coll.name!r} holds vectors of model {coll.model_version!r}, but "
                f"this server runs {self.model_version!r}; search or index it with that model, "
                f"or re-index its images into a new collection"
            )

    def _event(self, operation: str, caller: Caller | None, *, collection: str | None = None,
               probe_sha256: str | None = None, threshold: float | None = None,
               results: Sequence[tuple[str, float | None]] = (),
               details: dict[str, str | int | float | bool | None] | None = None) -> AuditEvent:
        from .audit import AuditEvent

        c = caller or Caller.local()
        return AuditEvent(
            operation=operation, actor=c.actor, role=c.role, collection=collection,
            purpose=c.purpose, case_ref=c.case_ref, client=c.client, probe_sha256=probe_sha256,
            threshold=threshold, model_version=self.model_version if self._pipeline else None,
            results=tuple(results), details=details or {})

    def record(self, operation: str, caller: Caller | None, *, collection: str | None = None,
               probe_sha256: str | None = None, threshold: float | None = None,
               results: Sequence[tuple[str, float | None]] = (),
               details: dict[str, str | int | float | bool | None] | None = None) -> None:
        """Append an event to the audit trail (if one is attached)."""
        if self.audit is None:
            return
        self.audit.record(self._event(operation, caller, collection=collection,
                                      probe_sha256=probe_sha256, threshold=threshold,
                                      results=results, details=details))

    def record_many(self, events: Sequence[AuditEvent]) -> None:
        """Append several events at once (one write to the audit trail).

        Index events (:meth:`index_event`) are already in the outbox, written with their faces
        (:meth:`store_analyzed`): for them the outbox is drained instead."""
        if self.audit is None or not events:
            return
        other = [e for e in events if e.operation != "index"]
        if other:
            self.audit.record_many(other)
        if len(other) < len(events):
            self.drain_outbox()

    def drain_outbox(self) -> int:
        """Append the audit events waiting in the outbox (each once, even when several
        processes drain at a time) and remove them; returns how many rows were drained."""
        from .audit import event_from_json

        if self.audit is None:
            return 0
        n = 0
        while True:
            with self.store.transaction() as conn:
                rows = self.store.outbox(conn)
            if not rows:
                return n
            self._append_outbox([(oid, event_from_json(text)) for oid, text in rows])
            n += len(rows)

    def _append_outbox(self, items: Sequence[tuple[str, AuditEvent]]) -> None:
        assert self.audit is not None
        self.audit.record_many([e for _, e in items], outbox_ids=[o for o, _ in items])
        with self.store.transaction() as conn:
            self.store.remove_outbox(conn, [o for o, _ in items])

    def vector_index(self, coll: CollectionRow) -> VectorIndex:
        """The collection's vector index, brought up to date with the database."""
        with self._lock:
            entry = self._indexes.get(coll.id)
            if entry is None:
                entry = _IndexEntry(VectorIndex.load(self._index_path(coll.id), EMBEDDING_DIM,
                                                     self.sealer))
                self._indexes[coll.id] = entry
            with self.store.transaction() as conn:
                gen, top = self.store.index_state(conn, coll.id)
                if gen != entry.generation:
                    truth = self.store.all_face_rows(conn, coll.id)
                    added, removed = entry.index.reconcile(
                        truth, lambda ids: self.store.embeddings(conn, ids, EMBEDDING_DIM))
                    entry.unsaved += added + removed
                elif top > entry.top_row:
                    new = self.store.face_rows_after(conn, coll.id, entry.top_row)
                    entry.index.add(new, self.store.embeddings(conn, new, EMBEDDING_DIM))
                    entry.unsaved += len(new)
            entry.generation, entry.top_row = gen, top
            if entry.unsaved >= self.SAVE_EVERY:
                self._save(coll.id, entry)
            return entry.index

    def _save(self, collection_id: int, entry: _IndexEntry) -> None:
        entry.index.save(self._index_path(collection_id), self.sealer)
        entry.unsaved = 0

    def flush(self, collection: str | None = None) -> None:
        """Bring ``collection``'s vector index up to date with the database (if given), and
        write every changed vector index to disk."""
        if collection is not None:
            with self.store.transaction() as conn:
                coll = self.collection(conn, collection)
            self.vector_index(coll)
        with self._lock:
            for cid, entry in self._indexes.items():
                if entry.unsaved:
                    self._save(cid, entry)

    def shutdown(self) -> None:
        self.flush()

    # -- collections and policy --------------------------------------------------------

    def create(self, name: str, *, policy: CollectionPolicy | None = None,
               caller: Caller | None = None) -> CollectionInfo:
        validate_collection_name(name)
        policy = policy or CollectionPolicy()
        self._check_law_enforcement(policy)
        settings = {"policy": policy.model_dump(exclude_none=True)}
        try:
            with self.store.transaction() as conn:
                self.store.insert_collection(conn, name, self.model_version, self.clock(),
                                             settings)
        except IntegrityError:
            raise AlreadyExistsError(f"collection {name!r} already exists") from None
        info = self.describe(name)
        self.record("collection.create", caller, collection=name,
                    details={"law_enforcement": info.policy.law_enforcement})
        return info

    def _check_law_enforcement(self, policy: CollectionPolicy) -> None:
        if policy.law_enforcement and not self.law_enforcement_allowed:
            raise InvalidParameterError(
                "a law-enforcement collection needs the audit signing key outside the data "
                "directory: set FACESEARCH_AUDIT_SIGNING_KEY (and FACESEARCH_AUDIT_WITNESS) to "
                "files on another volume and restart")

    def list(self) -> builtins.list[CollectionInfo]:
        with self.store.transaction() as conn:
            return [self._info(conn, c) for c in self.store.list_collections(conn)]

    def describe(self, name: str) -> CollectionInfo:
        with self.store.transaction() as conn:
            return self._info(conn, self.collection(conn, name))

    def _policy(self, coll: CollectionRow) -> tuple[CollectionPolicy, EffectivePolicy]:
        stated = CollectionPolicy(**coll.settings.get("policy", {}))
        cal = self._calibration() if self._calibration is not None else None
        eff = resolve(stated, cal.threshold_for_fmr if cal else None,
                      cal.false_match_rate if cal else None)
        return stated, eff

    def _info(self, conn: Connection, c: CollectionRow) -> CollectionInfo:
        nf, nu, ni = self.store.counts(conn, c.id)
        stated, eff = self._policy(c)
        return CollectionInfo(c.name, c.model_version, c.created_at, nf, nu, ni, eff, stated)

    def set_policy(self, name: str, policy: CollectionPolicy, *,
                   caller: Caller | None = None) -> CollectionInfo:
        """Replace a collection's policy (audited)."""
        self._check_law_enforcement(policy)
        with self.store.transaction() as conn:
            coll = self.collection(conn, name)
            settings = dict(coll.settings)
            settings["policy"] = policy.model_dump(exclude_none=True)
            self.store.update_collection_settings(conn, coll.id, settings)
        info = self.describe(name)
        self.record("policy.set", caller, collection=name, details={
            k: v for k, v in policy.model_dump().items()})
        return info

    def delete(self, name: str, *, caller: Caller | None = None) -> None:
        """Delete a collection and erase every face in it."""
        with self._lock:
            with self.store.transaction() as conn:
                coll = self.collection(conn, name)
                nfaces = self.store.counts(conn, coll.id)[0]
                self.store.delete_collection(conn, coll.id)
            self._indexes.pop(coll.id, None)
            self._index_path(coll.id).unlink(missing_ok=True)
            self.store.checkpoint()
        self.record("collection.delete", caller, collection=name,
                    details={"faces_erased": nfaces})

    def reembed(self, name: str, *, drop_missing: bool = False,
                caller: Caller | None = None) -> ReembedReport:
        """Re-embed a collection made with another model with the current one, from the
        source files its images were indexed from (face ids, external ids and users stay).

        A face is re-found in its source image by box overlap (IoU >= 0.3). Faces whose source
        is gone or changed, or that are not re-found, are listed in the report; then nothing
        changes, unless ``drop_missing``, which erases them. Vectors of two models are never
        mixed: the collection switches model in one transaction.
        """
        from .decode import read_bytes

        with self.store.transaction() as conn:
            coll = self.collection(conn, name)
            images = self.store.images_of(conn, coll.id)
            old_faces = {im.id: self.store.faces_of_image(conn, im.id) for im in images}
        old_model, new_model = coll.model_version, self.model_version
        updates: builtins.list[tuple[FaceRow, Faces, int]] = []
        missing: builtins.list[tuple[str, str]] = []
        for im in images:
            faces = old_faces[im.id]
            if not faces:
                continue
            why = None
            if not im.source:
                why = "indexed from bytes: no source file recorded"
            else:
                try:
                    data = read_bytes(im.source, self.limits)
                except FaceSearchError as exc:
                    why = f"source unreadable: {exc.message}"
                else:
                    if hashlib.sha256(data).hexdigest() != im.sha256:
                        why = "source file changed since it was indexed"
            if why is not None:
                missing += [(f.face_id, why) for f in faces]
                continue
            new = self.analyze(load_image(data, self.limits))
            taken: set[int] = set()
            for f in faces:
                ious = [(_iou(f.box, new.boxes[j]), j) for j in range(len(new))
                        if j not in taken]
                best = max(ious, default=(0.0, -1))
                if best[0] < 0.3:
                    missing.append((f.face_id, "face not found again in its source image"))
                    continue
                taken.add(best[1])
                updates.append((f, new, best[1]))
        if missing and not drop_missing:
            raise ConflictError(
                f"{len(missing)} face(s) of {name!r} cannot be re-embedded (first: "
                f"{missing[0][0]}: {missing[0][1]}); nothing changed. Re-index them, or "
                "re-embed with drop_missing to erase them")
        with self._lock:
            with self.store.transaction() as conn:
                coll = self.collection(conn, name)
                for f, new, j in updates:
                    assert new.embeddings is not None
                    self.store.update_face_model(
                        conn, f.row, f.face_id, tuple(float(v) for v in new.boxes[j]),  # type: ignore[arg-type]
                        new.landmarks[j].round(2).tolist(), float(new.scores[j]),
                        _quality_dict(new, j), new.embeddings[j], new_model)
                if missing:
                    gone = self.store.faces_by_face_ids(conn, coll.id, [m[0] for m in missing])
                    self.store.delete_faces(conn, [r.row for r in gone.values()])
                    self.store.delete_orphan_images(conn, coll.id)
                self.store.set_collection_model(conn, coll.id, new_model)
            # Same ids, new vectors: the index is rebuilt from the database, not reconciled.
            self._indexes.pop(coll.id, None)
            self._index_path(coll.id).unlink(missing_ok=True)
            self.store.checkpoint()
        report = ReembedReport(name, old_model, new_model, len(updates), missing,
                               len(missing) if drop_missing else 0)
        self.record("collection.reembed", caller, collection=name,
                    details={"old_model": old_model, "new_model": new_model,
                             "faces": len(updates), "dropped": report.dropped})
        return report

    # -- indexing ----------------------------------------------------------------------

    def analyze(self, image: Image, max_faces: int | None = None) -> Faces:
        """Detect, measure and embed the image's faces (no storage, not audited)."""
        return self.pipeline.analyze(image, max_faces)

    def detect_faces(self, source: ImageSource | Image, *,
                     caller: Caller | None = None) -> tuple[Image, Faces]:
        """Detect the faces of an image with their quality (audited; nothing stored)."""
        image = source if isinstance(source, Image) else load_image(source, self.limits)
        faces = self.pipeline.detect(image)
        self.record("detect", caller, probe_sha256=image.sha256,
                    details={"faces": len(faces)})
        return image, faces

    def index_image(
        self,
        collection: str,
        source: ImageSource | Image,
        *,
        external_id: str | None = None,
        max_faces: int | None = None,
        quality_filter: QualityFilter = QualityFilter.AUTO,
        source_name: str | None = None,
        force: bool = False,
        caller: Caller | None = None,
    ) -> IndexResult:
        """Detect the faces of an image and store those that pass the quality filter.

        ``max_faces`` keeps the largest passing faces (the rest are reported as
        ``EXCEEDS_MAX_FACES``). The same image content already in the collection is skipped
        (``duplicate=True``) unless ``force``.
        """
        image = source if isinstance(source, Image) else load_image(source, self.limits)
        with self.store.transaction() as conn:
            coll = self.collection(conn, collection)
            self._check_model(coll)
            prior = self.store.find_image(conn, coll.id, image.sha256)
        if prior is not None and not force:
            return IndexResult(prior.image_id, image.sha256, image.width, image.height,
                               Faces.empty(), [], [], duplicate=True)
        return self.store_analyzed(collection, image.sha256, image.width, image.height,
                                   self.analyze(image), external_id=external_id,
                                   max_faces=max_faces, quality_filter=quality_filter,
                                   source_name=source_name, force=force, caller=caller)

    def store_analyzed(
        self,
        collection: str,
        sha256: str,
        width: int,
        height: int,
        faces: Faces,
        *,
        external_id: str | None = None,
        max_faces: int | None = None,
        quality_filter: QualityFilter = QualityFilter.AUTO,
        source_name: str | None = None,
        force: bool = False,
        caller: Caller | None = None,
        sync_index: bool = True,
        record: bool = True,
    ) -> IndexResult:
        """Store faces that :meth:`analyze` found in an image (content hash ``sha256``,
        ``width`` x ``height`` pixels), applying the quality filter and ``max_faces``.

        One transaction. ``sync_index=False`` leaves the vector index to be brought up to
        date later (:meth:`flush` or the next search); ``record=False`` leaves the audit event
        to the caller (:meth:`index_event`, :meth:`record_many`).
        """
        if max_faces is not None and not 1 <= max_faces <= 4096:
            raise InvalidParameterError(f"max faces must be between 1 and 4096, got {max_faces}")
        if external_id is not None:
            _validate_external_id(external_id)
        if faces.embeddings is None or faces.quality is None:
            raise ValueError("faces must carry quality and embeddings (use analyze())")
        why = quality_reasons(faces, quality_filter)
        if max_faces is not None:
            passing = [i for i in range(len(faces)) if not why[i]]
            for i in passing[max_faces:]:
                why[i].append("EXCEEDS_MAX_FACES")
        keep = [i for i in range(len(faces)) if not why[i]]
        now = self.clock()
        outbox: tuple[str, AuditEvent] | None = None
        new = [NewFace(
            face_id=str(uuid.uuid4()), external_id=external_id,
            box=tuple(float(v) for v in faces.boxes[i]),  # type: ignore[arg-type]
            landmarks=faces.landmarks[i].round(2).tolist(), score=float(faces.scores[i]),
            quality=_quality_dict(faces, i), embedding=faces.embeddings[i],
        ) for i in keep]
        try:
            with self._lock, self.store.transaction() as conn:
                coll = self.collection(conn, collection)
                self._check_model(coll)
                prior = self.store.find_image(conn, coll.id, sha256)
                if prior is not None and not force:
                    return IndexResult(prior.image_id, sha256, width, height, faces, [], [],
                                       duplicate=True)
                if prior is not None:
                    image_id, image_row = prior.image_id, prior.id
                    self.store.add_image_faces(conn, prior.id, len(faces), len(new))
                else:
                    image_id = str(uuid.uuid4())
                    image_row = self.store.insert_image(
                        conn, coll.id, image_id, sha256, source_name, external_id, width, height,
                        len(faces), len(new), now)
                self.store.insert_faces(conn, coll.id, image_row, new, width, height, now,
                                        coll.model_version)
                if self.audit is not None and (record or new):
                    # The audit event commits with the faces (an outbox row), and is appended
                    # to the trail after: a crash in between leaves it for drain_outbox().
                    ev = self._index_event(collection, caller, sha256, image_id, len(faces),
                                           [(f.face_id, f.external_id) for f in new])
                    outbox = (str(uuid.uuid4()), ev)
                    from .audit import event_to_json

                    self.store.add_outbox(conn, outbox[0], event_to_json(ev), now)
        except IntegrityError:
            # Another writer stored the same content between our check and our insert.
            return IndexResult(None, sha256, width, height, faces, [], [], duplicate=True)
        if sync_index:
            self.vector_index(coll)
        result = IndexResult(
            image_id, sha256, width, height, faces,
            [FaceRecord(f.face_id, f.external_id, image_id, sha256, source_name, None, f.box,
                        f.landmarks, f.score, f.quality, width, height, now,
                        coll.model_version) for f in new],
            [UnindexedFace(i, why[i]) for i in range(len(faces)) if why[i]],
        )
        if record and outbox is not None:
            self._append_outbox([outbox])
        return result

    def index_event(self, result: IndexResult, collection: str,
                    caller: Caller | None) -> AuditEvent:
        """The audit event of one indexed image (already in the outbox: give it to
        :meth:`record_many`, which drains the outbox)."""
        return self._index_event(collection, caller, result.sha256, result.image_id,
                                 len(result.faces),
                                 [(f.face_id, f.external_id) for f in result.indexed])

    def _index_event(self, collection: str, caller: Caller | None, sha256: str,
                     image_id: str | None, detected: int,
                     indexed: Sequence[tuple[str, str | None]]) -> AuditEvent:
        ext = indexed[0][1] if indexed else None
        return self._event("index", caller, collection=collection, probe_sha256=sha256,
                           results=[(face_id, None) for face_id, _ in indexed],
                           details={"image_id": image_id, "faces_detected": detected,
                                    "faces_indexed": len(indexed), "external_id": ext})

    def known_hashes(self, collection: str) -> set[str]:
        """SHA-256 of every image content already indexed into the collection."""
        with self.store.transaction() as conn:
            return self.store.known_hashes(conn, self.collection(conn, collection).id)

    # -- faces -------------------------------------------------------------------------

    def list_faces(self, collection: str, *, limit: int = 100, after: int = 0,
                   user_id: str | None = None, face_ids: Sequence[str] | None = None,
                   caller: Caller | None = None) -> tuple[builtins.list[FaceRecord], int | None]:
        """A page of faces in insertion order and the cursor of the next page (or None)."""
        if not 1 <= limit <= 4096:
            raise InvalidParameterError(f"limit must be between 1 and 4096, got {limit}")
        with self.store.transaction() as conn:
            coll = self.collection(conn, collection)
            user_row = None
            if user_id is not None:
                user_row = self.store.get_user(conn, coll.id, user_id)
                if user_row is None:
                    return [], None
            rows = self.store.list_faces(conn, coll.id, after, limit + 1, user_row, face_ids)
        nxt = rows[limit - 1].row if len(rows) > limit else None
        page = [FaceRecord.from_row(r) for r in rows[:limit]]
        self.record("faces.list", caller, collection=collection,
                    details={"count": len(page), "user_id": user_id})
        return page, nxt

    def delete_faces(self, collection: str, face_ids: Sequence[str], *,
                     caller: Caller | None = None) -> tuple[builtins.list[str], builtins.list[str]]:
        """Delete (erase) faces by id; returns ``(deleted, not_found)``."""
        for fid in face_ids:
            _validate_face_id(fid)
        receipt = self._erase(collection, "delete", caller, face_ids=face_ids)
        gone = set(receipt.face_ids)
        return ([f for f in dict.fromkeys(face_ids) if f in gone],
                [f for f in dict.fromkeys(face_ids) if f not in gone])

    def erase(self, collection: str, *, face_ids: Sequence[str] | None = None,
              external_id: str | None = None, user_id: str | None = None,
              caller: Caller | None = None) -> ErasureReceipt:
        """Erase faces for good, chosen by face ids, external id or user (with the user).

        The vectors and metadata are deleted with SQLite's ``secure_delete`` (overwritten), the
        write-ahead log is truncated, the collection's index file is rewritten, and image
        records with no face left are deleted too.
        """
        if sum(x is not None for x in (face_ids, external_id, user_id)) != 1:
            raise InvalidParameterError("erase by exactly one of: face ids, external id, user id")
        for fid in face_ids or ():
            _validate_face_id(fid)
        return self._erase(collection, "erase", caller, face_ids=face_ids,
                           external_id=external_id, user_id=user_id)

    def _erase(self, collection: str, reason: str, caller: Caller | None, *,
               face_ids: Sequence[str] | None = None, external_id: str | None = None,
               user_id: str | None = None, rows: Sequence[int] | None = None) -> ErasureReceipt:
        with self._lock:
            with self.store.transaction() as conn:
                coll = self.collection(conn, collection)
                if face_ids is not None:
                    found = self.store.faces_by_face_ids(conn, coll.id, face_ids)
                    target = [f.row for f in found.values()]
                elif external_id is not None:
                    target = self.store.face_rows_of(conn, coll.id, external_id=external_id)
                elif user_id is not None:
                    urow = self.store.get_user(conn, coll.id, user_id)
                    if urow is None:
                        raise UserNotFoundError(f"user {user_id!r} does not exist in "
                                                f"{collection!r}")
                    target = self.store.face_rows_of(conn, coll.id, user_row=urow)
                else:
                    target = list(rows or ())
                erased = [f.face_id for f in self.store.faces_by_rows(conn, target).values()]
                self.store.delete_faces(conn, target)
                images = self.store.delete_orphan_images(conn, coll.id)
                if user_id is not None:
                    self.store.delete_user(conn, urow)
                if target:
                    self.store.bump_generation(conn, coll.id)
            if target:
                self.vector_index(coll)
                entry = self._indexes.get(coll.id)
                if entry is not None:
                    self._save(coll.id, entry)  # the old index file held the vectors
                self.store.checkpoint()
        derived = sum(hook(collection, erased) for hook in self.erase_hooks) if erased else 0
        receipt = ErasureReceipt(str(uuid.uuid4()), collection, sorted(erased), images,
                                 self.clock(), reason, derived)
        self.record(f"faces.{reason}", caller, collection=collection,
                    results=[(f, None) for f in receipt.face_ids],
                    details={"receipt_id": receipt.receipt_id, "faces": len(erased),
                             "images": images, "derived": derived, "external_id": external_id,
                             "user_id": user_id})
        return receipt

    def expire(self, now: float | None = None) -> builtins.list[ErasureReceipt]:
        """Erase faces older than their collection's retention period (as of ``now``)."""
        now = self.clock() if now is None else now
        receipts = []
        with self.store.transaction() as conn:
            colls = self.store.list_collections(conn)
        for coll in colls:
            days = self._policy(coll)[1].retention_days
            if days is None:
                continue
            with self.store.transaction() as conn:
                old = self.store.face_rows_older_than(conn, coll.id, now - days * 86400.0)
            if old:
                receipts.append(self._erase(coll.name, "expire",
                                            Caller("system:retention", role="system"),
                                            rows=old))
        return receipts

    # -- search ------------------------------------------------------------------------

    def _authorize(self, coll: CollectionRow, caller: Caller, threshold: float | None,
                   max_results: int, rate_limit: bool = True) -> float:
        """Apply the collection's policy (and the caller's rate limit) to a 1:N search.

        A refusal is recorded in the audit trail (``search.refused``) and raised.
        """
        validate_max_results(max_results)
        validate_threshold(threshold)
        try:
            used = check_search(self._policy(coll)[1], caller, threshold, max_results,
                                sim.DEFAULT_THRESHOLD)
            # Rate limits are per access key; local use (CLI, library) and the system's own
            # work (retention, streams) are not limited.
            if (rate_limit and self.limiter is not None and caller.role != "system"
                    and not caller.actor.startswith("local:")):
                self.limiter.acquire(caller.actor)
        except (InvalidParameterError, ThrottledError) as exc:
            self.record("search.refused", caller, collection=coll.name, threshold=threshold,
                        details={"reason": exc.message, "max_results": max_results})
            raise
        return used

    def _matches(self, conn: Connection, sims: FloatArray, rows: np.ndarray,
                 threshold: float) -> builtins.list[Match]:
        keep = [(float(s), int(r)) for s, r in zip(sim.to_similarity(sims, self.model_version), rows, strict=True)
                if r >= 0 and s >= threshold]
        found = self.store.faces_by_rows(conn, [r for _, r in keep])
        return [Match(FaceRecord.from_row(found[r]), s) for s, r in keep if r in found]

    def search_vectors(self, collection: str, vectors: FloatArray, *, max_results: int = 10,
                       threshold: float | None = None, exclude: Sequence[str] = (),
                       caller: Caller | None = None, operation: str = "search.vectors",
                       probe_sha256: str | None = None, search_id: str | None = None,
                       rate_limit: bool = True) -> builtins.list[builtins.list[Match]]:
        """Candidates for each query vector, best first, similarity >= the threshold.

        ``threshold`` None means the collection's default (80, or its floor if higher).
        """
        caller = caller or Caller.local()
        with self.store.transaction() as conn:
            coll = self.collection(conn, collection)
            self._check_model(coll)
        used = self._authorize(coll, caller, threshold, max_results, rate_limit=rate_limit)
        index = self.vector_index(coll)
        sims, rows = index.search(vectors, max_results + len(exclude))
        out: builtins.list[builtins.list[Match]] = []
        with self.store.transaction() as conn:
            for s, r in zip(sims, rows, strict=True):
                ms = [m for m in self._matches(conn, s, r, used) if m.face.face_id not in exclude]
                out.append(ms[:max_results])
        self.record(operation, caller, collection=collection, probe_sha256=probe_sha256,
                    threshold=used,
                    results=[(m.face.face_id, round(m.similarity, 4)) for ms in out for m in ms],
                    details={"search_id": search_id, "probes": len(out),
                             "max_results": max_results})
        return out

    def search_by_image(self, collection: str, source: ImageSource | Image, *,
                        max_results: int = 10, threshold: float | None = None,
                        all_faces: bool = False, caller: Caller | None = None) -> SearchResult:
        """Search the probe's largest face (or every face) against the collection."""
        caller = caller or Caller.local()
        with self.store.transaction() as conn:
            coll = self.collection(conn, collection)
            self._check_model(coll)
            size = self.store.counts(conn, coll.id)[0]
        # Policy and rate limit first (cheap), before the probe is decoded and analysed;
        # search_vectors does not take the rate limit again.
        used = self._authorize(coll, caller, threshold, max_results)
        image = source if isinstance(source, Image) else load_image(source, self.limits)
        faces = self.analyze(image, None if all_faces else 1)
        if not len(faces):
            raise NoFaceError("no face was found in the probe image")
        assert faces.embeddings is not None
        search_id = str(uuid.uuid4())
        per_face = self.search_vectors(collection, faces.embeddings, max_results=max_results,
                                       threshold=used, caller=caller, operation="search.image",
                                       probe_sha256=image.sha256, search_id=search_id,
                                       rate_limit=False)
        return SearchResult(search_id, image.width, image.height, faces,
                            [ProbeResult(i, m) for i, m in enumerate(per_face)], used,
                            coll.model_version, size)

    def face_vector(self, collection: str, face_id: str) -> FloatArray:
        _validate_face_id(face_id)
        with self.store.transaction() as conn:
            coll = self.collection(conn, collection)
            found = self.store.faces_by_face_ids(conn, coll.id, [face_id])
            if face_id not in found:
                raise FaceNotFoundError(f"face {face_id} is not in collection {collection!r}")
            return self.store.embeddings(conn, np.array([found[face_id].row]), EMBEDDING_DIM)

    def search_by_face_id(self, collection: str, face_id: str, *, max_results: int = 10,
                          threshold: float | None = None,
                          caller: Caller | None = None) -> builtins.list[Match]:
        """Candidates for a stored face (the face itself excluded)."""
        vec = self.face_vector(collection, face_id)
        return self.search_vectors(collection, vec, max_results=max_results,
                                   threshold=threshold, exclude=[face_id], caller=caller,
                                   operation="search.face", search_id=str(uuid.uuid4()))[0]

    def compare(self, source: ImageSource | Image, target: ImageSource | Image, *,
                threshold: float | None = None, caller: Caller | None = None) -> Comparison:
        """The source's largest face against every face of the target (1:1)."""
        used = validate_threshold(threshold)
        used = sim.DEFAULT_THRESHOLD if used is None else used
        a = source if isinstance(source, Image) else load_image(source, self.limits)
        b = target if isinstance(target, Image) else load_image(target, self.limits)
        fa = self.analyze(a, 1)
        if not len(fa):
            raise NoFaceError("no face was found in the source image")
        fb = self.analyze(b)
        if not len(fb):
            raise NoFaceError("no face was found in the target image")
        assert fa.embeddings is not None and fb.embeddings is not None
        scores = sim.to_similarity(fb.embeddings @ fa.embeddings[0], self.model_version)
        best = float(scores.max())
        self.record("compare", caller, probe_sha256=a.sha256, threshold=used,
                    details={"target_sha256": b.sha256, "similarity": round(best, 4),
                             "match": best >= used})
        return Comparison(best, best >= used, used, fa, fb, [float(s) for s in scores],
                          (a.width, a.height), (b.width, b.height))

    def review(self, search_id: str, face_id: str, decision: str, *, note: str = "",
               collection: str | None = None, caller: Caller | None = None) -> None:
        """Record an analyst's decision on a candidate of a search in the audit trail."""
        if decision not in DECISIONS:
            raise InvalidParameterError(
                f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        _validate_face_id(face_id)
        try:
            uuid.UUID(search_id)
        except ValueError:
            raise InvalidParameterError(f"invalid search id {search_id!r}") from None
        if len(note) > 4000:
            raise InvalidParameterError("review note is limited to 4000 characters")
        self.record("review", caller, collection=collection, results=[(face_id, None)],
                    details={"search_id": search_id, "decision": decision, "note": note})


def _iou(a: tuple[float, float, float, float], b: np.ndarray) -> float:
    w = max(0.0, min(a[2], float(b[2])) - max(a[0], float(b[0])))
    h = max(0.0, min(a[3], float(b[3])) - max(a[1], float(b[1])))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + float((b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


def _quality_dict(faces: Faces, i: int) -> dict[str, float]:
    q = faces.quality
    assert q is not None
    return {"size": float(q.size[i]), "sharpness": float(q.sharpness[i]),
            "brightness": float(q.brightness[i]), "yaw": float(q.yaw[i]),
            "pitch": float(q.pitch[i]), "roll": float(q.roll[i])}


def _validate_external_id(external_id: str) -> None:
    if not 1 <= len(external_id) <= 255 or any(c in external_id for c in "\x00\n\r"):
        raise InvalidParameterError(
            f"invalid external id {external_id!r}: 1-255 characters, no control characters"
        )


def _validate_face_id(face_id: str) -> None:
    try:
        uuid.UUID(face_id)
    except (ValueError, AttributeError, TypeError):
        raise InvalidParameterError(f"invalid face id {face_id!r}: expected a UUID") from None
