"""Indexed images: one row per image content (SHA-256) in a collection, with how many faces
were detected and indexed from it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from facesearch.storage.records import ImageRow, NewImage
from facesearch.storage.schema import faces_t, images_t


def _image(r: Any) -> ImageRow:
    return ImageRow(id=r.id, image_id=r.image_id, sha256=r.sha256, source=r.source,
                    external_id=r.external_id, faces_detected=r.faces_detected,
                    faces_indexed=r.faces_indexed)


class ImageStore:
    """The ``images`` table."""

    def find(self, conn: Connection, collection_id: int, sha256: str) -> ImageRow | None:
        r = conn.execute(select(images_t).where(images_t.c.collection_id == collection_id,
                                                images_t.c.sha256 == sha256)).first()
        if r is None:
            return None
        return _image(r)

    def known_hashes(self, conn: Connection, collection_id: int) -> set[str]:
        rows = conn.execute(select(images_t.c.sha256)
                            .where(images_t.c.collection_id == collection_id))
        return {r[0] for r in rows}

    def add_faces(self, conn: Connection, image_row: int, detected: int,
                  indexed: int) -> None:
        """Record another (forced) indexing of an image already in the collection."""
        conn.execute(update(images_t).where(images_t.c.id == image_row).values(
            faces_detected=detected,
            faces_indexed=images_t.c.faces_indexed + indexed))

    def insert(self, conn: Connection, collection_id: int, image: NewImage, now: float) -> int:
        """Insert an image record (indexed at ``now``); its row id."""
        res = conn.execute(insert(images_t).values(
            image_id=image.image_id, collection_id=collection_id, sha256=image.sha256,
            source=image.source, external_id=image.external_id, width=image.width,
            height=image.height, faces_detected=image.faces_detected,
            faces_indexed=image.faces_indexed, indexed_at=now))
        return int(res.inserted_primary_key[0])  # type: ignore[index]

    def delete_orphans(self, conn: Connection, collection_id: int) -> int:
        """Delete image records (content hashes) with no face left; returns how many."""
        has_face = select(faces_t.c.id).where(faces_t.c.image_row == images_t.c.id).exists()
        return conn.execute(delete(images_t).where(
            images_t.c.collection_id == collection_id, images_t.c.faces_indexed > 0,
            ~has_face)).rowcount

    def of_collection(self, conn: Connection, collection_id: int) -> list[ImageRow]:
        rows = conn.execute(select(images_t).where(images_t.c.collection_id == collection_id)
                            .order_by(images_t.c.id))
        return [_image(r) for r in rows]
