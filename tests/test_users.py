"""Users: grouping faces of one person, and searching people rather than photos."""

from __future__ import annotations

import pytest

from facesearch.errors import AlreadyExistsError, InvalidParameterError, UserNotFoundError
from facesearch.service import FaceSearch

from .conftest import face


@pytest.fixture
def faces(fs: FaceSearch) -> dict[str, str]:
    fs.collections.create("u")
    out = {}
    for name in ("obama", "obama2", "biden"):
        out[name] = fs.collections.index_image("u", face(f"{name}.jpg"),
                                               external_id=name).indexed[0].face_id
    return out


def test_user_lifecycle_and_search(fs: FaceSearch, faces: dict[str, str]) -> None:
    u = fs.users.create("u", "barack")
    assert u.face_count == 0 and u.status == "CREATED"
    fs.users.create("u", "joe")
    a = fs.users.associate("u", "barack", [faces["obama"], faces["obama2"]])
    assert sorted(a.done) == sorted([faces["obama"], faces["obama2"]]) and not a.failed
    assert a.user.face_count == 2 and a.user.status == "ACTIVE"
    fs.users.associate("u", "joe", [faces["biden"]])

    hits = fs.users.search_by_image("u", face("two_people.jpg"), threshold=0).matches
    assert hits[0].user_id == "joe"  # two_people's largest face is Biden's
    hits = fs.users.search_by_image("u", face("obama-480p.jpg")).matches
    assert [h.user_id for h in hits] == ["barack"]
    by_face = fs.users.search("u", face_id=faces["obama"]).matches
    assert by_face[0].user_id == "barack"
    by_user = fs.users.search("u", user_id="barack", threshold=0).matches
    assert [h.user_id for h in by_user] == ["joe"] and by_user[0].similarity < 80

    listed, nxt = fs.users.list("u")
    assert [x.user_id for x in listed] == ["barack", "joe"] and nxt is None
    page, nxt = fs.users.list("u", limit=1)
    assert len(page) == 1 and nxt is not None

    d = fs.users.disassociate("u", "barack", [faces["obama2"], faces["biden"]])
    assert d.done == [faces["obama2"]]
    assert d.failed == [(faces["biden"], ["FACE_NOT_ASSOCIATED_TO_USER"])]
    fs.users.delete("u", "barack")
    with pytest.raises(UserNotFoundError):
        fs.users.describe("u", "barack")
    assert fs.collections.describe("u").face_count == 3  # faces stay


def test_association_rules(fs: FaceSearch, faces: dict[str, str]) -> None:
    fs.users.create("u", "barack")
    fs.users.create("u", "joe")
    fs.users.associate("u", "barack", [faces["obama"]])
    a = fs.users.associate("u", "barack", [faces["biden"], "00000000-0000-4000-8000-000000000000"])
    assert a.done == []
    assert dict(a.failed) == {faces["biden"]: ["LOW_MATCH_CONFIDENCE"],
                              "00000000-0000-4000-8000-000000000000": ["FACE_NOT_FOUND"]}
    b = fs.users.associate("u", "joe", [faces["obama"]])
    assert b.failed == [(faces["obama"], ["ASSOCIATED_TO_A_DIFFERENT_USER"])]
    with pytest.raises(AlreadyExistsError):
        fs.users.create("u", "joe")
    with pytest.raises(InvalidParameterError):
        fs.users.create("u", "no spaces allowed")
    with pytest.raises(UserNotFoundError):
        fs.users.associate("u", "nobody", [faces["obama"]])
