"""Collections and their faces: create, describe, delete, set the policy; index images,
list faces.

All state is in a data directory: ``facesearch.db`` (metadata and vectors, the source of
truth; :mod:`facesearch.storage`) and each collection's vector index (a cache,
:mod:`facesearch.storage.vectors`). Writes happen one image per transaction, so
an interrupted indexing run loses at most the image in flight and never leaves the index and
the metadata disagreeing; an image's audit event commits with its faces (the outbox of
:class:`facesearch.governance.trail.AuditTrail`).

Searching is :mod:`facesearch.services.search`'s, erasure
:mod:`facesearch.governance.erasure`'s, re-embedding :mod:`facesearch.services.reembed`'s.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from facesearch import limits
from facesearch.errors import (
    AlreadyExistsError,
    FaceNotFoundError,
    InvalidParameterError,
    NotFoundError,
)
from facesearch.governance.policy import (
    CollectionPolicy,
    EffectivePolicy,
    check_purpose,
    of_collection,
)
from facesearch.governance.trail import AuditTrail
from facesearch.services.models import Models
from facesearch.services.enrolment import (
    ALL_PASSING,
    AnalyzedImage,
    IndexRules,
    choose_faces,
    recognisabilities,
)
from facesearch.services.search import require_model
from facesearch.storage.records import (
    CollectionRow,
    FaceRecord,
    ImageRow,
    NewFace,
    NewImage,
    SourceImage,
)
from facesearch.storage.store import Store
from facesearch.storage.vectors import VectorBackend
from facesearch.types import Caller, Faces, Image, QualityFilter
from facesearch.vision.crop import FaceCrop, face_crops
from facesearch.vision.decode import DEFAULT_LIMITS, DecodeLimits, ImageSource, load_image
from facesearch.vision.pipeline import Pipeline

Clock = Callable[[], float]


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


def _duplicate(image: AnalyzedImage, image_id: str | None) -> IndexResult:
    """Nothing stored: the image's content is already in the collection."""
    return IndexResult(image_id, image.sha256, image.width, image.height, image.faces, [], [],
                       duplicate=True)


@dataclass(frozen=True)
class FaceCard:
    """What a reviewer sees of a stored face: the record, the name of the file it was indexed
    from (no folders), and its crop (None for faces indexed before crops were kept)."""

    face: FaceRecord
    source_name: str | None
    crop: FaceCrop | None


