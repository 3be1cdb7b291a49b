"""Each collection's generation and the vector change log: what the vector backends read to
catch up with the database (:mod:`facesearch.storage.vectors`), and the counts they key on.

A collection's generation grows by one whenever faces are deleted or every vector is replaced;
the log names the face rows each generation deleted, so that a backend that applied
generation ``g`` removes just those rows (:meth:`Generations.vector_changes`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from facesearch.storage.records import CollectionRow
from facesearch.storage.schema import (
    collections_t,
    faces_t,
    vector_changes_t,
    vector_sync_t,
)
from facesearch.types import IntArray

CHANGES_KEPT_S = 30 * 86_400.0
"""How long the vector change log keeps an entry (s): a node whose vector index is older
reconciles it with the database in full instead of applying the log."""


class Generations:
    """Generations, the vector change log and shared backends' sync positions."""

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres
        self._face_counts: dict[tuple[int, float], tuple[tuple[int, int], int]] = {}

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
