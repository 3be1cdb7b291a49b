"""Users service: a user groups several faces of one person in a collection (as Rekognition's).

A face belongs to at most one user; a user holds at most :data:`MAX_FACES_PER_USER` faces. A
user's score against a probe is the best similarity over the user's faces.
"""

from __future__ import annotations

import builtins
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from . import similarity as sim
from .collections import FaceCollections, validate_max_results, validate_threshold
from .decode import ImageSource, load_image
from .errors import (
    AlreadyExistsError,
    InvalidParameterError,
    NoFaceError,
    UserNotFoundError,
)
from .types import EMBEDDING_DIM, Caller, Faces, FloatArray, Image

MAX_FACES_PER_USER = 100
DEFAULT_USER_MATCH_THRESHOLD = 75.0
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
    LOW_MATCH_CONFIDENCE, FACE_NOT_ASSOCIATED_TO_USER, USER_FACE_LIMIT."""
    user: UserInfo


@dataclass(frozen=True)
class UserSearchResult:
    """Users matching a probe: candidates for human review, never identifications."""

    faces: Faces
    """The probe faces (search by image) or empty (search by id)."""
    matches: list[UserMatch]
    threshold: float
    search_id: str = ""


class UserDirectory:
    """Create, delete, list and search users of the collections in ``collections``."""

    def __init__(self, collections: FaceCollections) -> None:
        self.collections = collections
        self.store = collections.store

    def _user_row(self, conn: Connection, collection_id: int, user_id: str) -> int:
        row = self.store.get_user(conn, collection_id, user_id)
        if row is None:
            raise UserNotFoundError(f"user {user_id!r} does not exist in this collection")
        return row

    def _info(self, conn: Connection, collection_id: int, user_id: str) -> UserInfo:
        found = self.store.user_info(conn, collection_id, user_id)
        if found is None:
            raise UserNotFoundError(f"user {user_id!r} does not exist in this collection")
        return UserInfo(found[1], found[2], found[3])

    def create(self, collection: str, user_id: str, *,
               caller: Caller | None = None) -> UserInfo:
        validate_user_id(user_id)
        try:
            with self.store.transaction() as conn:
                coll = self.collections.collection(conn, collection)
                self.store.insert_user(conn, coll.id, user_id, self.collections.clock())
        except IntegrityError:
            raise AlreadyExistsError(f"user {user_id!r} already exists in {collection!r}") from None
        self.collections.record("users.create", caller, collection=collection,
                                details={"user_id": user_id})
        return self.describe(collection, user_id)

    def describe(self, collection: str, user_id: str) -> UserInfo:
        with self.store.transaction() as conn:
            coll = self.collections.collection(conn, collection)
            return self._info(conn, coll.id, user_id)

    def delete(self, collection: str, user_id: str, *, caller: Caller | None = None) -> None:
        """Delete the user; its faces stay in the collection, unassociated."""
        validate_user_id(user_id)
        with self.store.transaction() as conn:
            coll = self.collections.collection(conn, collection)
            self.store.delete_user(conn, self._user_row(conn, coll.id, user_id))
        self.collections.record("users.delete", caller, collection=collection,
                                details={"user_id": user_id})

    def list(self, collection: str, *, limit: int = 100,
             after: int = 0) -> tuple[builtins.list[UserInfo], int | None]:
        if not 1 <= limit <= 500:
            raise InvalidParameterError(f"limit must be between 1 and 500, got {limit}")
        with self.store.transaction() as conn:
            coll = self.collections.collection(conn, collection)
            rows = self.store.list_users(conn, coll.id, after, limit + 1)
        nxt = rows[limit - 1][0] if len(rows) > limit else None
        return [UserInfo(uid, created, n) for _, uid, created, n in rows[:limit]], nxt

    def associate(self, collection: str, user_id: str, face_ids: Sequence[str], *,
                  user_match_threshold: float = DEFAULT_USER_MATCH_THRESHOLD,
                  caller: Caller | None = None) -> Association:
        """Give faces to a user. A face must match the user's existing faces (best similarity
        at least ``user_match_threshold``) when the user already has faces."""
        validate_user_id(user_id)
        validate_threshold(user_match_threshold)
        if not 1 <= len(face_ids) <= MAX_FACES_PER_USER:
            raise InvalidParameterError(f"give 1 to {MAX_FACES_PER_USER} face ids")
        with self.store.transaction() as conn:
            coll = self.collections.collection(conn, collection)
            urow = self._user_row(conn, coll.id, user_id)
            found = self.store.faces_by_face_ids(conn, coll.id, face_ids)
            owned = self.store.face_rows_of(conn, coll.id, user_row=urow)
            owned_vecs = self.store.embeddings(conn, np.array(owned, np.int64), EMBEDDING_DIM)
            done: builtins.list[str] = []
            failed: builtins.list[tuple[str, builtins.list[str]]] = []
            take: builtins.list[int] = []
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
                    vec = self.store.embeddings(conn, np.array([f.row]), EMBEDDING_DIM)[0]
                    best = float(sim.to_similarity(owned_vecs @ vec,
                                                    coll.model_version).max())
                    if best < user_match_threshold:
                        failed.append((fid, ["LOW_MATCH_CONFIDENCE"]))
                        continue
                take.append(f.row)
                done.append(fid)
            self.store.set_face_user(conn, take, urow)
            info = self._info(conn, coll.id, user_id)
        self.collections.record("users.associate", caller, collection=collection,
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
            coll = self.collections.collection(conn, collection)
            self._user_row(conn, coll.id, user_id)  # the user must exist
            found = self.store.faces_by_face_ids(conn, coll.id, face_ids)
            done: builtins.list[str] = []
            failed: builtins.list[tuple[str, builtins.list[str]]] = []
            rows: builtins.list[int] = []
            for fid in dict.fromkeys(face_ids):
                f = found.get(fid)
                if f is None:
                    failed.append((fid, ["FACE_NOT_FOUND"]))
                elif f.user_id != user_id:
                    failed.append((fid, ["FACE_NOT_ASSOCIATED_TO_USER"]))
                else:
                    rows.append(f.row)
                    done.append(fid)
            self.store.set_face_user(conn, rows, None)
            info = self._info(conn, coll.id, user_id)
        self.collections.record("users.disassociate", caller, collection=collection,
                                results=[(f, None) for f in done],
                                details={"user_id": user_id, "failed": len(failed)})
        return Association(done, failed, info)

    def _rank(self, collection: str, queries: FloatArray, max_users: int,
              threshold: float | None, caller: Caller, operation: str,
              probe_sha256: str | None = None, exclude_user: str | None = None,
              rate_limit: bool = True) -> tuple[builtins.list[UserMatch], float, str]:
        """Users ranked by their best face's similarity to any query; policy and audit apply."""
        with self.store.transaction() as conn:
            coll = self.collections.collection(conn, collection)
            self.collections._check_model(coll)
        used = self.collections._authorize(coll, caller, threshold, max_users,
                                           rate_limit=rate_limit)
        search_id = str(uuid.uuid4())
        with self.store.transaction() as conn:
            rows, owners = self.store.user_face_rows(conn, coll.id)
            face_ids = {r: f.face_id for r, f in self.store.faces_by_rows(conn, rows).items()}
        matches: builtins.list[UserMatch] = []
        if len(rows):
            vecs = self.collections.vector_index(coll).vectors(rows)
            best = (vecs @ np.asarray(queries, np.float32).T).max(axis=1)
            scores = sim.to_similarity(best, coll.model_version)
            top: dict[str, tuple[float, int]] = {}
            for s, owner, row in zip(scores, owners, rows, strict=True):
                if owner == exclude_user:
                    continue
                if owner not in top or s > top[owner][0]:
                    top[owner] = (float(s), int(row))
            ranked = sorted(top.items(), key=lambda kv: -kv[1][0])
            matches = [UserMatch(uid, s, face_ids[row]) for uid, (s, row) in ranked
                       if s >= used][:max_users]
        self.collections.record(
            operation, caller, collection=collection, probe_sha256=probe_sha256, threshold=used,
            results=[(m.face_id, round(m.similarity, 4)) for m in matches],
            details={"search_id": search_id, "users": ",".join(m.user_id for m in matches)})
        return matches, used, search_id

    def search(self, collection: str, *, user_id: str | None = None, face_id: str | None = None,
               max_users: int = 10, threshold: float | None = None,
               caller: Caller | None = None) -> UserSearchResult:
        """Users matching a stored user (its faces) or a stored face."""
        caller = caller or Caller.local()
        validate_max_results(max_users)
        validate_threshold(threshold)
        if (user_id is None) == (face_id is None):
            raise InvalidParameterError("give exactly one of user id or face id")
        if user_id is not None:
            validate_user_id(user_id)
            with self.store.transaction() as conn:
                coll = self.collections.collection(conn, collection)
                urow = self._user_row(conn, coll.id, user_id)
                rows = np.array(self.store.face_rows_of(conn, coll.id, user_row=urow), np.int64)
                queries = self.store.embeddings(conn, rows, EMBEDDING_DIM)
            if not len(queries):
                raise InvalidParameterError(f"user {user_id!r} has no faces to search with")
            matches, used, sid = self._rank(collection, queries, max_users, threshold, caller,
                                            "users.search", exclude_user=user_id)
        else:
            assert face_id is not None
            queries = self.collections.face_vector(collection, face_id)
            matches, used, sid = self._rank(collection, queries, max_users, threshold, caller,
                                            "users.search")
        return UserSearchResult(Faces.empty(), matches, used, sid)

    def search_by_image(self, collection: str, source: ImageSource | Image, *,
                        max_users: int = 10, threshold: float | None = None,
                        caller: Caller | None = None) -> UserSearchResult:
        """Users matching the probe image's largest face."""
        caller = caller or Caller.local()
        validate_max_results(max_users)
        validate_threshold(threshold)
        # Policy and rate limit before the probe is decoded and analysed (not taken again).
        with self.store.transaction() as conn:
            coll = self.collections.collection(conn, collection)
            self.collections._check_model(coll)
        self.collections._authorize(coll, caller, threshold, max_users)
        image = source if isinstance(source, Image) else load_image(source,
                                                                    self.collections.limits)
        faces = self.collections.analyze(image, 1)
        if not len(faces):
            raise NoFaceError("no face was found in the probe image")
        assert faces.embeddings is not None
        matches, used, sid = self._rank(collection, faces.embeddings, max_users, threshold,
                                        caller, "users.search.image", probe_sha256=image.sha256,
                                        rate_limit=False)
        return UserSearchResult(faces, matches, used, sid)
