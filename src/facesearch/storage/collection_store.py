"""Collections: their rows (name, model version, settings, generation) and what deleting one
takes with it."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from facesearch.errors import CollectionNotFoundError
from facesearch.storage.generations import Generations
from facesearch.storage.records import CollectionRow
from facesearch.storage.schema import collections_t, faces_t, images_t, tags_t, users_t


def _collection(r: Any) -> CollectionRow:
    return CollectionRow(id=r.id, name=r.name, model_version=r.model_version,
                         created_at=r.created_at, generation=r.generation,
                         settings=json.loads(r.settings))


class CollectionStore:
    """The ``collections`` table (and the rows a collection owns, when it is deleted)."""

    def __init__(self, generations: Generations) -> None:
        self.generations = generations

    def insert(self, conn: Connection, name: str, model_version: str, now: float,
               settings: dict[str, Any]) -> int:
        res = conn.execute(insert(collections_t).values(
            name=name, model_version=model_version, created_at=now, generation=0,
            settings=json.dumps(settings, sort_keys=True)))
        return int(res.inserted_primary_key[0])  # type: ignore[index]

    def find(self, conn: Connection, name: str) -> CollectionRow | None:
        r = conn.execute(select(collections_t).where(collections_t.c.name == name)).first()
        if r is None:
            return None
        return _collection(r)

    def get(self, conn: Connection, name: str) -> CollectionRow:
        """The collection ``name``; CollectionNotFoundError when there is none."""
        row = self.find(conn, name)
        if row is None:
            raise CollectionNotFoundError(f"collection {name!r} does not exist")
        return row

    def list_all(self, conn: Connection) -> list[CollectionRow]:
        rows = conn.execute(select(collections_t).order_by(collections_t.c.name)).all()
        return [_collection(r) for r in rows]

    def update_settings(self, conn: Connection, collection_id: int,
                        settings: dict[str, Any]) -> None:
        conn.execute(update(collections_t).where(collections_t.c.id == collection_id)
                     .values(settings=json.dumps(settings, sort_keys=True)))

    def delete(self, conn: Connection, collection_id: int) -> None:
        """Delete a collection, its faces, users, images and tags."""
        name = conn.execute(select(collections_t.c.name)
                            .where(collections_t.c.id == collection_id)).scalar()
        conn.execute(delete(tags_t).where(tags_t.c.kind == "collection", tags_t.c.name == name))
        conn.execute(delete(faces_t).where(faces_t.c.collection_id == collection_id))
        conn.execute(delete(users_t).where(users_t.c.collection_id == collection_id))
        conn.execute(delete(images_t).where(images_t.c.collection_id == collection_id))
        conn.execute(delete(collections_t).where(collections_t.c.id == collection_id))

    def set_model(self, conn: Connection, collection_id: int,
                  model_version: str, now: float | None = None) -> None:
        """Record the collection's new model; its vectors were all replaced (a new
        generation that every node's index rebuilds from)."""
        conn.execute(update(collections_t).where(collections_t.c.id == collection_id)
                     .values(model_version=model_version))
        self.generations.bump_generation(conn, collection_id, None,
                                         time.time() if now is None else now)

    def counts(self, conn: Connection, collection_id: int) -> tuple[int, int, int]:
        """``(faces, users, images)`` in a collection."""
        nf = conn.execute(select(func.count()).select_from(faces_t)
                          .where(faces_t.c.collection_id == collection_id)).scalar_one()
        nu = conn.execute(select(func.count()).select_from(users_t)
                          .where(users_t.c.collection_id == collection_id)).scalar_one()
        ni = conn.execute(select(func.count()).select_from(images_t)
                          .where(images_t.c.collection_id == collection_id)).scalar_one()
        return int(nf), int(nu), int(ni)
