"""Users service: a user groups several faces of one person in a collection (as Rekognition's).

A face belongs to at most one user; a user holds at most :data:`MAX_FACES_PER_USER` faces. A
user's score against a probe is the best similarity over the user's faces.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from facesearch import limits
from facesearch.errors import (
    AlreadyExistsError,
    InvalidParameterError,
    NoFaceError,
    UserNotFoundError,
)
from facesearch.governance.calibration import ThresholdRisk
from facesearch.services.collection import FaceCollections
from facesearch.services.models import Models
from facesearch.services.search import Admission, SearchGate
from facesearch.types import EMBEDDING_DIM, Caller, Faces, FloatArray, Image, QualityFilter
from facesearch.vision import similarity as sim
from facesearch.vision.decode import ImageSource, load_image
from facesearch.vision.quality import reasons as quality_reasons

MAX_FACES_PER_USER = 100
_USER_ID = re.compile(r"^[a-zA-Z0-9_.\-:]{1,128}$")


def validate_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not _USER_ID.match(user_id):
        raise InvalidParameterError(
            f"invalid user id {user_id!r}: use 1-128 letters, digits, '_', '.', '-' or ':'"
        )
    return user_id


@dataclass(frozen=True)
class UserInfo:
    user_id: str
    created_at: float
    face_count: int

    @property
    def status(self) -> str:
        return "ACTIVE" if self.face_count else "CREATED"


@dataclass(frozen=True)
class UserMatch:
    user_id: str
    similarity: float
    face_id: str
    """The user's face that matched best."""


@dataclass(frozen=True)
class Association:
    """Result of associating (or disassociating) faces with a user."""

    done: list[str]
    failed: list[tuple[str, list[str]]]
    """(face id, reasons): FACE_NOT_FOUND, ASSOCIATED_TO_A_DIFFERENT_USER,
    LOW_MATCH_CONFIDENCE, USER_FACE_LIMIT; disassociating also FACE_NOT_ASSOCIATED_TO_USER (the
    face belongs to no user)."""
    user: UserInfo


@dataclass(frozen=True)
class UserSearchResult:
    """Users matching a probe: candidates for human review, never identifications."""

    faces: Faces
    """The probe's searched face (search by image: its largest) or empty (search by id)."""
    matches: list[UserMatch]
    threshold: float
    search_id: str = ""
    risk: ThresholdRisk | None = None
    """What the threshold means for the collection (false-match rate, expected FPIR)."""
    unsearched: Faces = field(default_factory=Faces.empty)
    """The probe's other faces (not searched: FACE_NOT_LARGEST)."""
    quality_reasons: list[str] = field(default_factory=list)
    """Why the largest face was not searched either (it fails the quality filter; then
    ``matches`` is empty)."""


