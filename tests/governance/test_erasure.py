"""Erasure and retention: erased vectors leave no bytes in the data directory."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from facesearch.config import Settings
from facesearch.errors import EncryptionError, InvalidParameterError
from facesearch.governance.policy import CollectionPolicy
from facesearch.service import FaceSearch
from facesearch.vision.pipeline import Pipeline

from ..conftest import Databases, face

Make = Callable[..., Settings]


def vector_bytes(fs: FaceSearch, collection: str, face_id: str) -> bytes:
    return np.ascontiguousarray(fs.search.face_vector(collection, face_id)[0],
                                np.float32).tobytes()


def files_containing(root: Path, needle: bytes) -> list[Path]:
    """Files under ``root`` holding ``needle`` (or its first 64 bytes) anywhere."""
    probe = needle[:64]
    return [p for p in root.rglob("*") if p.is_file() and probe in p.read_bytes()]


def test_erased_vector_bytes_are_gone_from_every_file(fs: FaceSearch, home: Path) -> None:
    fs.collections.create("e")
    keep = fs.collections.index_image("e", face("biden.jpg"), external_id="keep").indexed[0]
    gone = fs.collections.index_image("e", face("obama.jpg"), external_id="gone").indexed[0]
    fs.collections.flush()
    kept_vec, gone_vec = (vector_bytes(fs, "e", keep.face_id),
                          vector_bytes(fs, "e", gone.face_id))
    assert files_containing(home, gone_vec), "the vector is on disk before erasure"

    receipt = fs.erasure.erase("e", external_id="gone")
    assert receipt.face_ids == [gone.face_id] and receipt.images_erased == 1
    assert receipt.receipt_id and receipt.reason == "erase"
    assert files_containing(home, gone_vec) == []
    assert files_containing(home, kept_vec), "other faces are untouched"
    res = fs.search.by_image("e", face("obama2.jpg"), threshold=0)
    assert [m.face.external_id for m in res.results[0].matches] == ["keep"]
    # The image's content hash is gone too, so the same photo can be indexed again.
    assert gone.image.sha256 not in fs.collections.known_hashes("e")


@pytest.mark.databases
def test_erase_by_user_and_by_face_id(fs: FaceSearch) -> None:
    fs.collections.create("u")
    a = fs.collections.index_image("u", face("obama.jpg")).indexed[0].face_id
    b = fs.collections.index_image("u", face("obama2.jpg")).indexed[0].face_id
    c = fs.collections.index_image("u", face("biden.jpg")).indexed[0].face_id
    fs.users.create("u", "barack")
    fs.users.associate("u", "barack", [a, b])
    r = fs.erasure.erase("u", user_id="barack")
    assert sorted(r.face_ids) == sorted([a, b])
    assert fs.users.list_users("u")[0] == []
    r2 = fs.erasure.erase("u", face_ids=[c])
    assert r2.face_ids == [c] and fs.collections.describe("u").face_count == 0
    with pytest.raises(InvalidParameterError):
        fs.erasure.erase("u", face_ids=[c], external_id="x")


@pytest.mark.databases
def test_deleting_leaves_faces_of_a_user_erasing_does_not(fs: FaceSearch) -> None:
    """Deleting faces by id (Rekognition's DeleteFaces, the CLI's and /v1's faces delete) keeps
    a face that belongs to a user (ASSOCIATED_TO_AN_EXISTING_USER: disassociate it first);
    erasure, the right to be forgotten, is not held back by it."""
    fs.collections.create("d")
    owned = fs.collections.index_image("d", face("obama.jpg")).indexed[0].face_id
    loose = fs.collections.index_image("d", face("biden.jpg")).indexed[0].face_id
    ghost = "00000000-0000-4000-8000-000000000000"
    fs.users.create("d", "barack")
    fs.users.associate("d", "barack", [owned])
    d = fs.erasure.delete_faces("d", [owned, ghost, loose])
    assert (d.deleted, d.not_found, d.associated) == ([loose], [ghost], [owned])
    assert [f.face_id for f in fs.collections.list_faces("d")[0]] == [owned]
    events, _ = fs.audit.query(operation="faces.delete")
    assert events[-1].event.details["kept_for_user"] == owned
    fs.users.disassociate("d", "barack", [owned])
    assert fs.erasure.delete_faces("d", [owned]).deleted == [owned]
    again = fs.collections.index_image("d", face("obama2.jpg")).indexed[0].face_id
    fs.users.associate("d", "barack", [again])
    assert fs.erasure.erase("d", face_ids=[again]).face_ids == [again]
    assert fs.collections.describe("d").face_count == 0


@pytest.mark.databases
def test_retention_expires_old_faces(pipeline, settings: Make) -> None:  # noqa: ANN001
    now = [1_000_000.0]
    with FaceSearch(settings(), pipeline=pipeline, clock=lambda: now[0]) as fs:
        fs.collections.create("r", policy=CollectionPolicy(retention_days=30))
        fs.collections.create("forever")
        old = fs.collections.index_image("r", face("obama.jpg")).indexed[0]
        fs.collections.index_image("forever", face("obama.jpg"))
        now[0] += 20 * 86400
        young = fs.collections.index_image("r", face("biden.jpg")).indexed[0]
        assert fs.erasure.expire() == []
        now[0] += 11 * 86400  # the first face is now 31 days old, the second 11
        receipts = fs.erasure.expire()
        assert [r.face_ids for r in receipts] == [[old.face_id]]
        assert receipts[0].reason == "expire"
        left, _ = fs.collections.list_faces("r")
        assert [f.face_id for f in left] == [young.face_id]
        assert fs.collections.describe("forever").face_count == 1


@pytest.mark.databases
def test_encryption_at_rest(home: Path, pipeline, settings: Make) -> None:  # noqa: ANN001
    key = base64.b64encode(os.urandom(32)).decode()
    with FaceSearch(settings(encryption_key=key), pipeline=pipeline) as fs:
        fs.collections.create("x")
        rec = fs.collections.index_image("x", face("obama.jpg")).indexed[0]
        plain = vector_bytes(fs, "x", rec.face_id)
        fs.collections.flush()
    assert files_containing(home, plain) == [], "no plaintext vector on disk"
    with FaceSearch(settings(encryption_key=key), pipeline=pipeline) as fs:
        res = fs.search.by_image("x", face("obama2.jpg"))
        assert res.results[0].matches[0].face.face_id == rec.face_id
    with FaceSearch(settings(), pipeline=pipeline) as fs, pytest.raises(EncryptionError):
        fs.search.by_image("x", face("obama2.jpg"))


@pytest.mark.databases
def test_erasure_takes_derived_records_with_it(fs: FaceSearch, home: Path) -> None:
    """Erasing a watchlist face also deletes stream snapshots of its matches and video job
    results that name it."""
    from facesearch.media.stream.model import StreamSettings
    from facesearch.video.scan import VideoJobSettings

    from ..media.video_helpers import LIN, LIN_PHOTO, clip, wait_for, watchlist

    watchlist(fs, "watch", [LIN_PHOTO])
    lin_face = fs.collections.list_faces("watch")[0][0].face_id
    job = fs.video.start_face_search("watch", clip(), settings=VideoJobSettings(sample_fps=3))
    assert fs.video.wait(job, timeout_s=300).matched_persons
    fs.streams.create("cam", StreamSettings(input_url=str(clip()), collection="watch",
                                            snapshots=True, max_fps=8))
    sub = fs.streams.subscribe("cam")
    fs.streams.start("cam")
    event = wait_for(lambda: sub.get(0.5), 60, "an event for Lin")
    fs.streams.stop("cam")
    assert event.identity == LIN and event.snapshot is not None
    assert (home / event.snapshot).is_file()

    receipt = fs.erasure.erase("watch", face_ids=[lin_face])
    assert receipt.face_ids == [lin_face] and receipt.derived_erased >= 2
    assert not (home / event.snapshot).exists()
    assert not any(m.face_id == lin_face for p in fs.video.results.persons(job) for m in p.matches)


def test_on_postgresql_erasure_leaves_no_row_version_and_a_full_vacuum_no_bytes(
        pipeline: Pipeline, postgres: Databases, home: Path) -> None:
    """On PostgreSQL a deleted row is gone from every query at once; erasure then VACUUMs,
    so no version of it is left in the table (pageinspect finds none); its bytes may stay in
    the page's free space until reused - what VACUUM (FULL) ('facesearch db vacuum --full')
    removes, by writing the tables anew: no byte of the face's vector or of its review crop
    (kept out of line, in the crops' TOAST table) is left in them. (The write-ahead log holds
    them until its segments are recycled; docs/deploy.md says what that means.)"""
    assert postgres.server is not None and postgres.name is not None
    server, db = postgres.server, postgres.name
    s = Settings(home=home, **postgres.settings(home.parent / "secrets"))  # type: ignore[arg-type]

    def table_files() -> bytes:
        with server.connect(db) as conn:
            toast = conn.execute("SELECT reltoastrelid::regclass::text FROM pg_class "
                                 "WHERE relname = 'face_crops'").fetchone()
        assert toast is not None
        return b"".join(server.data_file(db, t).read_bytes()
                        for t in ("faces", "face_crops", toast[0]))

    with FaceSearch(s, pipeline=pipeline) as fs, server.connect(db) as pg:
        fs.collections.create("e")
        keep = fs.collections.index_image("e", face("biden.jpg"), external_id="keep").indexed[0]
        gone = fs.collections.index_image("e", face("obama.jpg"), external_id="gone").indexed[0]
        gone_vec = vector_bytes(fs, "e", gone.face_id)
        stored = {f.face_id: f for f in fs.collections.list_faces("e")[0]}
        with fs.store.transaction() as conn:
            jpeg = fs.store.faces.crops(conn, [stored[gone.face_id]])[gone.face_id].jpeg
        gone_crop = jpeg[len(jpeg) // 2:len(jpeg) // 2 + 64]  # past the common JPEG header
        pg.execute("CHECKPOINT")  # the tables' pages on disk
        before = table_files()
        assert gone_vec in before and gone_crop in before

        fs.erasure.erase("e", external_id="gone")
        pg.execute("CREATE EXTENSION pageinspect")
        versions = pg.execute(
            "SELECT count(*) FROM generate_series(0, pg_relation_size('faces') / 8192 - 1) p, "
            "heap_page_items(get_raw_page('faces', p::int)) WHERE t_data IS NOT NULL").fetchone()
        assert versions == (1,), "only the face kept has a row version"
        assert files_containing(home, gone_vec) == []  # the index files

        fs.store.vacuum(full=True)
        pg.execute("CHECKPOINT")
        after = table_files()
        assert gone_vec not in after and gone_crop not in after
        assert gone.face_id.encode() not in after
        assert vector_bytes(fs, "e", keep.face_id) in after


def test_erasure_deletes_video_results_in_its_transaction(fs: FaceSearch) -> None:
    """Video job results naming an erased face go in the transaction that deletes the face
    (no step after the commit that could leave them behind); results naming other faces
    stay."""
    from sqlalchemy import insert, select

    from facesearch.storage.schema import jobs_t, matches_t

    fs.collections.create("v")
    gone = fs.collections.index_image("v", face("obama.jpg")).indexed[0].face_id
    keep = fs.collections.index_image("v", face("biden.jpg")).indexed[0].face_id
    with fs.store.transaction() as conn:
        job = conn.execute(insert(jobs_t).values(
            job_id="j", kind="face_search", status="SUCCEEDED", progress=1.0, source="clip",
            input_path="clip.mp4", owned_input=0, settings="{}", caller_actor="local",
            created_at=0.0, updated_at=0.0)).inserted_primary_key[0]
        conn.execute(insert(matches_t), [
            {"job_row": job, "person": p, "rank": 0, "face_id": f, "similarity": 90.0}
            for p, f in enumerate((gone, gone, keep))])

    receipt = fs.erasure.erase("v", face_ids=[gone])
    assert receipt.face_ids == [gone] and receipt.derived_erased == 2
    with fs.store.transaction() as conn:
        left = conn.execute(select(matches_t.c.face_id)).scalars().all()
    assert left == [keep]
    events, _ = fs.audit.query(operation="faces.erase", collection="v")
    assert events[-1].event.details["derived"] == 2


def test_erasure_removes_snapshots_after_its_commit_and_reports_those_it_cannot(
        fs: FaceSearch, home: Path) -> None:
    """Stream snapshots are files: they are removed once the erasure has committed. One that
    cannot be removed (here a folder stands in its place) is logged and counted in the audit
    event; the faces are erased and the other snapshots removed all the same."""
    fs.collections.create("s")
    gone = fs.collections.index_image("s", face("obama.jpg")).indexed[0].face_id
    keep = fs.collections.index_image("s", face("biden.jpg")).indexed[0].face_id
    day = home / "snapshots" / "cam" / "2026-12-07"
    day.mkdir(parents=True)
    (day / f"e1_{gone}.jpg").write_bytes(b"jpeg")
    (day / f"e2_{keep}.jpg").write_bytes(b"jpeg")
    (day / f"e3_{gone}.jpg.fse").mkdir()

    receipt = fs.erasure.erase("s", face_ids=[gone])
    assert receipt.face_ids == [gone] and receipt.derived_erased == 1
    assert not (day / f"e1_{gone}.jpg").exists()
    assert (day / f"e2_{keep}.jpg").exists() and (day / f"e3_{gone}.jpg.fse").is_dir()
    assert [f.face_id for f in fs.collections.list_faces("s")[0]] == [keep]
    events, _ = fs.audit.query(operation="faces.erase", collection="s")
    assert events[-1].event.details["snapshots_failed"] == 1
    assert events[-1].event.details["derived"] == 1
