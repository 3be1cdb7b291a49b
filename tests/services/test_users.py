"""Users: grouping faces of one person, and searching people rather than photos."""

from __future__ import annotations

import pytest

from facesearch.errors import AlreadyExistsError, InvalidParameterError, UserNotFoundError
from facesearch.service import FaceSearch

from ..conftest import face

pytestmark = pytest.mark.databases  # each test on SQLite and on PostgreSQL


@pytest.fixture
def faces(fs: FaceSearch) -> dict[str, str]:
    fs.collections.create("u")
    out = {}
    for name in ("obama", "obama2", "biden"):
        out[name] = fs.collections.index_image("u", face(f"{name}.jpg"),
                                               external_id=name).indexed[0].face_id
    return out


@pytest.fixture
def users(fs: FaceSearch, faces: dict[str, str]) -> dict[str, str]:
    """Users ``barack`` (obama.jpg, obama2.jpg) and ``joe`` (biden.jpg) in collection ``u``."""
    fs.users.create("u", "barack")
    fs.users.create("u", "joe")
    fs.users.associate("u", "barack", [faces["obama"], faces["obama2"]])
    fs.users.associate("u", "joe", [faces["biden"]])
    return faces


def test_a_new_user_is_created_then_active(fs: FaceSearch, faces: dict[str, str]) -> None:
    u = fs.users.create("u", "barack")
    assert u.face_count == 0 and u.status == "CREATED"
    a = fs.users.associate("u", "barack", [faces["obama"], faces["obama2"]])
    assert sorted(a.done) == sorted([faces["obama"], faces["obama2"]]) and not a.failed
    assert a.user.face_count == 2 and a.user.status == "ACTIVE"


@pytest.mark.parametrize(("probe", "threshold", "first"), [
    ("two_people.jpg", 0, "joe"),  # the largest face of two_people.jpg is Biden's
    ("obama-480p.jpg", None, "barack"),
])
def test_search_users_by_image(fs: FaceSearch, users: dict[str, str], probe: str,
                               threshold: float | None, first: str) -> None:
    hits = fs.users.search_by_image("u", face(probe), threshold=threshold).matches
    assert hits[0].user_id == first
    if threshold is None:
        assert [h.user_id for h in hits] == [first]


def test_search_users_by_face_and_by_user(fs: FaceSearch, users: dict[str, str]) -> None:
    assert fs.users.search("u", face_id=users["obama"]).matches[0].user_id == "barack"
    by_user = fs.users.search("u", user_id="barack", threshold=0).matches
    assert [h.user_id for h in by_user] == ["joe"] and by_user[0].similarity < 80


def test_list_users_in_pages(fs: FaceSearch, users: dict[str, str]) -> None:
    listed, nxt = fs.users.list_users("u")
    assert [x.user_id for x in listed] == ["barack", "joe"] and nxt is None
    page, nxt = fs.users.list_users("u", limit=1)
    assert len(page) == 1 and nxt is not None


def test_disassociate_and_delete_keep_the_faces(fs: FaceSearch, users: dict[str, str]) -> None:
    d = fs.users.disassociate("u", "barack", [users["obama2"], users["biden"]])
    assert d.done == [users["obama2"]]
    assert d.failed == [(users["biden"], ["ASSOCIATED_TO_A_DIFFERENT_USER"])]  # joe's
    again = fs.users.disassociate("u", "barack", [users["obama2"]])  # now nobody's
    assert again.failed == [(users["obama2"], ["FACE_NOT_ASSOCIATED_TO_USER"])]
    fs.users.delete("u", "barack")
    with pytest.raises(UserNotFoundError):
        fs.users.describe("u", "barack")
    assert fs.collections.describe("u").face_count == 3


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
