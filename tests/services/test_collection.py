"""Collections on real photos: index, search, compare, delete, persistence, refusals."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from facesearch.config import Settings
from facesearch.errors import (
    AlreadyExistsError,
    CollectionNotFoundError,
    FaceNotFoundError,
    InvalidImageError,
    InvalidParameterError,
    ModelMismatchError,
    NoFaceError,
)
from facesearch.service import FaceSearch
from facesearch.services.reembed import reembed
from facesearch.storage.schema import collections_t
from facesearch.types import QualityFilter

from ..conftest import Databases, face

pytestmark = pytest.mark.databases  # each test on SQLite and on PostgreSQL

Make = Callable[..., Settings]


@pytest.fixture
def people(fs: FaceSearch) -> dict[str, str]:
    """A collection 'c' with obama.jpg and biden.jpg indexed; returns their face ids."""
    fs.collections.create("c")
    ids = {}
    for name in ("obama", "biden"):
        res = fs.collections.index_image("c", face(f"{name}.jpg"), external_id=name)
        assert len(res.indexed) == 1
        ids[name] = res.indexed[0].face_id
    return ids


def test_same_person_matches_and_different_person_does_not(fs: FaceSearch,
                                                           people: dict[str, str]) -> None:
    res = fs.search.by_image("c", face("obama2.jpg"))
    matches = res.results[0].matches
    assert [m.face.external_id for m in matches] == ["obama"]
    assert matches[0].similarity > 90
    everyone = fs.search.by_image("c", face("obama2.jpg"), threshold=0)
    sims = {m.face.external_id: m.similarity for m in everyone.results[0].matches}
    assert sims["biden"] < 80 < sims["obama"]


def test_every_face_search_finds_both_people(fs: FaceSearch, people: dict[str, str]) -> None:
    res = fs.search.by_image("c", face("two_people.jpg"), all_faces=True)
    assert len(res.faces) == 2
    found = {p.matches[0].face.external_id for p in res.results if p.matches}
    assert found == {"obama", "biden"}
    largest_only = fs.search.by_image("c", face("two_people.jpg"))
    assert len(largest_only.results) == 1


@pytest.mark.parametrize("name", ["obama-240p.jpg", "obama-480p.jpg", "obama-720p.jpg",
                                  "obama-1080p.jpg"])
def test_same_photo_at_every_resolution_matches_itself(fs: FaceSearch, name: str) -> None:
    fs.collections.create("res")
    fs.collections.index_image("res", face("obama-1080p.jpg"), external_id="ref")
    fs.collections.index_image("res", face("biden.jpg"), external_id="other")
    res = fs.search.by_image("res", face(name), threshold=0)
    top = res.results[0].matches[0]
    assert top.face.external_id == "ref"
    assert top.similarity > 99


def test_compare(fs: FaceSearch) -> None:
    same = fs.search.compare(face("obama.jpg"), face("obama2.jpg"))
    other = fs.search.compare(face("obama.jpg"), face("biden.jpg"))
    assert same.match and same.similarity > 90
    assert not other.match and other.similarity < 50
    multi = fs.search.compare(face("biden.jpg"), face("two_people.jpg"))
    assert multi.match and len(multi.similarities) == 2
    assert sorted(multi.similarities)[0] < 80 < sorted(multi.similarities)[1]


def test_search_by_face_id_excludes_itself(fs: FaceSearch, people: dict[str, str]) -> None:
    extra = fs.collections.index_image("c", face("obama2.jpg"), external_id="obama2")
    matches = fs.search.by_face_id("c", people["obama"]).matches
    assert [m.face.face_id for m in matches] == [extra.indexed[0].face_id]
    with pytest.raises(FaceNotFoundError):
        fs.search.by_face_id("c", "00000000-0000-4000-8000-000000000000")


def test_duplicate_content_is_skipped_unless_forced(fs: FaceSearch,
                                                    people: dict[str, str]) -> None:
    again = fs.collections.index_image("c", face("obama.jpg"))
    assert again.duplicate and not again.indexed
    assert fs.collections.describe("c").face_count == 2
    forced = fs.collections.index_image("c", face("obama.jpg"), force=True)
    assert not forced.duplicate and len(forced.indexed) == 1
    assert fs.collections.describe("c").face_count == 3


def test_max_faces_and_quality_filter_report_unindexed(fs: FaceSearch) -> None:
    fs.collections.create("m")
    res = fs.collections.index_image("m", face("two_people.jpg"), max_faces=1)
    assert len(res.indexed) == 1 and len(res.unindexed) == 1
    assert res.unindexed[0].reasons == ["EXCEEDS_MAX_FACES"]
    assert res.indexed[0].box == tuple(float(v) for v in res.faces.boxes[0])  # the largest


def test_delete_faces_removes_them_from_search(fs: FaceSearch, people: dict[str, str]) -> None:
    d = fs.erasure.delete_faces(
        "c", [people["obama"], "00000000-0000-4000-8000-000000000000"])
    assert d.deleted == [people["obama"]] and len(d.not_found) == 1 and d.associated == []
    res = fs.search.by_image("c", face("obama2.jpg"), threshold=0)
    assert all(m.face.face_id != people["obama"] for m in res.results[0].matches)
    assert fs.collections.describe("c").face_count == 1


def test_list_faces_pages(fs: FaceSearch, people: dict[str, str]) -> None:
    fs.collections.index_image("c", face("two_people.jpg"))
    page1, nxt = fs.collections.list_faces("c", limit=3)
    assert len(page1) == 3 and nxt is not None
    page2, nxt2 = fs.collections.list_faces("c", limit=3, after=nxt)
    assert len(page2) == 1 and nxt2 is None
    ids = [f.face_id for f in page1 + page2]
    assert len(set(ids)) == 4
    first = page1[0]
    assert first.image.sha256 and first.model_version == fs.pipeline.model_version
    assert len(first.landmarks) == 5 and set(first.quality) >= {"size", "yaw", "sharpness"}


def test_persistence_across_service_instances(home: Path, pipeline,  # noqa: ANN001
                                              settings: Make) -> None:
    with FaceSearch(settings(), pipeline=pipeline) as a:
        a.collections.create("p")
        a.collections.index_image("p", face("obama.jpg"), external_id="obama")
    with FaceSearch(settings(), pipeline=pipeline) as b:
        res = b.search.by_image("p", face("obama2.jpg"))
        assert res.results[0].matches[0].face.external_id == "obama"
        assert (home / "indexes").is_dir()


def test_index_snapshot_behind_the_database_is_reconciled(home: Path, pipeline,  # noqa: ANN001
                                                          settings: Make) -> None:
    """A stale or missing index file (crash before save) is rebuilt from the database."""
    with FaceSearch(settings(), pipeline=pipeline) as a:
        a.collections.create("r")
        a.collections.index_image("r", face("obama.jpg"), external_id="obama")
    for f in (home / "indexes").glob("*.faiss"):
        f.unlink()
    with FaceSearch(settings(), pipeline=pipeline) as b:
        b.collections.index_image("r", face("biden.jpg"), external_id="biden")
        res = b.search.by_image("r", face("obama2.jpg"), threshold=0)
        assert [m.face.external_id for m in res.results[0].matches] == ["obama", "biden"]


def test_two_services_see_each_others_writes(home: Path, pipeline,  # noqa: ANN001
                                             settings: Make) -> None:
    with FaceSearch(settings(), pipeline=pipeline) as a, \
            FaceSearch(settings(), pipeline=pipeline) as b:
        a.collections.create("s")
        a.collections.index_image("s", face("biden.jpg"), external_id="biden")
        assert b.search.by_image("s", face("obama2.jpg")).results[0].matches == []
        added = a.collections.index_image("s", face("obama.jpg"), external_id="obama")
        hit = b.search.by_image("s", face("obama2.jpg")).results[0].matches
        assert [m.face.external_id for m in hit] == ["obama"]
        a.erasure.delete_faces("s", [added.indexed[0].face_id])
        assert b.search.by_image("s", face("obama2.jpg")).results[0].matches == []


def test_other_model_is_refused(fs: FaceSearch, people: dict[str, str]) -> None:
    with fs.store.transaction() as conn:
        conn.execute(update(collections_t).values(model_version="some-other-model"))
    with pytest.raises(ModelMismatchError, match="some-other-model"):
        fs.search.by_image("c", face("obama2.jpg"))
    with pytest.raises(ModelMismatchError):
        fs.collections.index_image("c", face("obama2.jpg"))


def test_collection_lifecycle_and_errors(fs: FaceSearch) -> None:
    info = fs.collections.create("life")
    assert info.face_count == 0 and info.model_version == fs.pipeline.model_version
    with pytest.raises(AlreadyExistsError):
        fs.collections.create("life")
    with pytest.raises(InvalidParameterError):
        fs.collections.create("bad name!")
    assert [c.name for c in fs.collections.list_collections()] == ["life"]
    fs.collections.delete("life")
    with pytest.raises(CollectionNotFoundError):
        fs.collections.describe("life")
    with pytest.raises(CollectionNotFoundError):
        fs.collections.index_image("life", face("obama.jpg"))


def test_search_refusals(fs: FaceSearch, people: dict[str, str]) -> None:
    blank = np.full((300, 300, 3), 200, np.uint8)
    with pytest.raises(NoFaceError):
        fs.search.by_image("c", blank)
    with pytest.raises(InvalidParameterError):
        fs.search.by_image("c", face("obama2.jpg"), threshold=101)
    with pytest.raises(InvalidParameterError):
        fs.search.by_image("c", face("obama2.jpg"), max_results=0)
    with pytest.raises(InvalidImageError):
        fs.search.by_image("c", b"not an image")
    with pytest.raises(NoFaceError):
        fs.search.compare(blank, face("obama.jpg"))


def test_no_face_image_is_recorded_and_not_indexed(fs: FaceSearch) -> None:
    fs.collections.create("n")
    blank = np.full((300, 300, 3), 200, np.uint8)
    res = fs.collections.index_image("n", blank, quality_filter=QualityFilter.NONE)
    assert not res.indexed and not len(res.faces)
    assert fs.collections.describe("n").face_count == 0


def test_reembed_a_collection_made_with_another_model(home: Path, pipeline,  # noqa: ANN001
                                                      settings: Make) -> None:
    from facesearch.errors import ConflictError
    from facesearch.vision.pipeline import load_pipeline

    old = load_pipeline("dlib")
    assert old.model_version != pipeline.model_version
    with FaceSearch(settings(), pipeline=old) as a:
        a.collections.create("legacy")
        kept = a.collections.index_image("legacy", face("obama.jpg"), external_id="obama",
                                         source_name=str(face("obama.jpg"))).indexed[0]
        a.collections.index_image("legacy", face("biden.jpg"), external_id="biden",
                                  source_name=str(face("biden.jpg")))
        a.collections.index_image("legacy", face("two_people.jpg").read_bytes())
    with FaceSearch(settings(), pipeline=pipeline) as b:
        with pytest.raises(ModelMismatchError):
            b.search.by_image("legacy", face("obama2.jpg"))
        with pytest.raises(ConflictError, match="cannot be re-embedded"):
            reembed(b.collections, "legacy")  # two faces came from bytes: no source to re-read
        assert b.collections.describe("legacy").model_version == old.model_version
        report = reembed(b.collections, "legacy", drop_missing=True)
        assert (report.faces_reembedded, report.dropped) == (2, 2)
        assert report.new_model == pipeline.model_version
        info = b.collections.describe("legacy")
        assert info.model_version == pipeline.model_version and info.face_count == 2
        res = b.search.by_image("legacy", face("obama2.jpg"))
        assert [(m.face.face_id, m.face.external_id) for m in res.results[0].matches] == [
            (kept.face_id, "obama")]


# -- faces and their audit events commit together (issue 11, item 7) ---------------------

_CRASH_SCRIPT = """
import os, sys
from pathlib import Path
from facesearch.governance.audit.log import AuditLog
from facesearch.service import FaceSearch
from facesearch.storage.outbox_store import Outbox

