"""The records the metadata store reads and writes: a collection, an indexed image, a stored
face (:class:`FaceRecord`, the one record type of a face from the database to every
interface) and a face to insert. Keyword-only: a record is built by naming its fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from facesearch.types import FaceView, FloatArray
from facesearch.vision.crop import FaceCrop


@dataclass(frozen=True, kw_only=True)
class CollectionRow:
    id: int
    name: str
    model_version: str
    created_at: float
    generation: int
    settings: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class SourceImage:
    """The image a stored face was found in: ``width`` x ``height`` pixels; its record's
    ``image_id``, content hash and ``source`` (path or URI) are None once the image record
    is gone (an erasure of its other faces keeps the face's own geometry)."""

    image_id: str | None
    sha256: str | None
    source: str | None
    width: int
    height: int


@dataclass(frozen=True, kw_only=True)
class FaceRecord:
    """A face stored in a collection: the one record type of a face, from the database to
    every interface (:mod:`facesearch.shapes` turns it into JSON).

    ``box`` is (x1, y1, x2, y2) and ``landmarks`` five (x, y) points, in pixels of the source
    ``image``; ``score`` the detector's confidence (0-1); ``quality``: ``size`` (inter-ocular
    px), ``sharpness`` and ``brightness`` (0-100), ``yaw``, ``pitch``, ``roll`` (degrees), and
    when measured ``faceness`` (0-1) and ``recognisability`` (0-100). ``created_at`` in s since
    the epoch. ``row`` is the database row (the vector index's id), internal to the service.
    """

    face_id: str
    external_id: str | None
    user_id: str | None
    image: SourceImage
    box: tuple[float, float, float, float]
    landmarks: list[list[float]]
    score: float
    quality: dict[str, float]
    created_at: float
    model_version: str
    row: int = -1

    def view(self) -> FaceView:
        """The face as plain numbers (in pixels of its source image)."""
        return FaceView(self.box, self.score,
                        tuple((float(x), float(y)) for x, y in self.landmarks),
                        dict(self.quality))


@dataclass(frozen=True, kw_only=True)
class NewFace:
    """A face to insert (everything but the ids the store assigns)."""

    face_id: str
    external_id: str | None
    box: tuple[float, float, float, float]
    landmarks: list[list[float]]
    score: float
    quality: dict[str, float]
    embedding: FloatArray
    crop: FaceCrop | None = None


@dataclass(frozen=True, kw_only=True)
class NewImage:
    """An image record to insert: its content hash, where it came from, its size (px) and
    how many faces were detected in it and indexed from it."""

    image_id: str
    sha256: str
    source: str | None
    external_id: str | None
    width: int
    height: int
    faces_detected: int
    faces_indexed: int


@dataclass(frozen=True, kw_only=True)
class ImageRow:
    id: int
    image_id: str
    sha256: str
    source: str | None
    external_id: str | None
    faces_detected: int
    faces_indexed: int