class FaceCollections:
    """Collections and their faces over one data directory."""

    def __init__(self, store: Store, indexes: VectorBackend, trail: AuditTrail,
                 models: Models, *, clock: Clock = time.time,
                 limits: DecodeLimits = DEFAULT_LIMITS,
                 law_enforcement_allowed: bool = True) -> None:
        self.store = store
        self.indexes = indexes
        self.trail = trail
        self.models = models
        """The pipeline, model version and calibrations (:class:`Models`)."""
        self.clock = clock
        self.limits = limits
        self.law_enforcement_allowed = law_enforcement_allowed
        """Whether law-enforcement policies may be set: only where the audit signing key is
        kept outside the data directory (a deployment with such a collection refuses to start
        without it)."""
        self._lock = threading.RLock()

    @property
    def pipeline(self) -> Pipeline:
        """The face pipeline (the provider's, loaded on first use)."""
        return self.models.pipeline

    @property
    def model_version(self) -> str:
        """The running model's version (the provider's: from the settings until the
        pipeline is loaded, so that storing vectors made elsewhere, bulk indexing's workers,
        does not load the models here)."""
        return self.models.version

    # -- collections and policy ----------------------------------------------------------------

    def create(self, name: str, *, policy: CollectionPolicy | None = None,
               caller: Caller | None = None, exist_ok: bool = False) -> CollectionInfo:
        """Create an empty collection. A name already taken raises
        :class:`AlreadyExistsError`, or with ``exist_ok`` returns the existing collection as
        it is (its policy unchanged, nothing recorded)."""
        limits.collection_name(name)
        policy = policy or CollectionPolicy()
        self._check_law_enforcement(policy)
        settings = {"policy": policy.model_dump(exclude_none=True)}
        try:
            with self.store.transaction() as conn:
                self.store.collections.insert(conn, name, self.model_version, self.clock(),
                                             settings)
        except IntegrityError:
            if exist_ok:
                return self.describe(name)
            raise AlreadyExistsError(f"collection {name!r} already exists") from None
        info = self.describe(name)
        self.trail.note("collection.create", caller, collection=name,
                        details={"law_enforcement": info.policy.law_enforcement})
        return info

    def _check_law_enforcement(self, policy: CollectionPolicy) -> None:
        if policy.law_enforcement and not self.law_enforcement_allowed:
            raise InvalidParameterError(
                "a law-enforcement collection needs the audit signing key outside the data "
                "directory: set FACESEARCH_AUDIT_SIGNING_KEY (and FACESEARCH_AUDIT_WITNESS) to "
                "files on another volume and restart")

    def list_collections(self) -> list[CollectionInfo]:
        with self.store.transaction() as conn:
            return [self._info(conn, c) for c in self.store.collections.list_all(conn)]

    def describe(self, name: str) -> CollectionInfo:
        with self.store.transaction() as conn:
            return self._info(conn, self.store.collections.get(conn, name))

    def _info(self, conn: Connection, c: CollectionRow) -> CollectionInfo:
        nf, nu, ni = self.store.collections.counts(conn, c.id)
        stated, eff = of_collection(c.settings, self.models.calibration(c.model_version))
        return CollectionInfo(c.name, c.model_version, c.created_at, nf, nu, ni, eff, stated)

    def set_policy(self, name: str, policy: CollectionPolicy, *,
                   caller: Caller | None = None) -> CollectionInfo:
        """Replace a collection's policy (audited)."""
        self._check_law_enforcement(policy)
        with self.store.transaction() as conn:
            coll = self.store.collections.get(conn, name)
            settings = dict(coll.settings)
            settings["policy"] = policy.model_dump(exclude_none=True)
            self.store.collections.update_settings(conn, coll.id, settings)
        info = self.describe(name)
        self.trail.note("policy.set", caller, collection=name, details=policy.model_dump())
        return info

    def delete(self, name: str, *, caller: Caller | None = None) -> None:
        """Delete a collection and erase every face in it."""
        with self.store.transaction() as conn:
            collection_id = self.store.collections.get(conn, name).id
        with self.indexes.locked(collection_id):
            with self.store.transaction() as conn:
                coll = self.store.collections.get(conn, name)
                nfaces = self.store.collections.counts(conn, coll.id)[0]
                self.store.collections.delete(conn, coll.id)
            self.indexes.drop(coll.id)
            self.store.checkpoint()
        self.trail.note("collection.delete", caller, collection=name,
                        details={"faces_erased": nfaces})

    # -- indexing ------------------------------------------------------------------------------

    def analyze(self, image: Image, max_faces: int | None = None) -> Faces:
        """Detect, measure and embed the image's faces (no storage, not audited)."""
        return self.pipeline.analyze(image, max_faces)

    def detect_faces(self, source: ImageSource | Image, *,
                     caller: Caller | None = None) -> tuple[Image, Faces]:
        """Detect the faces of an image with their quality, recognisability included
        (audited; nothing stored; the embeddings are not given out)."""
        image = source if isinstance(source, Image) else load_image(source, self.limits)
        faces = self.pipeline.analyze(image)
        faces = Faces(faces.boxes, faces.scores, faces.landmarks, faces.quality)
        self.trail.note("detect", caller, probe_sha256=image.sha256,
                        details={"faces": len(faces)})
        return image, faces

    def index_image(self, collection: str, source: ImageSource | Image, *,
                    external_id: str | None = None, max_faces: int | None = None,
                    quality_filter: QualityFilter = QualityFilter.AUTO,
                    source_name: str | None = None, force: bool = False,
                    caller: Caller | None = None, all_faces: bool = False) -> IndexResult:
        """Detect the faces of an image and store those that pass the quality filter.

        A label names one person: with an ``external_id``, only the largest face that passes
        the filter is stored and the other passing faces are reported as
        :data:`NOT_LABELLED_FACE`, unless ``all_faces`` (a group photo, or Rekognition's
        IndexFaces, whose ``ExternalImageId`` labels the image, not a person).
        ``max_faces`` keeps the largest passing faces (the rest are reported as
        ``EXCEEDS_MAX_FACES``). The same image content already in the collection is skipped
        (``duplicate=True``) unless ``force``, which stores the faces again (new face ids).
        """
        image = source if isinstance(source, Image) else load_image(source, self.limits)
        with self.store.transaction() as conn:
            coll = self.store.collections.get(conn, collection)
            require_model(coll, self.model_version)
            prior = self.store.images.find(conn, coll.id, image.sha256)
        if prior is not None and not force:
            return IndexResult(prior.image_id, image.sha256, image.width, image.height,
                               Faces.empty(), [], [], duplicate=True)
        faces = self.analyze(image)
        analyzed = AnalyzedImage(sha256=image.sha256, width=image.width, height=image.height,
                                 faces=faces, crops=face_crops(image.pixels, faces),
                                 source_name=source_name)
        rules = IndexRules(external_id=external_id, max_faces=max_faces,
                           quality_filter=quality_filter, force=force, all_faces=all_faces)
        res = self.store_analyzed(collection, analyzed, rules, caller=caller)
        if res.duplicate and force:
            # Another writer stored the same content between our check and our insert: add
            # these faces to it, as ``force`` asks.
            res = self.store_analyzed(collection, analyzed, rules, caller=caller)
        return res

    def store_analyzed(self, collection: str, image: AnalyzedImage,
                       rules: IndexRules = ALL_PASSING, *,
                       caller: Caller | None = None) -> IndexResult:
        """Store the faces that :meth:`analyze` found in ``image`` that ``rules`` keep (the
        quality filter, the one face per label rule of :meth:`index_image`, ``max_faces``),
        with their crops, for human review.

        One transaction, which also stages the image's audit event (the trail's outbox);
        then the collection's vector index and the audit log are brought up to date. The
        same content already in the collection is skipped (``duplicate=True``) unless
        ``rules.force``.
        """
        why, new = choose_faces(image, rules)
        now = self.clock()
        try:
            with self._lock, self.store.transaction() as conn:
                coll = self.store.collections.get(conn, collection)
                require_model(coll, self.model_version)
                prior = self.store.images.find(conn, coll.id, image.sha256)
                if prior is not None and not rules.force:
                    return _duplicate(image, prior.image_id)
                image_id = self._insert(conn, coll, image, rules, new, prior, now)
                self._stage(conn, coll, image, rules, new, image_id, caller, now)
        except IntegrityError:
            # The same content is there (stored by another writer between our check and
            # our insert).
            return _duplicate(image, None)
        self.indexes.get(coll)
        self.trail.drain()
        return self._result(coll, image, new, why, image_id, now)

    def store_batch(self, coll: CollectionRow, image: AnalyzedImage,
                    rules: IndexRules = ALL_PASSING, *,
                    caller: Caller | None = None) -> IndexResult:
        """Store one image of a bulk run (many images in a row:
        :class:`~facesearch.services.indexing.BulkIndexer`), as :meth:`store_analyzed`
        does, but for three things. ``coll`` is the collection's row, looked up once for
        the run. Content already in the collection is found by the database's unique
        content hash rather than a lookup (the caller checked :meth:`known_hashes` first);
        with ``rules.force`` the image is looked up and its faces added. The audit event is
        staged only when faces were stored, and the vector index and the audit log are left
        to the caller, once for many images (:meth:`flush`, ``trail.drain()``).
        """
        why, new = choose_faces(image, rules)
        now = self.clock()
        try:
            with self._lock, self.store.transaction() as conn:
                require_model(coll, self.model_version)
                prior = (self.store.images.find(conn, coll.id, image.sha256) if rules.force
                         else None)
                image_id = self._insert(conn, coll, image, rules, new, prior, now)
                if new:
                    self._stage(conn, coll, image, rules, new, image_id, caller, now)
        except IntegrityError:
            # The same content is there, found by the unique hash, unless the collection
            # went (then its not-found error).
            with self.store.transaction() as conn:
                self.store.collections.get(conn, coll.name)
            return _duplicate(image, None)
        return self._result(coll, image, new, why, image_id, now)

    def _insert(self, conn: Connection, coll: CollectionRow, image: AnalyzedImage,
                rules: IndexRules, new: list[NewFace], prior: ImageRow | None,
                now: float) -> str:
        """Insert the image's record (or count another indexing of ``prior``) and its
        faces ``new``; the image id."""
        if prior is not None:
            self.store.images.add_faces(conn, prior.id, len(image.faces), len(new))
            image_id, image_row = prior.image_id, prior.id
        else:
            image_id = str(uuid.uuid4())
            image_row = self.store.images.insert(conn, coll.id, NewImage(
                image_id=image_id, sha256=image.sha256, source=image.source_name,
                external_id=rules.external_id, width=image.width, height=image.height,
                faces_detected=len(image.faces), faces_indexed=len(new)), now)
        self.store.faces.insert(conn, coll.id, image_row, new, image.width, image.height, now,
                                coll.model_version)
        return image_id

    def _stage(self, conn: Connection, coll: CollectionRow, image: AnalyzedImage,
               rules: IndexRules, new: list[NewFace], image_id: str,
               caller: Caller | None, now: float) -> None:
        """Stage the image's ``index`` audit event in the transaction of its faces."""
        self.trail.stage(conn, self.trail.event(
            "index", caller, collection=coll.name, probe_sha256=image.sha256,
            results=[(f.face_id, None) for f in new],
            details={"image_id": image_id, "faces_detected": len(image.faces),
                     "faces_indexed": len(new), "external_id": rules.external_id,
                     "recognisability": recognisabilities(new)}), now)

    @staticmethod
    def _result(coll: CollectionRow, image: AnalyzedImage, new: list[NewFace],
                why: list[list[str]], image_id: str,
                now: float) -> IndexResult:
        source = SourceImage(image_id=image_id, sha256=image.sha256, source=image.source_name,
                             width=image.width, height=image.height)
        return IndexResult(
            image_id, image.sha256, image.width, image.height, image.faces,
            [FaceRecord(face_id=f.face_id, external_id=f.external_id, user_id=None,
                        image=source, box=f.box, landmarks=f.landmarks, score=f.score,
                        quality=f.quality, created_at=now, model_version=coll.model_version)
             for f in new],
            [UnindexedFace(i, why[i]) for i in range(len(image.faces)) if why[i]])

    def known_hashes(self, collection: str) -> set[str]:
        """SHA-256 of every image content already indexed into the collection."""
        with self.store.transaction() as conn:
            coll = self.store.collections.get(conn, collection)
            return self.store.images.known_hashes(conn, coll.id)

    def flush(self, collection: str | None = None) -> None:
        """Bring ``collection``'s vector index up to date with the database (if given), and
        write every changed vector index to disk."""
        if collection is not None:
            with self.store.transaction() as conn:
                coll = self.store.collections.get(conn, collection)
            self.indexes.get(coll)
        self.indexes.flush()

    # -- faces -----------------------------------------------------------------------------------

    def list_faces(self, collection: str, *, limit: int = limits.DEFAULT_PAGE, after: int = 0,
                   user_id: str | None = None, face_ids: list[str] | None = None,
                   caller: Caller | None = None
                   ) -> tuple[list[FaceRecord], int | None]:
        """A page of faces in insertion order and the cursor of the next page (or None)."""
        limits.count(limit, "limit")
        with self.store.transaction() as conn:
            coll = self.store.collections.get(conn, collection)
            user_row = None
            if user_id is not None:
                user_row = self.store.users.find(conn, coll.id, user_id)
                if user_row is None:
                    return [], None
            rows = self.store.faces.page(conn, coll.id, after, limit + 1, user_row, face_ids)
        nxt = rows[limit - 1].row if len(rows) > limit else None
        page = rows[:limit]
        self.trail.note("faces.list", caller, collection=collection,
                        details={"count": len(page), "user_id": user_id})
        return page, nxt

    def face_cards(self, collection: str, face_ids: list[str], *,
                   caller: Caller | None = None
                   ) -> tuple[list[FaceCard], list[str]]:
        """The faces ``face_ids`` (at most :data:`~facesearch.limits.MAX_RESULTS`) with their
        crops, in the order asked, and the ids not in the collection. One audit event
        (``faces.crops``) names every face shown. A collection whose policy requires a purpose
        and a case for searches requires them for its crops too (refused and audited as
        ``faces.crops.refused``)."""
        limits.count(len(face_ids), "face ids")
        for fid in face_ids:
            limits.face_id(fid)
        asked = list(dict.fromkeys(face_ids))
        c = caller or Caller.local()
        with self.store.transaction() as conn:
            coll = self.store.collections.get(conn, collection)
        try:
            check_purpose(of_collection(coll.settings, self.models.calibration(coll.model_version))[1],
                          c, "view of its faces")
        except InvalidParameterError as exc:
            self.trail.note("faces.crops.refused", c, collection=collection,
                            details={"reason": exc.message, "count": len(asked)})
            raise
        with self.store.transaction() as conn:
            found = self.store.faces.by_face_ids(conn, coll.id, asked)
            crops = self.store.faces.crops(conn, list(found.values()))
        cards = [FaceCard(found[f], _file_name(found[f].image.source), crops.get(f))
                 for f in asked if f in found]
        self.trail.note("faces.crops", caller, collection=collection,
                        results=[(c.face.face_id, None) for c in cards],
                        details={"count": len(cards),
                                 "with_crop": sum(c.crop is not None for c in cards)})
        return cards, [f for f in asked if f not in found]

    def face_crop(self, collection: str, face_id: str, *,
                  caller: Caller | None = None) -> FaceCrop:
        """One face's crop (audited as :meth:`face_cards`); FaceNotFoundError when the face is
        not in the collection, NotFoundError when it was indexed before crops were kept."""
        cards, _ = self.face_cards(collection, [face_id], caller=caller)
        if not cards:
            raise FaceNotFoundError(f"face {face_id} is not in collection {collection!r}")
        if cards[0].crop is None:
            raise NotFoundError(f"face {face_id} was indexed before crops were kept: it has "
                                "none")
        return cards[0].crop


def _file_name(source: str | None) -> str | None:
    """The last part of a source path or name (a reviewer needs the file, not the server's
    folders)."""
    if not source:
        return None
    return source.replace("\\", "/").rsplit("/", 1)[-1] or None
