"""Metadata store: collections, indexed images, faces (with their vectors) and users.

SQLAlchemy Core on SQLite (the embedded default: WAL mode with foreign keys and
``secure_delete`` on, so deleted rows are overwritten, not merely unlinked) or PostgreSQL (one
database for several API nodes); see :mod:`facesearch.storage.database`. The store is the
source of truth: every face row holds its embedding, and each collection's vector index is a
cache rebuilt from it. Row ids are never reused (``AUTOINCREMENT``, or a sequence), so an id
in an index snapshot always means the same face; within a collection they also grow in the
order faces are committed (on PostgreSQL, inserts into one collection take its row lock
first), so "faces after the highest row seen" misses none.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import (
    Connection,
    Engine,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from facesearch.errors import CollectionNotFoundError, EncryptionError
from facesearch.storage import database, schema
from facesearch.storage.crypto import Sealer, is_sealed
from facesearch.storage.database import Target
from facesearch.storage.schema import (
    answers_t,
    audit_outbox_t,
    collections_t,
    face_crops_t,
    faces_t,
    images_t,
    signatures_t,
    tags_t,
    users_t,
    vector_changes_t,
    vector_sync_t,
)
from facesearch.types import FaceView, FloatArray, IntArray
from facesearch.vision.crop import FaceCrop


CHANGES_KEPT_S = 30 * 86_400.0
"""How long the vector change log keeps an entry (s): a node whose vector index is older
reconciles it with the database in full instead of applying the log."""


@dataclass(frozen=True)
class CollectionRow:
    id: int
    name: str
    model_version: str
    created_at: float
    generation: int
    settings: dict[str, Any]


@dataclass(frozen=True)
class FaceRecord:
    """A face stored in a collection: the one record type of a face, from the database to
    every interface (``facesearch.responses`` turns it into JSON).

    ``box`` is (x1, y1, x2, y2) and ``landmarks`` five (x, y) points, in pixels of the source
    image (``image_width`` x ``image_height``); ``score`` the detector's confidence (0-1);
    ``quality``: ``size`` (inter-ocular px), ``sharpness`` and ``brightness`` (0-100),
    ``yaw``, ``pitch``, ``roll`` (degrees), and when measured ``faceness`` (0-1) and
    ``recognisability`` (0-100). ``row`` is the database row (the vector index's
    id), internal to the service.
    """

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
    row: int = -1

    def view(self) -> FaceView:
        """The face as plain numbers (in pixels of its source image)."""
        return FaceView(self.box, self.score,
                        tuple((float(x), float(y)) for x, y in self.landmarks),
                        dict(self.quality))


@dataclass(frozen=True)
class NewFace:
    """A face to insert (everything but the ids the store assigns)."""

    face_id: str
    external_id: str | None
    box: tuple[float, float, float, float]
    landmarks: list[list[float]]
    score: float
    quality: dict[str, float]
    embedding: FloatArray
    crop: FaceCrop | None = None


@dataclass(frozen=True)
class ImageRow:
    id: int
    image_id: str
    sha256: str
    source: str | None
    external_id: str | None
    faces_detected: int
    faces_indexed: int


def _face_columns() -> list[Any]:
    f = faces_t.c
    return [
        f.id, f.face_id, images_t.c.image_id, images_t.c.sha256,
        images_t.c.source, f.external_id, users_t.c.user_id, f.x1, f.y1, f.x2, f.y2,
        f.landmarks, f.score, f.q_size, f.q_sharpness, f.q_brightness, f.q_yaw, f.q_pitch,
        f.q_roll, f.q_faceness, f.q_recognisability, f.image_width, f.image_height,
        f.created_at, f.model_version,
    ]


def _face_row(r: Any) -> FaceRecord:
    return FaceRecord(
        row=r.id, face_id=r.face_id, image_id=r.image_id,
        image_sha256=r.sha256, source=r.source, external_id=r.external_id, user_id=r.user_id,
        box=(r.x1, r.y1, r.x2, r.y2), landmarks=json.loads(r.landmarks), score=r.score,
        quality={"size": r.q_size, "sharpness": r.q_sharpness, "brightness": r.q_brightness,
                 "yaw": r.q_yaw, "pitch": r.q_pitch, "roll": r.q_roll,
                 **({} if r.q_faceness is None else {"faceness": r.q_faceness}),
                 **({} if r.q_recognisability is None
                    else {"recognisability": r.q_recognisability})},
        image_width=r.image_width, image_height=r.image_height, created_at=r.created_at,
        model_version=r.model_version,
    )


def crop_aad(face_id: str) -> bytes:
    """What a sealed crop is bound to: its face."""
    return b"crop:" + face_id.encode()


class Store:
    """The metadata database of one data directory (``<home>/facesearch.db``) or deployment
    (a PostgreSQL URL), made or migrated on open."""

    def __init__(self, target: Target, sealer: Sealer | None = None) -> None:
        schema.create(target)
        self.target = target
        self.sealer = sealer
        self.engine: Engine = database.create(target)
        self.postgres = database.is_postgres(self.engine)
        self._face_counts: dict[tuple[int, float], tuple[tuple[int, int], int]] = {}

    def close(self) -> None:
        self.engine.dispose()

    # -- request signatures (replays refused across API nodes) --------------------------

    def admit_signature(self, signature: str, expires_at: float, now: float) -> bool:
        """Remember ``signature`` until ``expires_at`` (s since the epoch); False when it is
        remembered already and has not expired (a replay). One statement: an insert, or the
        renewal of the same signature's expired row."""
        dialect = postgresql if self.postgres else sqlite
        stmt = dialect.insert(signatures_t).values(signature=signature, expires_at=expires_at)
        stmt = stmt.on_conflict_do_update(
            index_elements=[signatures_t.c.signature],
            set_={"expires_at": stmt.excluded.expires_at},
            where=signatures_t.c.expires_at <= now)
        with self.transaction() as conn:
            return conn.execute(stmt.returning(signatures_t.c.signature)).first() is not None

    def purge_signatures(self, now: float) -> int:
        """Delete the signatures expired by ``now``; how many."""
        with self.transaction() as conn:
            return int(conn.execute(delete(signatures_t)
                                    .where(signatures_t.c.expires_at <= now)).rowcount)

    def forget_signature(self, signature: str) -> None:
        with self.transaction() as conn:
            conn.execute(delete(signatures_t).where(signatures_t.c.signature == signature))

    # -- answers of requests that run once (repeated signatures, client request tokens) ----

    def claim_answer(self, key: str, fingerprint: str, expires_at: float, now: float) -> bool:
        """Claim ``key`` for a request about to run (its answer pending) until ``expires_at``;
        False when another request holds it and it has not expired. One statement, as
        :meth:`admit_signature`."""
        dialect = postgresql if self.postgres else sqlite
        stmt = dialect.insert(answers_t).values(key=key, fingerprint=fingerprint,
                                                expires_at=expires_at, status=None, body=None)
        stmt = stmt.on_conflict_do_update(
            index_elements=[answers_t.c.key],
            set_={"fingerprint": stmt.excluded.fingerprint,
                  "expires_at": stmt.excluded.expires_at, "status": None, "body": None},
            where=answers_t.c.expires_at <= now)
        with self.transaction() as conn:
            return conn.execute(stmt.returning(answers_t.c.key)).first() is not None

    def answer_of(self, key: str) -> tuple[str, int | None, bytes | None] | None:
        """``(fingerprint, status, body)`` of a claimed key (status None: still running), or
        None when nothing holds it. The body is opened when it was sealed."""
        with self.transaction() as conn:
            r = conn.execute(select(answers_t.c.fingerprint, answers_t.c.status,
                                    answers_t.c.body).where(answers_t.c.key == key)).first()
        if r is None:
            return None
        body = r.body
        if body is not None and self.sealer is not None:
            body = self.sealer.open(body, key.encode())
        return str(r.fingerprint), r.status, body

    def record_answer(self, key: str, status: int, body: bytes, expires_at: float) -> None:
        """The answer of the request that claimed ``key``, kept until ``expires_at`` (sealed
        when encryption at rest is on: answers name faces, images and people)."""
        if self.sealer is not None:
            body = self.sealer.seal(body, key.encode())
        with self.transaction() as conn:
            conn.execute(update(answers_t).where(answers_t.c.key == key)
                         .values(status=status, body=body, expires_at=expires_at))

    def drop_answer(self, key: str) -> None:
        """Release ``key``: its request did nothing to remember (it may run again)."""
        with self.transaction() as conn:
            conn.execute(delete(answers_t).where(answers_t.c.key == key))

    def purge_answers(self, now: float) -> int:
        """Delete the answers expired by ``now``; how many."""
        with self.transaction() as conn:
            return int(conn.execute(delete(answers_t)
                                    .where(answers_t.c.expires_at <= now)).rowcount)

    # -- audit outbox ------------------------------------------------------------------

    def add_outbox(self, conn: Connection, outbox_id: str, event_json: str, now: float) -> None:
        conn.execute(insert(audit_outbox_t).values(outbox_id=outbox_id, event=event_json,
                                                   created_at=now))

    def outbox(self, conn: Connection, limit: int = 1000,
               before: float | None = None) -> list[tuple[str, str]]:
        """The oldest ``limit`` outbox rows as ``(outbox_id, event JSON)`` (``before``: only
        those staged before that time)."""
        q = select(audit_outbox_t.c.outbox_id, audit_outbox_t.c.event)
        if before is not None:
            q = q.where(audit_outbox_t.c.created_at < before)
        rows = conn.execute(q.order_by(audit_outbox_t.c.created_at, audit_outbox_t.c.outbox_id)
                            .limit(limit)).all()
        return [(r.outbox_id, r.event) for r in rows]

    def remove_outbox(self, conn: Connection, outbox_ids: Sequence[str]) -> None:
        conn.execute(delete(audit_outbox_t).where(audit_outbox_t.c.outbox_id.in_(
            list(outbox_ids))))

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction that sees one state of the database throughout."""
        with database.snapshot(self.engine) as conn:
            yield conn

    # -- collections -------------------------------------------------------------------

    def insert_collection(self, conn: Connection, name: str, model_version: str, now: float,
                          settings: dict[str, Any]) -> int:
        res = conn.execute(insert(collections_t).values(
            name=name, model_version=model_version, created_at=now, generation=0,
            settings=json.dumps(settings, sort_keys=True)))
        return int(res.inserted_primary_key[0])

    def get_collection(self, conn: Connection, name: str) -> CollectionRow | None:
        r = conn.execute(select(collections_t).where(collections_t.c.name == name)).first()
        if r is None:
            return None
        return CollectionRow(r.id, r.name, r.model_version, r.created_at, r.generation,
                             json.loads(r.settings))

    def collection(self, conn: Connection, name: str) -> CollectionRow:
        """The collection ``name``; CollectionNotFoundError when there is none."""
        row = self.get_collection(conn, name)
        if row is None:
            raise CollectionNotFoundError(f"collection {name!r} does not exist")
        return row

    def list_collections(self, conn: Connection) -> list[CollectionRow]:
        rows = conn.execute(select(collections_t).order_by(collections_t.c.name)).all()
        return [CollectionRow(r.id, r.name, r.model_version, r.created_at, r.generation,
                              json.loads(r.settings)) for r in rows]

    def update_collection_settings(self, conn: Connection, collection_id: int,
                                   settings: dict[str, Any]) -> None:
        conn.execute(update(collections_t).where(collections_t.c.id == collection_id)
                     .values(settings=json.dumps(settings, sort_keys=True)))

    def delete_collection(self, conn: Connection, collection_id: int) -> None:
        """Delete a collection, its faces, users, images and tags."""
        name = conn.execute(select(collections_t.c.name)
                            .where(collections_t.c.id == collection_id)).scalar()
        conn.execute(delete(tags_t).where(tags_t.c.kind == "collection", tags_t.c.name == name))
        conn.execute(delete(faces_t).where(faces_t.c.collection_id == collection_id))
        conn.execute(delete(users_t).where(users_t.c.collection_id == collection_id))
        conn.execute(delete(images_t).where(images_t.c.collection_id == collection_id))
        conn.execute(delete(collections_t).where(collections_t.c.id == collection_id))

    def bump_generation(self, conn: Connection, collection_id: int,
                        deleted: Sequence[int] | None, now: float) -> int:
        """Start the collection's next generation, logging the face rows it deletes
        (``deleted``; None: every vector replaced) in the vector change log, and drop the
        log's entries older than :data:`CHANGES_KEPT_S`; returns the new generation. The
        update takes the collection's row lock first, so that its generations commit in
        order."""
        gen = int(conn.execute(update(collections_t).where(collections_t.c.id == collection_id)
                               .values(generation=collections_t.c.generation + 1)
                               .returning(collections_t.c.generation)).scalar_one())
        rows: list[int | None] = [None] if deleted is None else [int(r) for r in deleted]
        for start in range(0, len(rows), 5000):
            conn.execute(insert(vector_changes_t), [
                {"collection_id": collection_id, "generation": gen, "face_row": r,
                 "created_at": now} for r in rows[start:start + 5000]])
        conn.execute(delete(vector_changes_t).where(
            vector_changes_t.c.collection_id == collection_id,
            vector_changes_t.c.created_at < now - CHANGES_KEPT_S))
        return gen

    def vector_changes(self, conn: Connection, collection_id: int, since: int,
                       until: int) -> IntArray | None:
        """The face rows the collection deleted in its generations ``since`` (excluded) to
        ``until``, from the change log; None when the log cannot tell (a generation missing,
        pruned or from before the log, or every vector replaced): reconcile in full."""
        if since < 0 or until < since:
            return None
        rows = conn.execute(select(vector_changes_t.c.generation, vector_changes_t.c.face_row)
                            .where(vector_changes_t.c.collection_id == collection_id,
                                   vector_changes_t.c.generation > since,
                                   vector_changes_t.c.generation <= until)).all()
        if {r.generation for r in rows} != set(range(since + 1, until + 1)):
            return None
        if any(r.face_row is None for r in rows):
            return None
        return np.unique(np.fromiter((r.face_row for r in rows), np.int64, count=len(rows)))

    def vectors_replaced(self, conn: Connection, collection_id: int, since: int,
                         until: int) -> bool:
        """Whether the log says every vector of the collection was replaced in its
        generations ``since`` (excluded) to ``until``."""
        return conn.execute(select(vector_changes_t.c.id).where(
            vector_changes_t.c.collection_id == collection_id,
            vector_changes_t.c.generation > since, vector_changes_t.c.generation <= until,
            vector_changes_t.c.face_row.is_(None)).limit(1)).first() is not None

    def sync_position(self, conn: Connection, backend: str,
                      collection_id: int) -> tuple[int, int] | None:
        """``(generation, top row)`` a shared vector backend has applied, or None."""
        r = conn.execute(select(vector_sync_t.c.generation, vector_sync_t.c.top_row).where(
            vector_sync_t.c.backend == backend,
            vector_sync_t.c.collection_id == collection_id)).first()
        return None if r is None else (int(r.generation), int(r.top_row))

    def set_sync_position(self, conn: Connection, backend: str, collection_id: int,
                          generation: int, top_row: int) -> None:
        dialect = postgresql if self.postgres else sqlite
        stmt = dialect.insert(vector_sync_t).values(
            backend=backend, collection_id=collection_id, generation=generation,
            top_row=top_row)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=[vector_sync_t.c.backend, vector_sync_t.c.collection_id],
            set_={"generation": generation, "top_row": top_row}))

    def face_count(self, conn: Connection, coll: CollectionRow) -> int:
        """Faces in ``coll``, counted again only when it changed since the last count (its
        :meth:`index_state`: two lookups of an index, where counting scans the collection);
        after additions alone (same generation, a higher top row) only the faces above the
        last count's top row are counted (counting 1,000,000 faces again after each
        IndexFaces cost PostgreSQL about 25 ms a request: docs/benchmarks.md)."""
        key = (coll.id, coll.created_at)
        state = self.index_state(conn, coll.id)
        hit = self._face_counts.get(key)
        if hit is not None and hit[0] == state:
            return hit[1]
        where = faces_t.c.collection_id == coll.id
        if hit is not None and hit[0][0] == state[0] and hit[0][1] < state[1]:
            n = hit[1] + int(conn.execute(select(func.count()).select_from(faces_t).where(
                where, faces_t.c.id > hit[0][1])).scalar_one())
        else:
            n = int(conn.execute(select(func.count()).select_from(faces_t)
                                 .where(where)).scalar_one())
        self._face_counts[key] = (state, n)
        return n

    def index_state(self, conn: Connection, collection_id: int) -> tuple[int, int]:
        """``(generation, max face row id)``: changes when faces are deleted or added."""
        gen = conn.execute(select(collections_t.c.generation)
                           .where(collections_t.c.id == collection_id)).scalar_one()
        top = conn.execute(select(func.max(faces_t.c.id))
                           .where(faces_t.c.collection_id == collection_id)).scalar()
        return int(gen), int(top or 0)

    def counts(self, conn: Connection, collection_id: int) -> tuple[int, int, int]:
        """``(faces, users, images)`` in a collection."""
        nf = conn.execute(select(func.count()).select_from(faces_t)
                          .where(faces_t.c.collection_id == collection_id)).scalar_one()
        nu = conn.execute(select(func.count()).select_from(users_t)
                          .where(users_t.c.collection_id == collection_id)).scalar_one()
        ni = conn.execute(select(func.count()).select_from(images_t)
                          .where(images_t.c.collection_id == collection_id)).scalar_one()
        return int(nf), int(nu), int(ni)

    # -- images ------------------------------------------------------------------------

    def find_image(self, conn: Connection, collection_id: int, sha256: str) -> ImageRow | None:
        r = conn.execute(select(images_t).where(images_t.c.collection_id == collection_id,
                                                images_t.c.sha256 == sha256)).first()
        if r is None:
            return None
        return ImageRow(r.id, r.image_id, r.sha256, r.source, r.external_id, r.faces_detected,
                        r.faces_indexed)

    def known_hashes(self, conn: Connection, collection_id: int) -> set[str]:
        rows = conn.execute(select(images_t.c.sha256)
                            .where(images_t.c.collection_id == collection_id))
        return {r[0] for r in rows}

    def add_image_faces(self, conn: Connection, image_row: int, detected: int,
                        indexed: int) -> None:
        """Record another (forced) indexing of an image already in the collection."""
        conn.execute(update(images_t).where(images_t.c.id == image_row).values(
            faces_detected=detected,
            faces_indexed=images_t.c.faces_indexed + indexed))

    def insert_image(self, conn: Connection, collection_id: int, image_id: str, sha256: str,
                     source: str | None, external_id: str | None, width: int, height: int,
                     faces_detected: int, faces_indexed: int, now: float) -> int:
        res = conn.execute(insert(images_t).values(
            image_id=image_id, collection_id=collection_id, sha256=sha256, source=source,
            external_id=external_id, width=width, height=height, faces_detected=faces_detected,
            faces_indexed=faces_indexed, indexed_at=now))
        return int(res.inserted_primary_key[0])

    # -- faces -------------------------------------------------------------------------

    def insert_faces(self, conn: Connection, collection_id: int, image_row: int,
                     faces: Sequence[NewFace], width: int, height: int, now: float,
                     model_version: str) -> None:
        """Insert faces (one statement); their row ids follow the collection's highest."""
        if not faces:
            return
        if self.postgres:  # ids in commit order within the collection (see the module)
            conn.execute(select(collections_t.c.id).where(collections_t.c.id == collection_id)
                         .with_for_update(key_share=True))
        conn.execute(insert(faces_t), [dict(
            face_id=f.face_id, collection_id=collection_id, image_row=image_row,
            external_id=f.external_id, x1=f.box[0], y1=f.box[1], x2=f.box[2], y2=f.box[3],
            landmarks=json.dumps(f.landmarks), score=f.score,
            q_size=f.quality["size"], q_sharpness=f.quality["sharpness"],
            q_brightness=f.quality["brightness"], q_yaw=f.quality["yaw"],
            q_pitch=f.quality["pitch"], q_roll=f.quality["roll"],
            q_faceness=f.quality.get("faceness"),
            q_recognisability=f.quality.get("recognisability"),
            image_width=width, image_height=height, created_at=now,
            model_version=model_version, embedding=self._seal(f.face_id, f.embedding))
            for f in faces])
        cropped = {f.face_id: f.crop for f in faces if f.crop is not None}
        if cropped:
            rows = conn.execute(select(faces_t.c.id, faces_t.c.face_id)
                                .where(faces_t.c.face_id.in_(list(cropped)))).all()
            conn.execute(insert(face_crops_t), [
                {"face_row": r.id, "jpeg": self._seal_crop(r.face_id, c.jpeg), "x0": c.x0,
                 "y0": c.y0, "side": c.side, "size": c.size}
                for r in rows for c in (cropped[r.face_id],)])

    def _seal_crop(self, face_id: str, jpeg: bytes) -> bytes:
        return jpeg if self.sealer is None else self.sealer.seal(jpeg, crop_aad(face_id))

    def crops(self, conn: Connection, faces: Sequence[FaceRecord]) -> dict[str, FaceCrop]:
        """The crops of ``faces`` that have one (opened when sealed), by face id."""
        by_row = {f.row: f.face_id for f in faces}
        out: dict[str, FaceCrop] = {}
        ids = list(by_row)
        for start in range(0, len(ids), 500):
            q = select(face_crops_t).where(face_crops_t.c.face_row.in_(ids[start:start + 500]))
            for r in conn.execute(q):
                face_id = by_row[r.face_row]
                jpeg = r.jpeg
                if is_sealed(jpeg):
                    if self.sealer is None:
                        raise EncryptionError(
                            "face crops are encrypted at rest but no key is configured "
                            "(FACESEARCH_ENCRYPTION_KEY or FACESEARCH_ENCRYPTION_KEY_FILE)")
                    jpeg = self.sealer.open(jpeg, crop_aad(face_id))
                out[face_id] = FaceCrop(jpeg, r.x0, r.y0, r.side, r.size)
        return out

    def count_crops(self, conn: Connection, rows: Sequence[int]) -> int:
        """How many of the face ``rows`` have a crop."""
        ids = [int(r) for r in rows]
        n = 0
        for start in range(0, len(ids), 500):
            n += int(conn.execute(select(func.count()).select_from(face_crops_t).where(
                face_crops_t.c.face_row.in_(ids[start:start + 500]))).scalar_one())
        return n

    def _faces_query(self) -> Any:
        return (select(*_face_columns())
                .select_from(faces_t.outerjoin(images_t, faces_t.c.image_row == images_t.c.id)
                             .outerjoin(users_t, faces_t.c.user_row == users_t.c.id)))

    def faces_by_rows(self, conn: Connection, rows: Sequence[int]) -> dict[int, FaceRecord]:
        out: dict[int, FaceRecord] = {}
        ids = [int(r) for r in rows]
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for r in conn.execute(self._faces_query().where(faces_t.c.id.in_(chunk))):
                out[r.id] = _face_row(r)
        return out

    def faces_by_face_ids(self, conn: Connection, collection_id: int,
                          face_ids: Sequence[str]) -> dict[str, FaceRecord]:
        out: dict[str, FaceRecord] = {}
        ids = list(face_ids)
        for start in range(0, len(ids), 500):
            q = self._faces_query().where(faces_t.c.collection_id == collection_id,
                                          faces_t.c.face_id.in_(ids[start:start + 500]))
            for r in conn.execute(q):
                out[r.face_id] = _face_row(r)
        return out

    def list_faces(self, conn: Connection, collection_id: int, after_row: int, limit: int,
                   user_row: int | None = None,
                   face_ids: Sequence[str] | None = None) -> list[FaceRecord]:
        q = self._faces_query().where(faces_t.c.collection_id == collection_id,
                                      faces_t.c.id > after_row)
        if user_row is not None:
            q = q.where(faces_t.c.user_row == user_row)
        if face_ids is not None:
            q = q.where(faces_t.c.face_id.in_(list(face_ids)))
        q = q.order_by(faces_t.c.id).limit(limit)
        return [_face_row(r) for r in conn.execute(q)]

    def face_rows_of(self, conn: Connection, collection_id: int, *,
                     external_id: str | None = None, user_row: int | None = None) -> list[int]:
        q = select(faces_t.c.id).where(faces_t.c.collection_id == collection_id)
        if external_id is not None:
            q = q.where(faces_t.c.external_id == external_id)
        if user_row is not None:
            q = q.where(faces_t.c.user_row == user_row)
        return [int(r[0]) for r in conn.execute(q)]

    def all_face_rows(self, conn: Connection, collection_id: int) -> IntArray:
        rows = conn.execute(select(faces_t.c.id).where(faces_t.c.collection_id == collection_id)
                            .order_by(faces_t.c.id)).all()
        return np.fromiter((r[0] for r in rows), np.int64, count=len(rows))

    def face_rows_after(self, conn: Connection, collection_id: int, after_row: int) -> IntArray:
        rows = conn.execute(select(faces_t.c.id).where(faces_t.c.collection_id == collection_id,
                                                       faces_t.c.id > after_row)
                            .order_by(faces_t.c.id)).all()
        return np.fromiter((r[0] for r in rows), np.int64, count=len(rows))

    def _seal(self, face_id: str, vector: FloatArray) -> bytes:
        raw = np.ascontiguousarray(vector, np.float32).tobytes()
        return raw if self.sealer is None else self.sealer.seal(raw, face_id.encode())

    def _unseal(self, face_id: str, blob: bytes, dim: int) -> FloatArray:
        if len(blob) == 4 * dim and not is_sealed(blob):
            return np.frombuffer(blob, np.float32, count=dim)
        if self.sealer is None:
            raise EncryptionError("face vectors are encrypted at rest but no key is configured "
                                  "(FACESEARCH_ENCRYPTION_KEY or FACESEARCH_ENCRYPTION_KEY_FILE)")
        return np.frombuffer(self.sealer.open(blob, face_id.encode()), np.float32, count=dim)

    def embeddings(self, conn: Connection, rows: IntArray, dim: int) -> FloatArray:
        """Vectors of face ``rows`` in the order given."""
        out = np.zeros((len(rows), dim), np.float32)
        pos = {int(r): i for i, r in enumerate(rows)}
        ids = [int(r) for r in rows]
        for start in range(0, len(ids), 5000):
            chunk = ids[start:start + 5000]
            q = select(faces_t.c.id, faces_t.c.face_id, faces_t.c.embedding).where(
                faces_t.c.id.in_(chunk))
            for r in conn.execute(q):
                out[pos[r.id]] = self._unseal(r.face_id, r.embedding, dim)
        return out

    def face_rows_older_than(self, conn: Connection, collection_id: int,
                             created_before: float) -> list[int]:
        q = select(faces_t.c.id).where(faces_t.c.collection_id == collection_id,
                                       faces_t.c.created_at < created_before)
        return [int(r[0]) for r in conn.execute(q)]

    def delete_orphan_images(self, conn: Connection, collection_id: int) -> int:
        """Delete image records (content hashes) with no face left; returns how many."""
        has_face = select(faces_t.c.id).where(faces_t.c.image_row == images_t.c.id).exists()
        return conn.execute(delete(images_t).where(
            images_t.c.collection_id == collection_id, images_t.c.faces_indexed > 0,
            ~has_face)).rowcount

    def images_of(self, conn: Connection, collection_id: int) -> list[ImageRow]:
        rows = conn.execute(select(images_t).where(images_t.c.collection_id == collection_id)
                            .order_by(images_t.c.id))
        return [ImageRow(r.id, r.image_id, r.sha256, r.source, r.external_id,
                         r.faces_detected, r.faces_indexed) for r in rows]

    def faces_of_image(self, conn: Connection, image_row: int) -> list[FaceRecord]:
        q = self._faces_query().where(faces_t.c.image_row == image_row).order_by(faces_t.c.id)
        return [_face_row(r) for r in conn.execute(q)]

    def update_face_model(self, conn: Connection, row: int, face_id: str,
                          box: tuple[float, float, float, float], landmarks: list[list[float]],
                          score: float, quality: dict[str, float], embedding: FloatArray,
                          model_version: str) -> None:
        """Replace a face's geometry, quality and vector (re-embedding with another model)."""
        conn.execute(update(faces_t).where(faces_t.c.id == row).values(
            x1=box[0], y1=box[1], x2=box[2], y2=box[3], landmarks=json.dumps(landmarks),
            score=score, q_size=quality["size"], q_sharpness=quality["sharpness"],
            q_brightness=quality["brightness"], q_yaw=quality["yaw"], q_pitch=quality["pitch"],
            q_roll=quality["roll"], q_faceness=quality.get("faceness"),
            q_recognisability=quality.get("recognisability"), model_version=model_version,
            embedding=self._seal(face_id, embedding)))

    def set_collection_model(self, conn: Connection, collection_id: int,
                             model_version: str, now: float | None = None) -> None:
        """Record the collection's new model; its vectors were all replaced (a new
        generation that every node's index rebuilds from)."""
        conn.execute(update(collections_t).where(collections_t.c.id == collection_id)
                     .values(model_version=model_version))
        self.bump_generation(conn, collection_id, None, time.time() if now is None else now)

    def checkpoint(self) -> None:
        """After an erasure. SQLite: fold the write-ahead log into the database file and
        truncate it, so that deleted rows (zeroed by ``secure_delete``) leave no copy in the
        log. PostgreSQL: ``VACUUM`` the tables, so that no row version of what was deleted is
        left in them (their bytes stay in the pages until reused: :meth:`vacuum` with
        ``full`` rewrites the tables; see ``docs/deploy.md``)."""
        if self.postgres:
            self.vacuum()
            return
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def vacuum(self, full: bool = False) -> None:
        """Reclaim deleted rows: ``VACUUM`` every table (``full``: ``VACUUM (FULL)`` on
        PostgreSQL, which rewrites each table into new files and locks it meanwhile; on
        SQLite ``VACUUM`` rebuilds the file either way)."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if not self.postgres:
                conn.exec_driver_sql("VACUUM")
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                return
            tables = ", ".join(t.name for t in schema.metadata.sorted_tables)
            conn.exec_driver_sql(f"VACUUM {'(FULL) ' if full else ''}{tables}")

    def delete_faces(self, conn: Connection, rows: Sequence[int]) -> list[str]:
        """Delete faces and their crops by row; returns the face ids this transaction
        deleted (not those another writer deleted first)."""
        ids = [int(r) for r in rows]
        gone: list[str] = []
        for start in range(0, len(ids), 500):
            conn.execute(delete(face_crops_t).where(
                face_crops_t.c.face_row.in_(ids[start:start + 500])))
            gone += conn.execute(delete(faces_t).where(faces_t.c.id.in_(ids[start:start + 500]))
                                 .returning(faces_t.c.face_id)).scalars()
        return gone

    # -- users -------------------------------------------------------------------------

    def insert_user(self, conn: Connection, collection_id: int, user_id: str, now: float) -> int:
        res = conn.execute(insert(users_t).values(collection_id=collection_id, user_id=user_id,
                                                  created_at=now))
        return int(res.inserted_primary_key[0])

    def get_user(self, conn: Connection, collection_id: int, user_id: str) -> int | None:
        return conn.execute(select(users_t.c.id).where(users_t.c.collection_id == collection_id,
                                                       users_t.c.user_id == user_id)).scalar()

    def list_users(self, conn: Connection, collection_id: int, after_row: int,
                   limit: int) -> list[tuple[int, str, float, int]]:
        """``(row, user_id, created_at, face_count)`` ordered by row."""
        nfaces = (select(func.count()).select_from(faces_t)
                  .where(faces_t.c.user_row == users_t.c.id).scalar_subquery())
        q = (select(users_t.c.id, users_t.c.user_id, users_t.c.created_at, nfaces)
             .where(users_t.c.collection_id == collection_id, users_t.c.id > after_row)
             .order_by(users_t.c.id).limit(limit))
        return [(int(r[0]), r[1], float(r[2]), int(r[3])) for r in conn.execute(q)]

    def user_info(self, conn: Connection, collection_id: int,
                  user_id: str) -> tuple[int, str, float, int] | None:
        """``(row, user_id, created_at, face_count)`` of one user, or None."""
        nfaces = (select(func.count()).select_from(faces_t)
                  .where(faces_t.c.user_row == users_t.c.id).scalar_subquery())
        r = conn.execute(select(users_t.c.id, users_t.c.user_id, users_t.c.created_at, nfaces)
                         .where(users_t.c.collection_id == collection_id,
                                users_t.c.user_id == user_id)).first()
        return None if r is None else (int(r[0]), r[1], float(r[2]), int(r[3]))

    def delete_user(self, conn: Connection, user_row: int) -> None:
        conn.execute(update(faces_t).where(faces_t.c.user_row == user_row).values(user_row=None))
        conn.execute(delete(users_t).where(users_t.c.id == user_row))

    def set_face_user(self, conn: Connection, rows: Sequence[int], user_row: int | None) -> None:
        ids = [int(r) for r in rows]
        if ids:
            conn.execute(update(faces_t).where(faces_t.c.id.in_(ids)).values(user_row=user_row))

    def user_face_rows(self, conn: Connection, collection_id: int) -> tuple[IntArray, list[str]]:
        """Rows of faces that belong to a user, and each one's user id."""
        q = (select(faces_t.c.id, users_t.c.user_id)
             .select_from(faces_t.join(users_t, faces_t.c.user_row == users_t.c.id))
             .where(faces_t.c.collection_id == collection_id).order_by(faces_t.c.id))
        rows = conn.execute(q).all()
        return np.array([r[0] for r in rows], np.int64), [r[1] for r in rows]
