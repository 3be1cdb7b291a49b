"""Face crops for human review: kept at enrolment (small JPEGs framed alike), sealed with the
vectors when encryption at rest is on, erased with their face and counted in the receipt,
kept through re-embedding; faces indexed before crops existed have none."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
from PIL import Image as PILImage
from sqlalchemy import delete, select

from facesearch.config import Settings
from facesearch.errors import EncryptionError, FaceNotFoundError, NotFoundError
from facesearch.service import FaceSearch
from facesearch.storage.crypto import is_sealed
from facesearch.storage.schema import face_crops_t
from facesearch.vision.crop import CROP_MAX_PX, to_crop
from facesearch.vision.pipeline import Pipeline

from ..conftest import face


def jpeg_size(data: bytes) -> tuple[int, int]:
    img = PILImage.open(io.BytesIO(data))
    assert img.format == "JPEG"
    return img.size


def files_containing(root: Path, needle: bytes) -> list[Path]:
    probe = needle[200:264]  # past the JPEG header, which every crop shares
    return [p for p in root.rglob("*") if p.is_file() and probe in p.read_bytes()]


def test_crops_are_kept_at_enrolment_and_framed_alike(fs: FaceSearch) -> None:
    fs.collections.create("c")
    a = fs.collections.index_image("c", face("obama.jpg"), external_id="obama",
                                   source_name="/srv/photos/obama.jpg").indexed[0]
    b = fs.collections.index_image("c", face("two_people.jpg")).indexed
    assert len(b) == 2
    cards, missing = fs.collections.face_cards("c", [a.face_id, b[0].face_id, b[1].face_id])
    assert missing == [] and [c.face.face_id for c in cards] == [a.face_id, *[f.face_id
                                                                              for f in b]]
    first = cards[0]
    # The file's name, never the server's folders.
    assert first.source_name == "obama.jpg" and cards[1].source_name is None
    for c in cards:
        assert c.crop is not None
        assert jpeg_size(c.crop.jpeg) == (c.crop.size, c.crop.size)
        assert c.crop.size <= CROP_MAX_PX
        # The same framing for every face: the box is 2/3 of the crop, centred.
        x1, y1, x2, y2 = (v for pt in to_crop([c.face.box[:2], c.face.box[2:]], c.crop)
                          for v in pt)
        side = max(x2 - x1, y2 - y1)
        assert side == pytest.approx(c.crop.size / 1.5, rel=0.03)
        assert (x1 + x2) / 2 == pytest.approx(c.crop.size / 2, abs=2)
        # The eyes land in the upper half of the crop.
        (lx, ly), (rx, ry) = to_crop(c.face.landmarks[:2], c.crop)
        assert 0 < lx < rx < c.crop.size and 0 < max(ly, ry) < c.crop.size / 2
    # Reading crops is audited once, naming every face shown.
    events, _ = fs.audit.query(operation="faces.crops", collection="c")
    assert len(events) == 1 and len(events[0].event.results) == 3
    assert events[0].event.details["with_crop"] == 3
    assert fs.collections.face_crop("c", a.face_id).jpeg == first.crop.jpeg
    unknown = "00000000-0000-4000-8000-000000000000"
    assert fs.collections.face_cards("c", [unknown]) == ([], [unknown])
    with pytest.raises(FaceNotFoundError):
        fs.collections.face_crop("c", unknown)


def test_faces_indexed_before_crops_existed_have_none(fs: FaceSearch) -> None:
    fs.collections.create("old")
    f = fs.collections.index_image("old", face("biden.jpg")).indexed[0]
    with fs.store.transaction() as conn:  # as a face indexed by an earlier version
        conn.execute(delete(face_crops_t))
    cards, _ = fs.collections.face_cards("old", [f.face_id])
    assert cards[0].crop is None and cards[0].face.face_id == f.face_id
    with pytest.raises(NotFoundError, match="indexed before crops were kept"):
        fs.collections.face_crop("old", f.face_id)
    receipt = fs.erasure.erase("old", face_ids=[f.face_id])
    assert receipt.face_ids == [f.face_id] and receipt.crops_erased == 0


def test_crops_are_sealed_at_rest_and_erased_with_their_face(home: Path,
                                                             pipeline: Pipeline) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    signing = home.parent / "secrets" / "audit-ed25519.pem"
    fs = FaceSearch(Settings(home=home, encryption_key=key, audit_signing_key=signing),
                    pipeline=pipeline)
    try:
        fs.collections.create("s")
        keep = fs.collections.index_image("s", face("biden.jpg"), external_id="keep").indexed[0]
        gone = fs.collections.index_image("s", face("obama.jpg"), external_id="gone").indexed[0]
        with fs.store.transaction() as conn:
            stored = [r.jpeg for r in conn.execute(select(face_crops_t.c.jpeg))]
        assert len(stored) == 2 and all(is_sealed(b) for b in stored)
        cards, _ = fs.collections.face_cards("s", [keep.face_id, gone.face_id])
        gone_jpeg = cards[1].crop.jpeg if cards[1].crop else b""
        assert gone_jpeg.startswith(b"\xff\xd8")
        # Neither the JPEG nor anything of it is on disk in clear.
        fs.store.checkpoint()
        assert files_containing(home, gone_jpeg) == []
    finally:
        fs.shutdown()
    # Without the key the crops cannot be read.
    no_key = FaceSearch(Settings(home=home, audit_signing_key=signing), pipeline=pipeline)
    try:
        with pytest.raises(EncryptionError):
            no_key.collections.face_cards("s", [keep.face_id])
    finally:
        no_key.shutdown()
    fs = FaceSearch(Settings(home=home, encryption_key=key, audit_signing_key=signing),
                    pipeline=pipeline)
    try:
        receipt = fs.erasure.erase("s", external_id="gone")
        assert receipt.face_ids == [gone.face_id] and receipt.crops_erased == 1
        events, _ = fs.audit.query(operation="faces.erase", collection="s")
        assert events[-1].event.details["crops"] == 1
        with fs.store.transaction() as conn:
            left = conn.execute(select(face_crops_t.c.jpeg)).all()
        assert len(left) == 1
        assert fs.collections.face_cards("s", [gone.face_id]) == ([], [gone.face_id])
        cards, _ = fs.collections.face_cards("s", [keep.face_id])
        assert cards[0].crop is not None
    finally:
        fs.shutdown()


def test_crops_go_with_their_collection_and_stay_through_reembedding(fs: FaceSearch) -> None:
    from facesearch.services.reembed import reembed

    fs.collections.create("r")
    f = fs.collections.index_image("r", face("obama.jpg"),
                                   source_name=str(face("obama.jpg"))).indexed[0]
    before = fs.collections.face_crop("r", f.face_id)
    with fs.store.transaction() as conn:  # as if another model had made the collection
        from facesearch.storage.schema import collections_t
        conn.execute(collections_t.update().values(model_version="old/model"))
    report = reembed(fs.collections, "r")
    assert report.faces_reembedded == 1
    assert fs.collections.face_crop("r", f.face_id).jpeg == before.jpeg
    fs.collections.delete("r")
    with fs.store.transaction() as conn:
        assert conn.execute(select(face_crops_t)).all() == []
