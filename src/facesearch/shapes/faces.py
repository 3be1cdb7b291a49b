"""Faces as shown: a face as detected (box, score, landmarks, quality), a face stored in a
collection, the answers of indexing, listing, deleting and detecting, and review crops."""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import AliasPath, Field, field_validator, model_validator

from facesearch.services.collection import FaceCard, IndexResult
from facesearch.shapes.base import Out, Pixels, Points, Score, rnd
from facesearch.types import Faces
from facesearch.vision.crop import to_crop


class QualityOut(Out):
    size: float = Field(description="inter-ocular distance, pixels")
    sharpness: float = Field(description="0-100")
    brightness: float = Field(description="0-100")
    yaw: float = Field(description="degrees")
    pitch: float = Field(description="degrees")
    roll: float = Field(description="degrees")
    faceness: float | None = Field(
        None, description="MTCNN O-Net's probability that the box holds a face, 0-1 (absent "
                          "where the detector has no O-Net)")
    recognisability: float | None = Field(
        None, description="0-100, higher: more recognisable; from the embedding's distance to "
                          "the centroid of unrecognisable faces (absent before the face is "
                          "embedded, and for faces indexed before it was measured)")

    @model_validator(mode="before")
    @classmethod
    def _rounded(cls, data: Any) -> Any:
        """A quality dict as shown: faceness to 1e-3, the others to 0.1."""
        if isinstance(data, dict):
            return {k: v if v is None else rnd(v, 3 if k == "faceness" else 1)
                    for k, v in data.items()}
        return data


def _measured(q: Any) -> Any:
    """No quality measures (None or empty): no quality object."""
    return q or None


class DetectedFaceOut(Out):
    """A face as detected, from a :class:`~facesearch.types.FaceView`."""

    box: Pixels = Field(description="[x1, y1, x2, y2] pixels")
    score: Score = Field(description="detector confidence, 0-1")
    landmarks: Points = Field(description="5 [x, y] points, pixels")
    quality: QualityOut | None = None

    _measured = field_validator("quality", mode="before")(_measured)

    @classmethod
    def all(cls, faces: Faces) -> list[DetectedFaceOut]:
        """Every face of ``faces``, in their order."""
        return [cls.model_validate(faces.view(i)) for i in range(len(faces))]


class FaceOut(Out):
    """A face stored in a collection, from a :class:`~facesearch.storage.records.FaceRecord`
    (its image's fields read from ``FaceRecord.image``)."""

    face_id: str
    external_id: str | None
    image_id: str | None = Field(validation_alias=AliasPath("image", "image_id"))
    user_id: str | None
    box: Pixels = Field(description="[x1, y1, x2, y2] pixels of the indexed image")
    score: Score
    image_width: int = Field(validation_alias=AliasPath("image", "width"))
    image_height: int = Field(validation_alias=AliasPath("image", "height"))
    created_at: float
    model_version: str
    quality: QualityOut | None = Field(
        None, description="the stored face's quality measures (recognisability and faceness "
                          "absent for faces indexed before they were measured)")

    _measured = field_validator("quality", mode="before")(_measured)


class LocalFaceOut(FaceOut):
    """A stored face as the CLI's ``faces list --json`` shows it: :class:`FaceOut` and where
    its image came from, which only the data directory's owner sees (``/v1`` does not show
    them)."""

    source: str | None = Field(description="the image's path or URL, as indexed",
                               validation_alias=AliasPath("image", "source"))
    image_sha256: str | None = Field(description="the SHA-256 of the image's bytes",
                                     validation_alias=AliasPath("image", "sha256"))


class LocalFacesPage(Out):
    faces: list[LocalFaceOut]
    next_token: str | None = None


class IndexedFaceOut(Out):
    face: FaceOut
    detail: DetectedFaceOut


class UnindexedFaceOut(Out):
    detail: DetectedFaceOut
    reasons: list[str]


class IndexOut(Out):
    image_id: str | None
    duplicate: bool = Field(description="the same content was already indexed (not `force`)")
    width: int
    height: int
    indexed: list[IndexedFaceOut]
    unindexed: list[UnindexedFaceOut]

    @classmethod
    def of(cls, res: IndexResult) -> IndexOut:
        """An indexing's answer: each face stored (with its detection) and each face left out
        with the reasons. A duplicate stored nothing (the same content is already there:
        found before or, when an identical request won the race, while storing): no faces
        to report either way."""
        if res.duplicate:
            return cls(image_id=res.image_id, duplicate=True, width=res.width,
                       height=res.height, indexed=[], unindexed=[])
        why = {u.face_index: u.reasons for u in res.unindexed}
        kept = [i for i in range(len(res.faces)) if i not in why]
        view = res.faces.view
        return cls(
            image_id=res.image_id, duplicate=res.duplicate, width=res.width, height=res.height,
            indexed=[IndexedFaceOut(face=FaceOut.model_validate(rec),
                                    detail=DetectedFaceOut.model_validate(view(i)))
                     for i, rec in zip(kept, res.indexed, strict=True)],
            unindexed=[UnindexedFaceOut(detail=DetectedFaceOut.model_validate(view(i)),
                                        reasons=r) for i, r in sorted(why.items())])


class FacesPage(Out):
    faces: list[FaceOut]
    next_token: str | None = None


class DeleteFacesOut(Out):
    """Faces deleted by id, from a :class:`~facesearch.governance.erasure.Deletion`."""

    deleted: list[str]
    not_found: list[str]
    associated_to_user: list[str] = Field(
        validation_alias="associated",
        description="faces of a user, not deleted: disassociate them first (or erase them)")


class DetectOut(Out):
    width: int
    height: int
    faces: list[DetectedFaceOut]


class CropOut(Out):
    content_type: Literal["image/jpeg"] = "image/jpeg"
    data: str = Field(description="the JPEG, base64")
    size: int = Field(description="width and height, pixels (at most 160)")
    box: list[float] = Field(description="the face box [x1, y1, x2, y2] in crop pixels")
    landmarks: list[list[float]] = Field(description="5 [x, y] points in crop pixels")


class FaceCardOut(Out):
    face: FaceOut
    source_name: str | None = Field(description="the file the face was indexed from (its "
                                                "name only)")
    landmarks: Points = Field(description="5 [x, y] points, pixels of the indexed image")
    crop: CropOut | None = Field(description="null for faces indexed before crops were kept")

    @classmethod
    def of(cls, c: FaceCard) -> FaceCardOut:
        """A stored face with its review crop (box and landmarks in crop pixels)."""
        f = c.face
        crop = None
        if c.crop is not None:
            x1, y1, x2, y2 = f.box
            crop = CropOut(data=base64.b64encode(c.crop.jpeg).decode("ascii"),
                           size=c.crop.size,
                           box=[v for pt in to_crop([(x1, y1), (x2, y2)], c.crop) for v in pt],
                           landmarks=to_crop(f.landmarks, c.crop))
        return cls(face=FaceOut.model_validate(f), source_name=c.source_name,
                   landmarks=f.landmarks, crop=crop)


class FaceCardsOut(Out):
    faces: list[FaceCardOut]
    not_found: list[str]