class UserDirectory:
    """Create, delete, list and search users of the collections in ``collections``."""

    def __init__(self, collections: FaceCollections, gate: SearchGate, models: Models) -> None:
        self.collections = collections
        self.gate = gate
        self.models = models
        self.store = collections.store
        self.trail = collections.trail

    def _user_row(self, conn: Connection, collection_id: int, user_id: str) -> int:
        row = self.store.users.find(conn, collection_id, user_id)
        if row is None:
            raise UserNotFoundError(f"user {user_id!r} does not exist in this collection")
        return row

    def _info(self, conn: Connection, collection_id: int, user_id: str) -> UserInfo:
        found = self.store.users.info(conn, collection_id, user_id)
        if found is None:
            raise UserNotFoundError(f"user {user_id!r} does not exist in this collection")
        return UserInfo(found[1], found[2], found[3])

    def create(self, collection: str, user_id: str, *,
               caller: Caller | None = None) -> UserInfo:
        validate_user_id(user_id)
        try:
            with self.store.transaction() as conn:
                coll = self.store.collections.get(conn, collection)
                self.store.users.insert(conn, coll.id, user_id, self.collections.clock())
        except IntegrityError:
            raise AlreadyExistsError(f"user {user_id!r} already exists in {collection!r}") from None
        self.trail.note("users.create", caller, collection=collection,
                        details={"user_id": user_id})
        return self.describe(collection, user_id)

    def describe(self, collection: str, user_id: str) -> UserInfo:
        with self.store.transaction() as conn:
            coll = self.store.collections.get(conn, collection)
            return self._info(conn, coll.id, user_id)

    def delete(self, collection: str, user_id: str, *, caller: Caller | None = None) -> None:
        """Delete the user; its faces stay in the collection, unassociated."""
        validate_user_id(user_id)
        with self.store.transaction() as conn:
            coll = self.store.collections.get(conn, collection)
            self.store.users.delete(conn, self._user_row(conn, coll.id, user_id))
        self.trail.note("users.delete", caller, collection=collection,
                        details={"user_id": user_id})

    def list_users(self, collection: str, *, limit: int = 100,
             after: int = 0) -> tuple[list[UserInfo], int | None]:
        if not 1 <= limit <= 500:
            raise InvalidParameterError(f"limit must be between 1 and 500, got {limit}")
        with self.store.transaction() as conn:
            coll = self.store.collections.get(conn, collection)
            rows = self.store.users.page(conn, coll.id, after, limit + 1)
        nxt = rows[limit - 1][0] if len(rows) > limit else None
        return [UserInfo(uid, created, n) for _, uid, created, n in rows[:limit]], nxt

    def associate(self, collection: str, user_id: str, face_ids: Sequence[str], *,
                  user_match_threshold: float | None = None,
                  caller: Caller | None = None) -> Association:
        """Give faces to a user. A face must match the user's existing faces (best similarity
        at least ``user_match_threshold``; None: the gate's default,
        :meth:`SearchGate.user_match_threshold`) when the user already has faces."""
        validate_user_id(user_id)
        limits.threshold(user_match_threshold)
        user_match_threshold = self.gate.user_match_threshold(user_match_threshold)
        if not 1 <= len(face_ids) <= MAX_FACES_PER_USER:
            raise InvalidParameterError(f"give 1 to {MAX_FACES_PER_USER} face ids")
        with self.store.transaction() as conn:
            coll = self.store.collections.get(conn, collection)
            urow = self._user_row(conn, coll.id, user_id)
            found = self.store.faces.by_face_ids(conn, coll.id, face_ids)
            owned = self.store.faces.rows_of(conn, coll.id, user_row=urow)
            owned_vecs = self.store.faces.embeddings(conn, np.array(owned, np.int64), EMBEDDING_DIM)
            done: list[str] = []
            failed: list[tuple[str, list[str]]] = []
            take: list[int] = []
            for fid in dict.fromkeys(face_ids):
                f = found.get(fid)
                if f is None:
                    failed.append((fid, ["FACE_NOT_FOUND"]))
                    continue
                if f.user_id is not None and f.user_id != user_id:
                    failed.append((fid, ["ASSOCIATED_TO_A_DIFFERENT_USER"]))
                    continue
                if f.user_id == user_id:
                    done.append(fid)
                    continue
                if len(owned) + len(take) >= MAX_FACES_PER_USER:
                    failed.append((fid, ["USER_FACE_LIMIT"]))
                    continue
                if len(owned_vecs):
                    vec = self.store.faces.embeddings(conn, np.array([f.row]), EMBEDDING_DIM)[0]
                    best = float(sim.to_similarity(owned_vecs @ vec,
                                                    coll.model_version).max())
                    if best < user_match_threshold:
                        failed.append((fid, ["LOW_MATCH_CONFIDENCE"]))
                        continue
                take.append(f.row)
                done.append(fid)
            self.store.users.assign_faces(conn, take, urow)
            info = self._info(conn, coll.id, user_id)
        self.trail.note("users.associate", caller, collection=collection,
                        threshold=user_match_threshold,
                        results=[(f, None) for f in done],
                        details={"user_id": user_id, "failed": len(failed)})
        return Association(done, failed, info)

    def disassociate(self, collection: str, user_id: str, face_ids: Sequence[str], *,
                     caller: Caller | None = None) -> Association:
        validate_user_id(user_id)
        if not 1 <= len(face_ids) <= MAX_FACES_PER_USER:
            raise InvalidParameterError(f"give 1 to {MAX_FACES_PER_USER} face ids")
        with self.store.transaction() as conn:
            coll = self.store.collections.get(conn, collection)
            self._user_row(conn, coll.id, user_id)  # the user must exist
            found = self.store.faces.by_face_ids(conn, coll.id, face_ids)
            done: list[str] = []
            failed: list[tuple[str, list[str]]] = []
            rows: list[int] = []
            for fid in dict.fromkeys(face_ids):
                f = found.get(fid)
                if f is None:
                    failed.append((fid, ["FACE_NOT_FOUND"]))
                elif f.user_id is None:
                    failed.append((fid, ["FACE_NOT_ASSOCIATED_TO_USER"]))
                elif f.user_id != user_id:
                    failed.append((fid, ["ASSOCIATED_TO_A_DIFFERENT_USER"]))
                else:
                    rows.append(f.row)
                    done.append(fid)
            self.store.users.assign_faces(conn, rows, None)
            info = self._info(conn, coll.id, user_id)
        self.trail.note("users.disassociate", caller, collection=collection,
                        results=[(f, None) for f in done],
                        details={"user_id": user_id, "failed": len(failed)})
        return Association(done, failed, info)

    def _rank(self, adm: Admission, queries: FloatArray, *, probe_sha256: str | None = None,
              exclude_user: str | None = None) -> list[UserMatch]:
        """Users ranked by their best face's similarity to any query, at or above the
        admitted threshold; the search's one audit record."""
        coll = adm.collection
        with self.store.transaction() as conn:
            rows, owners = self.store.users.face_rows(conn, coll.id)
            found = self.store.faces.by_rows(conn, rows.tolist())
            face_ids = {r: f.face_id for r, f in found.items()}
        matches: list[UserMatch] = []
        if len(rows):
            q = np.asarray(queries, np.float32).T
            index = self.gate.indexes.get(coll)
            best = (index.vectors(rows) @ q).max(axis=1)
            if not index.exact_vectors:
                # 8-bit copies first; the faces that could reach the threshold, exactly
                near = np.flatnonzero(sim.to_similarity(best + 0.01, coll.model_version)
                                      >= adm.threshold)
                with self.store.transaction() as conn:
                    exact = self.store.faces.embeddings(conn, np.asarray(rows)[near], EMBEDDING_DIM)
                best = np.full(len(rows), -1.0, np.float32)
                best[near] = (exact @ q).max(axis=1)
            scores = sim.to_similarity(best, coll.model_version)
            top: dict[str, tuple[float, int]] = {}
            for s, owner, row in zip(scores, owners, rows, strict=True):
                if owner == exclude_user:
                    continue
                if owner not in top or s > top[owner][0]:
                    top[owner] = (float(s), int(row))
            ranked = sorted(top.items(), key=lambda kv: -kv[1][0])
            matches = [UserMatch(uid, s, face_ids[row]) for uid, (s, row) in ranked
                       if s >= adm.threshold][:adm.max_results]
        self.gate.record_search(adm, [(m.face_id, m.similarity) for m in matches],
                                probe_sha256=probe_sha256,
                                details={"users": ",".join(m.user_id for m in matches)})
        return matches

    def search(self, collection: str, *, user_id: str | None = None, face_id: str | None = None,
               max_users: int = limits.DEFAULT_MAX_RESULTS, threshold: float | None = None,
               caller: Caller | None = None) -> UserSearchResult:
        """Users matching a stored user (its faces) or a stored face."""
        if (user_id is None) == (face_id is None):
            raise InvalidParameterError("give exactly one of user id or face id")
        adm = self.gate.admit(collection, operation="users.search", caller=caller,
                              threshold=threshold, max_results=max_users)
        if user_id is not None:
            validate_user_id(user_id)
            with self.store.transaction() as conn:
                urow = self._user_row(conn, adm.collection.id, user_id)
                rows = np.array(self.store.faces.rows_of(conn, adm.collection.id, user_row=urow),
                                np.int64)
                queries = self.store.faces.embeddings(conn, rows, EMBEDDING_DIM)
            if not len(queries):
                raise InvalidParameterError(f"user {user_id!r} has no faces to search with")
            matches = self._rank(adm, queries, exclude_user=user_id)
        else:
            assert face_id is not None
            matches = self._rank(adm, self.gate.face_vector(collection, face_id))
        return UserSearchResult(Faces.empty(), matches, adm.threshold, adm.search_id, adm.risk)

    def search_by_image(self, collection: str, source: ImageSource | Image, *,
                        max_users: int = limits.DEFAULT_MAX_RESULTS,
                        threshold: float | None = None,
                        quality_filter: QualityFilter = QualityFilter.NONE,
                        caller: Caller | None = None) -> UserSearchResult:
        """Users matching the probe image's largest face (its other faces are reported as
        not searched). Policy and rate limit apply before the probe is decoded; a largest
        face that fails ``quality_filter`` is not searched (no candidates, the reasons in
        the result, as Rekognition's SearchUsersByImage answers)."""
        adm = self.gate.admit(collection, operation="users.search.image", caller=caller,
                              threshold=threshold, max_results=max_users, probe=source)
        image = source if isinstance(source, Image) else load_image(source,
                                                                    self.collections.limits)
        pipeline = self.models.pipeline
        faces = pipeline.detect(image)
        if not len(faces):
            raise NoFaceError("no face was found in the probe image")
        why = quality_reasons(faces[:1], quality_filter)[0]
        if why:
            self.gate.record_search(adm, [], probe_sha256=image.sha256,
                                    details={"not_searched": ",".join(why)})
            return UserSearchResult(faces[:1], [], adm.threshold, adm.search_id, adm.risk,
                                    faces[1:], why)
        probe = pipeline.embed(image, faces[:1])
        assert probe.embeddings is not None and probe.quality is not None
        adm, _ = self.gate.probe_quality(adm, image, probe.quality.recognisability)
        matches = self._rank(adm, probe.embeddings, probe_sha256=image.sha256)
        return UserSearchResult(probe, matches, adm.threshold, adm.search_id, adm.risk,
                                faces[1:])
