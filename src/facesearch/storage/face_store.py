"""Faces: their rows (geometry, quality, the sealed vector), their review crops, and the rows
derived from them elsewhere (video job results naming them) that go when they are erased.

Vectors and crops are sealed when encryption at rest is on (the store's :class:`Sealer`);
reads of rows by id go 500 (metadata) or 5,000 (vectors) ids per statement."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection, delete, func, insert, select, update

from facesearch.errors import EncryptionError
from facesearch.storage.crypto import Sealer, is_sealed
from facesearch.storage.records import FaceRecord, NewFace, SourceImage
from facesearch.storage.schema import (
    collections_t,
    face_crops_t,
    faces_t,
    images_t,
    matches_t,
    users_t,
)
from facesearch.types import FloatArray, IntArray
from facesearch.vision.crop import FaceCrop


def crop_aad(face_id: str) -> bytes:
    """What a sealed crop is bound to: its face."""
    return b"crop:" + face_id.encode()


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
        row=r.id, face_id=r.face_id, external_id=r.external_id, user_id=r.user_id,
        image=SourceImage(image_id=r.image_id, sha256=r.sha256, source=r.source,
                          width=r.image_width, height=r.image_height),
        box=(r.x1, r.y1, r.x2, r.y2), landmarks=json.loads(r.landmarks), score=r.score,
        quality={"size": r.q_size, "sharpness": r.q_sharpness, "brightness": r.q_brightness,
                 "yaw": r.q_yaw, "pitch": r.q_pitch, "roll": r.q_roll,
                 **({} if r.q_faceness is None else {"faceness": r.q_faceness}),
                 **({} if r.q_recognisability is None
                    else {"recognisability": r.q_recognisability})},
        created_at=r.created_at, model_version=r.model_version,
    )


class FaceStore:
    """The ``faces`` and ``face_crops`` tables."""

    def __init__(self, postgres: bool, sealer: Sealer | None) -> None:
        self.postgres = postgres
        self.sealer = sealer

    def insert(self, conn: Connection, collection_id: int, image_row: int,
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

    def by_rows(self, conn: Connection, rows: Sequence[int]) -> dict[int, FaceRecord]:
        out: dict[int, FaceRecord] = {}
        ids = [int(r) for r in rows]
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for r in conn.execute(self._faces_query().where(faces_t.c.id.in_(chunk))):
                out[r.id] = _face_row(r)
        return out

    def by_face_ids(self, conn: Connection, collection_id: int,
                    face_ids: Sequence[str]) -> dict[str, FaceRecord]:
        out: dict[str, FaceRecord] = {}
        ids = list(face_ids)
        for start in range(0, len(ids), 500):
            q = self._faces_query().where(faces_t.c.collection_id == collection_id,
                                          faces_t.c.face_id.in_(ids[start:start + 500]))
            for r in conn.execute(q):
                out[r.face_id] = _face_row(r)
        return out

    def page(self, conn: Connection, collection_id: int, after_row: int, limit: int,
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

    def rows_of(self, conn: Connection, collection_id: int, *,
                external_id: str | None = None, user_row: int | None = None) -> list[int]:
        q = select(faces_t.c.id).where(faces_t.c.collection_id == collection_id)
        if external_id is not None:
            q = q.where(faces_t.c.external_id == external_id)
        if user_row is not None:
            q = q.where(faces_t.c.user_row == user_row)
        return [int(r[0]) for r in conn.execute(q)]

    def all_rows(self, conn: Connection, collection_id: int) -> IntArray:
        rows = conn.execute(select(faces_t.c.id).where(faces_t.c.collection_id == collection_id)
                            .order_by(faces_t.c.id)).all()
        return np.fromiter((r[0] for r in rows), np.int64, count=len(rows))

    def rows_after(self, conn: Connection, collection_id: int, after_row: int) -> IntArray:
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

    def rows_older_than(self, conn: Connection, collection_id: int,
                        created_before: float) -> list[int]:
        q = select(faces_t.c.id).where(faces_t.c.collection_id == collection_id,
                                       faces_t.c.created_at < created_before)
        return [int(r[0]) for r in conn.execute(q)]

    def of_image(self, conn: Connection, image_row: int) -> list[FaceRecord]:
        q = self._faces_query().where(faces_t.c.image_row == image_row).order_by(faces_t.c.id)
        return [_face_row(r) for r in conn.execute(q)]

    def update_model(self, conn: Connection, row: int, face: NewFace,
                     model_version: str) -> None:
        """Replace the geometry, quality and vector of the face at ``row`` (``face.face_id``)
        with ``face``'s (re-embedding with another model); its ids stay."""
        q = face.quality
        conn.execute(update(faces_t).where(faces_t.c.id == row).values(
            x1=face.box[0], y1=face.box[1], x2=face.box[2], y2=face.box[3],
            landmarks=json.dumps(face.landmarks), score=face.score, q_size=q["size"],
            q_sharpness=q["sharpness"], q_brightness=q["brightness"], q_yaw=q["yaw"],
            q_pitch=q["pitch"], q_roll=q["roll"], q_faceness=q.get("faceness"),
            q_recognisability=q.get("recognisability"), model_version=model_version,
            embedding=self._seal(face.face_id, face.embedding)))

    def delete(self, conn: Connection, rows: Sequence[int]) -> list[str]:
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

    def delete_derived(self, conn: Connection, face_ids: Sequence[str]) -> int:
        """Delete the rows derived from erased faces that name them (video job results with
        one of ``face_ids`` as a candidate), in the erasure's transaction; how many went."""
        ids = list(face_ids)
        n = 0
        for start in range(0, len(ids), 500):
            n += conn.execute(delete(matches_t).where(
                matches_t.c.face_id.in_(ids[start:start + 500]))).rowcount
        return n
