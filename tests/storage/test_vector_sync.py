"""Incremental sync of a node's vector index with the database: the vector change log
(deletions by generation, "every vector replaced" markers), the state saved with an index
file, and the full reconciliation when the log cannot tell. Two caches on one SQLite store
stand for two nodes (tests/services/test_nodes.py does it on PostgreSQL)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
from sqlalchemy import delete

from facesearch.storage.indexes import IndexCache
from facesearch.storage.records import CollectionRow, NewFace, NewImage
from facesearch.storage.schema import vector_changes_t
from facesearch.storage.store import Store
from facesearch.vision.embed import l2_normalise

Q = {"size": 50.0, "sharpness": 50.0, "brightness": 50.0, "yaw": 0.0, "pitch": 0.0,
     "roll": 0.0}


def _add(store: Store, coll: CollectionRow, vecs: np.ndarray) -> list[int]:
    """Faces with these vectors; their rows."""
    with store.transaction() as conn:
        image = store.images.insert(conn, coll.id, NewImage(
            image_id=str(uuid.uuid4()), sha256=uuid.uuid4().hex, source=None, external_id=None,
            width=9, height=9, faces_detected=len(vecs), faces_indexed=len(vecs)), time.time())
        store.faces.insert(conn, coll.id, image, [NewFace(
            face_id=str(uuid.uuid4()), external_id=None, box=(0, 0, 9, 9),
            landmarks=[[0.0, 0.0]] * 5, score=0.9, quality=Q, embedding=v) for v in vecs],
            9, 9, time.time(), coll.model_version)
        return store.faces.all_rows(conn, coll.id)[-len(vecs):].tolist()


def _delete(store: Store, coll: CollectionRow, rows: list[int]) -> None:
    """What an erasure does to the database."""
    with store.transaction() as conn:
        store.faces.delete(conn, rows)
        store.generations.bump_generation(conn, coll.id, rows, time.time())


def _setup(tmp_path: Path) -> tuple[Store, CollectionRow, IndexCache, IndexCache, np.ndarray]:
    store = Store(tmp_path / "facesearch.db")
    with store.transaction() as conn:
        store.collections.insert(conn, "c", "m", time.time(), {})
        coll = store.collections.get(conn, "c")
    vecs = l2_normalise(np.random.default_rng(0).normal(size=(500, 128)))
    _add(store, coll, vecs)
    return store, coll, IndexCache(tmp_path / "a", store), IndexCache(tmp_path / "b", store), vecs


def test_deletions_and_additions_apply_from_the_log(tmp_path: Path) -> None:
    store, coll, a, b, vecs = _setup(tmp_path)
    rows = store.faces.all_rows(store.engine.connect(), coll.id)
    assert len(b.get(coll)) == 500 and b.stats.full == 1
    _delete(store, coll, rows[:10].tolist())
    new = _add(store, coll, vecs[:3])
    _delete(store, coll, [new[0], int(rows[10])])  # added, then deleted before B looks
    index = b.get(coll)
    assert (b.stats.full, b.stats.incremental) == (1, 1)
    assert b.stats.rows == 500 + 12 + 2  # the 12 logged rows and the two new faces left
    assert sorted(index.ids().tolist()) == sorted([*rows[11:].tolist(), *new[1:]])
    b.shutdown()
    # a node restarting from its saved file reads only what changed since
    _delete(store, coll, rows[11:13].tolist())
    again = IndexCache(tmp_path / "b", store)
    assert len(again.get(coll)) == 489 + 2 - 2
    assert (again.stats.full, again.stats.incremental, again.stats.rows) == (0, 1, 2)


def test_a_pruned_log_falls_back_to_a_full_reconciliation(tmp_path: Path) -> None:
    store, coll, _, b, _ = _setup(tmp_path)
    rows = store.faces.all_rows(store.engine.connect(), coll.id)
    b.get(coll)
    _delete(store, coll, rows[:4].tolist())
    _delete(store, coll, rows[4:6].tolist())
    with store.transaction() as conn:  # the first of the two generations pruned
        conn.execute(delete(vector_changes_t).where(vector_changes_t.c.face_row == int(rows[0])))
        conn.execute(delete(vector_changes_t).where(vector_changes_t.c.face_row.in_(
            [int(r) for r in rows[1:4]])))
    assert sorted(b.get(coll).ids().tolist()) == rows[6:].tolist()
    assert b.stats.full == 2


def test_replaced_vectors_are_rebuilt_on_every_node(tmp_path: Path) -> None:
    """Re-embedding keeps the ids and changes the vectors: a node that sees the marker
    rebuilds its index from the database instead of reconciling ids."""
    store, coll, _, b, vecs = _setup(tmp_path)
    rows = store.faces.all_rows(store.engine.connect(), coll.id)
    b.get(coll)
    fresh = l2_normalise(np.random.default_rng(5).normal(size=(500, 128)))
    with store.transaction() as conn:
        for r, v in zip(rows.tolist(), fresh, strict=True):
            face = store.faces.by_rows(conn, [r])[r]
            store.faces.update_model(conn, r, NewFace(
                face_id=face.face_id, external_id=face.external_id, box=(0, 0, 9, 9),
                landmarks=[[0.0, 0.0]] * 5, score=0.9, quality=Q, embedding=v), "m2")
        store.collections.set_model(conn, coll.id, "m2")
    sims, ids = b.get(coll).search(fresh[:5], 1)
    assert ids[:, 0].tolist() == rows[:5].tolist()
    assert np.allclose(sims[:, 0], 1.0, atol=1e-5)
