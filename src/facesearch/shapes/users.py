"""Users (several faces of one person) as shown: a user, pages of them, associations, and
user searches."""

from __future__ import annotations

from pydantic import Field

from facesearch.services.users import Association, UserSearchResult
from facesearch.shapes.base import Out, Similarity
from facesearch.shapes.faces import DetectedFaceOut
from facesearch.shapes.search import RiskOut


class UserOut(Out):
    """A user, from a :class:`~facesearch.services.users.UserInfo`."""

    user_id: str
    status: str
    faces: int = Field(validation_alias="face_count")
    created_at: float


class UsersPage(Out):
    users: list[UserOut]
    next_token: str | None = None


class FailedFaceOut(Out):
    face_id: str
    reasons: list[str]


class AssociationOut(Out):
    done: list[str]
    failed: list[FailedFaceOut]
    user: UserOut

    @classmethod
    def of(cls, a: Association) -> AssociationOut:
        """Faces given to (or taken from) a user: those done, those not and why."""
        return cls(done=a.done, user=UserOut.model_validate(a.user),
                   failed=[FailedFaceOut(face_id=f, reasons=r) for f, r in a.failed])


class UserMatchOut(Out):
    """A user matching a probe, from a :class:`~facesearch.services.users.UserMatch`."""

    user_id: str
    similarity: Similarity
    face_id: str


class UserSearchOut(RiskOut):
    search_id: str | None
    threshold: float
    face: DetectedFaceOut | None = None
    matches: list[UserMatchOut]

    @classmethod
    def of(cls, r: UserSearchResult) -> UserSearchOut:
        """A user search: the probe's face searched (none for a search by id) and the users
        matching it."""
        return cls(search_id=r.search_id, threshold=r.threshold, **RiskOut.fields(r.risk),
                   face=DetectedFaceOut.model_validate(r.faces.view(0)) if len(r.faces)
                   else None,
                   matches=[UserMatchOut.model_validate(m) for m in r.matches])
