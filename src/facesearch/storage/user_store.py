"""Users: named groups of a collection's faces (Rekognition's users), and which faces belong
to each."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import Connection, delete, func, insert, select, update

from facesearch.storage.schema import faces_t, users_t
from facesearch.types import IntArray


class UserStore:
    """The ``users`` table and the faces' ``user_row``."""

    def insert(self, conn: Connection, collection_id: int, user_id: str, now: float) -> int:
        res = conn.execute(insert(users_t).values(collection_id=collection_id, user_id=user_id,
                                                  created_at=now))
        return int(res.inserted_primary_key[0])  # type: ignore[index]

    def find(self, conn: Connection, collection_id: int, user_id: str) -> int | None:
        return conn.execute(select(users_t.c.id).where(users_t.c.collection_id == collection_id,
                                                       users_t.c.user_id == user_id)).scalar()

    def page(self, conn: Connection, collection_id: int, after_row: int,
             limit: int) -> list[tuple[int, str, float, int]]:
        """``(row, user_id, created_at, face_count)`` ordered by row."""
        nfaces = (select(func.count()).select_from(faces_t)
                  .where(faces_t.c.user_row == users_t.c.id).scalar_subquery())
        q = (select(users_t.c.id, users_t.c.user_id, users_t.c.created_at, nfaces)
             .where(users_t.c.collection_id == collection_id, users_t.c.id > after_row)
             .order_by(users_t.c.id).limit(limit))
        return [(int(r[0]), r[1], float(r[2]), int(r[3])) for r in conn.execute(q)]

    def info(self, conn: Connection, collection_id: int,
             user_id: str) -> tuple[int, str, float, int] | None:
        """``(row, user_id, created_at, face_count)`` of one user, or None."""
        nfaces = (select(func.count()).select_from(faces_t)
                  .where(faces_t.c.user_row == users_t.c.id).scalar_subquery())
        r = conn.execute(select(users_t.c.id, users_t.c.user_id, users_t.c.created_at, nfaces)
                         .where(users_t.c.collection_id == collection_id,
                                users_t.c.user_id == user_id)).first()
        return None if r is None else (int(r[0]), r[1], float(r[2]), int(r[3]))

    def delete(self, conn: Connection, user_row: int) -> None:
        conn.execute(update(faces_t).where(faces_t.c.user_row == user_row).values(user_row=None))
        conn.execute(delete(users_t).where(users_t.c.id == user_row))

    def assign_faces(self, conn: Connection, rows: Sequence[int], user_row: int | None) -> None:
        ids = [int(r) for r in rows]
        if ids:
            conn.execute(update(faces_t).where(faces_t.c.id.in_(ids)).values(user_row=user_row))

    def face_rows(self, conn: Connection, collection_id: int) -> tuple[IntArray, list[str]]:
        """Rows of faces that belong to a user, and each one's user id."""
        q = (select(faces_t.c.id, users_t.c.user_id)
             .select_from(faces_t.join(users_t, faces_t.c.user_row == users_t.c.id))
             .where(faces_t.c.collection_id == collection_id).order_by(faces_t.c.id))
        rows = conn.execute(q).all()
        return np.array([r[0] for r in rows], np.int64), [r[1] for r in rows]
