"""Which faces of an analysed image are stored, and as what records.

:func:`choose_faces` applies the quality filter, the one face per label rule
(:data:`NOT_LABELLED_FACE`) and ``max_faces`` to an :class:`AnalyzedImage` under
:class:`IndexRules`, and gives the :class:`~facesearch.storage.records.NewFace` records to
insert; :class:`facesearch.services.collection.FaceCollections` stores them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from facesearch import limits
from facesearch.storage.records import NewFace
from facesearch.types import Faces, QualityFilter
from facesearch.vision.crop import FaceCrop
from facesearch.vision.quality import reasons as quality_reasons

NOT_LABELLED_FACE = "NOT_LABELLED_FACE"
"""Why a face of a labelled photo was not indexed: the label (external id) names one person,
taken to be the photo's largest face that passes the quality filter; the others (bystanders,
faces on posters, junk that passed) are left out unless every face is asked for."""


@dataclass(frozen=True, kw_only=True)
class AnalyzedImage:
    """An image analysed for storing
    (:meth:`facesearch.services.collection.FaceCollections.analyze`): its content hash
    (SHA-256 hex), size (``width`` x ``height`` px), the faces found (with quality and
    embeddings), one review crop per face (:func:`facesearch.vision.crop.face_crops`, or
    None) and the name of the file or object it came from."""

    sha256: str
    width: int
    height: int
    faces: Faces
    crops: list[FaceCrop] | None = None
    source_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class IndexRules:
    """Which faces of an image to store: those that pass ``quality_filter``; with an
    ``external_id`` (a label naming one person) only the largest of them, unless
    ``all_faces``; at most ``max_faces`` (the largest). ``force`` stores content already in
    the collection again (new face ids)."""

    external_id: str | None = None
    max_faces: int | None = None
    quality_filter: QualityFilter = QualityFilter.AUTO
    force: bool = False
    all_faces: bool = False


ALL_PASSING = IndexRules()
"""The default rules: every face that passes the automatic quality filter, no label."""


def choose_faces(image: AnalyzedImage,
                 rules: IndexRules) -> tuple[list[list[str]], list[NewFace]]:
    """Why each face of ``image`` is left out (empty: kept), and the faces to insert."""
    faces, crops = image.faces, image.crops
    if rules.max_faces is not None:
        limits.count(rules.max_faces, "max faces")
    if rules.external_id is not None:
        limits.external_id(rules.external_id)
    if faces.embeddings is None or faces.quality is None:
        raise ValueError("faces must carry quality and embeddings (use analyze())")
    if crops is not None and len(crops) != len(faces):
        raise ValueError(f"{len(crops)} crops for {len(faces)} faces")
    why = quality_reasons(faces, rules.quality_filter)
    if rules.external_id is not None and not rules.all_faces:
        passing = [i for i in range(len(faces)) if not why[i]]
        for i in passing[1:]:
            why[i].append(NOT_LABELLED_FACE)
    if rules.max_faces is not None:
        passing = [i for i in range(len(faces)) if not why[i]]
        for i in passing[rules.max_faces:]:
            why[i].append("EXCEEDS_MAX_FACES")
    embeddings = faces.embeddings
    new = [NewFace(
        face_id=str(uuid.uuid4()), external_id=rules.external_id,
        box=tuple(float(v) for v in faces.boxes[i]),  # type: ignore[arg-type]
        landmarks=faces.landmarks[i].round(2).tolist(), score=float(faces.scores[i]),
        quality=quality_dict(faces, i), embedding=embeddings[i],
        crop=None if crops is None else crops[i],
    ) for i in range(len(faces)) if not why[i]]
    return why, new


def recognisabilities(new: list[NewFace]) -> str | None:
    """The indexed faces' recognisability, in the audit event's order of face ids
    (``"97,54"``; None when none was measured)."""
    values = [f.quality.get("recognisability") for f in new]
    if not any(v is not None for v in values):
        return None
    return ",".join("" if v is None else f"{v:.0f}" for v in values)


def quality_dict(faces: Faces, i: int) -> dict[str, float]:
    """Face ``i``'s quality measures as the store keeps them."""
    q = faces.quality
    assert q is not None
    return q.dict(i)