home, image, where = sys.argv[1], sys.argv[2], sys.argv[3]
fs = FaceSearch.open(home)
fs.collections.create("c")
if where == "before-audit":  # the faces committed, their audit event not yet appended
    orig = AuditLog.append_many
    def crash(self, events, *a, **k):
        if any(e.operation == "index" for e in events):
            os._exit(9)
        return orig(self, events, *a, **k)
    AuditLog.append_many = crash
else:  # the audit event appended, its outbox row not yet removed
    def crash_remove(self, *a, **k):
        os._exit(9)
    Outbox.remove = crash_remove
fs.collections.index_image("c", Path(image), external_id="two", all_faces=True)
"""


def _index_events(fs: FaceSearch) -> list[str]:
    """Face ids named by the audit trail's index events (with repetitions)."""
    records, _ = fs.audit.query(operation="index", limit=10_000)
    return [face_id for r in records for face_id, _ in r.event.results]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["before-audit", "before-outbox-removal"])
def test_indexed_faces_get_their_audit_event_after_a_crash(home: Path, pipeline: object,
                                                           settings: Make, databases: Databases,
                                                           where: str) -> None:
    """A process killed (os._exit, like kill -9) between committing faces and appending their
    audit event: on the next open every face has exactly one index event."""
    import subprocess
    import sys

    env = {**os.environ, **databases.env(home.parent / "secrets")}
    proc = subprocess.run([sys.executable, "-c", _CRASH_SCRIPT, str(home),
                           str(face("two_people.jpg")), where],
                          capture_output=True, text=True, timeout=600, check=False, env=env)
    assert proc.returncode == 9, proc.stderr  # it died at the point under test
    with FaceSearch(settings(), pipeline=pipeline) as fs:  # type: ignore[arg-type]
        faces, _ = fs.collections.list_faces("c")
        assert len(faces) == 2
        events = _index_events(fs)
        assert sorted(events) == sorted(f.face_id for f in faces)
        assert fs.audit.verify().ok
    with FaceSearch(settings(), pipeline=pipeline) as fs:  # type: ignore[arg-type]
        assert len(_index_events(fs)) == 2  # replayed once, not on every open
