"""Database engines and what the store does differently on PostgreSQL: URLs, face rows that
grow in commit order within a collection, and the secrets a shared database needs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from facesearch.config import Settings
from facesearch.errors import DatabaseError
from facesearch.service import FaceSearch
from facesearch.storage import database
from facesearch.storage.records import NewFace, NewImage
from facesearch.storage.store import Store

from ..conftest import Databases


def test_urls() -> None:
    assert database.url_of(Path("/d/facesearch.db")).render_as_string() == (
        "sqlite:////d/facesearch.db")
    pg = database.url_of("postgresql://app:s3cret@db.internal:5432/facesearch")
    assert pg.drivername == "postgresql+psycopg"  # not SQLAlchemy's default psycopg2
    assert database.url_of("postgresql+psycopg://x@/y").drivername == "postgresql+psycopg"
    assert database.describe("postgresql://app:s3cret@db/facesearch") == (
        "postgresql+psycopg://app:***@db/facesearch")
    with pytest.raises(DatabaseError, match="unsupported database 'mysql'"):
        database.url_of("mysql://u@h/db")
    with pytest.raises(DatabaseError, match="must look like"):
        database.url_of("/var/lib/facesearch/facesearch.db")  # a path is given as a Path


def _image(image_id: str) -> NewImage:
    return NewImage(image_id=image_id, sha256=f"hash-{image_id}", source=None, external_id=None,
                    width=10, height=10, faces_detected=1, faces_indexed=1)


def _face(i: int) -> NewFace:
    return NewFace(face_id=f"face-{i}", external_id=None, box=(0.0, 0.0, 10.0, 10.0),
                   landmarks=[[1.0, 1.0]] * 5, score=0.9,
                   quality={k: 1.0 for k in ("size", "sharpness", "brightness", "yaw",
                                             "pitch", "roll")},
                   embedding=np.zeros(128, np.float32))


def test_face_rows_grow_in_commit_order_within_a_collection(postgres: Databases) -> None:
    """Ids come from a sequence, so two transactions may commit in the other order than they
    took their ids; a reader catching up on "faces after the highest row I saw" (the vector
    indexes of every node) would then miss a face for good. Inserts into one collection
    therefore take its row lock first: the second writer waits for the first to commit."""
    assert postgres.url is not None and postgres.server is not None
    store = Store(postgres.url)
    try:
        with store.transaction() as conn:
            cid = store.collections.insert(conn, "c", "m", 1.0, {})
            other = store.collections.insert(conn, "other", "m", 1.0, {})
            img = store.images.insert(conn, cid, _image("i1"), 1.0)
            img2 = store.images.insert(conn, other, _image("i2"), 1.0)
        first = store.engine.connect()
        tx = first.begin()
        store.faces.insert(first, cid, img, [_face(1)], 10, 10, 1.0, "m")  # not committed
        with store.transaction() as conn:  # another collection does not wait
            store.faces.insert(conn, other, img2, [_face(9)], 10, 10, 1.0, "m")

        def second() -> None:
            with store.transaction() as conn:
                store.faces.insert(conn, cid, img, [_face(2)], 10, 10, 1.0, "m")

        t = threading.Thread(target=second)
        t.start()
        with postgres.server.connect(postgres.name or "") as admin:
            deadline = time.monotonic() + 60
            while not admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                    "AND wait_event_type = 'Lock'", (postgres.name,)).fetchone()[0]:
                assert time.monotonic() < deadline, "the second writer never waited"
                time.sleep(0.02)
        with store.transaction() as conn:
            assert store.faces.by_face_ids(conn, cid, ["face-2"]) == {}
        tx.commit()
        first.close()
        t.join(60)
        with store.transaction() as conn:
            rows = store.faces.by_face_ids(conn, cid, ["face-1", "face-2"])
        assert rows["face-1"].row < rows["face-2"].row
    finally:
        store.close()


def test_a_shared_database_needs_the_secrets_every_node_shares(postgres: Databases,
                                                                tmp_path: Path) -> None:
    url = postgres.url
    with pytest.raises(DatabaseError, match="FACESEARCH_AUDIT_SIGNING_KEY and "
                                            "FACESEARCH_KEYS_MASTER_KEY_FILE"):
        FaceSearch(Settings(home=tmp_path / "home", database_url=url))  # type: ignore[arg-type]
    with pytest.raises(DatabaseError, match="FACESEARCH_AUDIT_DATABASE_URL name a shared"):
        FaceSearch(Settings(home=tmp_path / "home", audit_database_url=url,  # type: ignore[arg-type]
                            audit_signing_key=tmp_path / "s" / "a.pem"))
    settings = postgres.settings(tmp_path / "secrets")
    with FaceSearch(Settings(home=tmp_path / "home", **settings)) as fs:  # type: ignore[arg-type]
        assert not list((tmp_path / "home").glob("*.db"))  # nothing in the data directory
        fs.collections.create("c")
        assert fs.audit.verify().events == 1
