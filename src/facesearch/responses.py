"""The one response layer: how faces, stored faces, candidates, collections, users and what a
threshold means are shown to the world, by the native HTTP API and by the CLI's ``--json``,
and as Amazon Rekognition shapes by its endpoint.

Every shape is built here from the service's own types: a face from a
:class:`~facesearch.types.FaceView` (detections, stored faces and faces in video all give
one), a stored face from :class:`~facesearch.storage.records.FaceRecord`. Native shapes are
pixels (boxes ``[x1, y1, x2, y2]``, five ``[x, y]`` landmarks), scores 0-1, similarities and
thresholds 0-100; Rekognition's are ratios of the image and percentages.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from facesearch.governance.calibration import ThresholdRisk
from facesearch.services.collection import CollectionInfo
from facesearch.services.search import Match
from facesearch.services.users import UserInfo
from facesearch.storage.records import FaceRecord
from facesearch.types import LANDMARK_NAMES, Faces, FaceView

if TYPE_CHECKING:
    from facesearch.media.kinesis import SearchedFrame
    from facesearch.media.stream import ProcessorInfo

Json = dict[str, Any]


def rnd(value: float, digits: int = 2) -> float:
    """A number as shown: rounded to ``digits`` decimals."""
    return round(float(value), digits)


class Out(BaseModel):
    """Base of every native response shape (no field beyond those declared)."""

    model_config = ConfigDict(extra="forbid")


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


class DetectedFaceOut(Out):
    box: list[float] = Field(description="[x1, y1, x2, y2] pixels")
    score: float = Field(description="detector confidence, 0-1")
    landmarks: list[list[float]] = Field(description="5 [x, y] points, pixels")
    quality: QualityOut | None = None


class FaceOut(Out):
    face_id: str
    external_id: str | None
    image_id: str | None
    user_id: str | None
    box: list[float] = Field(description="[x1, y1, x2, y2] pixels of the indexed image")
    score: float
    image_width: int
    image_height: int
    created_at: float
    model_version: str
    quality: QualityOut | None = Field(
        None, description="the stored face's quality measures (recognisability and faceness "
                          "absent for faces indexed before they were measured)")


class MatchOut(Out):
    face: FaceOut
    similarity: float
    enrolled_quality_band: str | None = Field(
        None, description="quality band of the stored face (high, medium, low, "
                          "unrecognisable), from its recognisability; None: not measured")
    enrolled_poor_quality: bool = Field(
        False, description="the stored face is of poor quality (band low or unrecognisable): "
                           "the similarity overstates the evidence")


class RiskOut(Out):
    """What the threshold of a search or comparison means (see :func:`risk`)."""

    false_match_rate: float | None = Field(
        None, description="1:1 false-match rate at the threshold (calibrated; None: no "
                          "calibration for this model)")
    expected_fpir: float | None = Field(
        None, description="expected false-positive identification rate at the threshold for "
                          "the collection's current size")
    fmr_extrapolated: bool | None = Field(
        None, description="the false-match rate lies below what the calibration data "
                          "measures: it comes from a fitted tail")


class SearchRiskOut(RiskOut):
    """A search's risk: :class:`RiskOut` from the calibration of the probe's quality band."""

    quality_band: str | None = Field(
        None, description="the probe's quality band (high, medium, low, unrecognisable) whose "
                          "calibration the rates come from; None: the probe's quality is not "
                          "known (the all-pairs calibration)")
    recognisability: float | None = Field(
        None, description="the probe face's recognisability (0-100; the worst of the probe "
                          "faces searched) that chose the band")


class CollectionOut(Out):
    name: str
    model_version: str
    created_at: float = Field(description="seconds since the epoch")
    faces: int
    users: int
    images: int


class UserOut(Out):
    user_id: str
    status: str
    faces: int
    created_at: float


# -- native shapes -----------------------------------------------------------------------------

def _quality(q: dict[str, float]) -> QualityOut:
    return QualityOut(**{k: rnd(v, 3 if k == "faceness" else 1) for k, v in q.items()})


def detail(face: FaceView) -> DetectedFaceOut:
    """A face as detected: box, score, landmarks, quality."""
    q = face.quality
    return DetectedFaceOut(
        box=[rnd(v, 1) for v in face.box], score=rnd(face.score, 4),
        landmarks=[[rnd(x, 1), rnd(y, 1)] for x, y in face.landmarks],
        quality=None if q is None else _quality(q))


def details(faces: Faces) -> list[DetectedFaceOut]:
    return [detail(faces.view(i)) for i in range(len(faces))]


def face(f: FaceRecord) -> FaceOut:
    """A face stored in a collection."""
    return FaceOut(face_id=f.face_id, external_id=f.external_id, image_id=f.image.image_id,
                   user_id=f.user_id, box=[rnd(v, 1) for v in f.box], score=rnd(f.score, 4),
                   image_width=f.image.width, image_height=f.image.height,
                   created_at=f.created_at, model_version=f.model_version,
                   quality=_quality(f.quality) if f.quality else None)


def match(m: Match) -> MatchOut:
    """A candidate of a search: the stored face, its similarity (0-100) and the quality band
    of the stored face."""
    return MatchOut(face=face(m.face), similarity=rnd(m.similarity, 3),
                    enrolled_quality_band=m.enrolled_quality_band,
                    enrolled_poor_quality=m.enrolled_poor_quality)


def candidate(m: Match) -> Json:
    """A candidate as the CLI's ``search --json`` lists it: the stored face's ids and box,
    flat, with the similarity."""
    f = face(m.face)
    return {"face_id": f.face_id, "external_id": f.external_id, "similarity": match(m).similarity,
            "image_id": f.image_id, "user_id": f.user_id, "box": f.box,
            "enrolled_quality_band": m.enrolled_quality_band,
            "enrolled_poor_quality": m.enrolled_poor_quality}


def collection(c: CollectionInfo) -> CollectionOut:
    return CollectionOut(name=c.name, model_version=c.model_version, created_at=c.created_at,
                         faces=c.face_count, users=c.user_count, images=c.image_count)


def user(u: UserInfo) -> UserOut:
    return UserOut(user_id=u.user_id, status=u.status, faces=u.face_count,
                   created_at=u.created_at)


def risk(r: ThresholdRisk | None) -> Json:
    """What a threshold means, as fields of a search or comparison answer: the 1:1 false
    match rate, the expected false-positive identification rate for the collection's size,
    and whether the rate is extrapolated beyond the calibration data (None: no calibration
    of the model)."""
    return {"false_match_rate": None if r is None else float(f"{r.false_match_rate:.3g}"),
            "expected_fpir": None if r is None or r.expected_fpir is None
            else float(f"{r.expected_fpir:.3g}"),
            "fmr_extrapolated": None if r is None else r.extrapolated}


def search_risk(r: ThresholdRisk | None) -> SearchRiskOut:
    """A search's ``risk`` object: :func:`risk`'s fields and the probe's quality band and
    recognisability."""
    return SearchRiskOut(**risk(r), quality_band=None if r is None else r.quality_band,
                         recognisability=None if r is None else r.recognisability)


# -- Amazon Rekognition shapes -------------------------------------------------------------------

REKOGNITION_LANDMARKS = ("eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight")
"""Rekognition's names of the five landmarks, in :data:`~facesearch.types.LANDMARK_NAMES`
order."""
assert len(REKOGNITION_LANDMARKS) == len(LANDMARK_NAMES)


def bounding_box(box: tuple[float, float, float, float], width: int, height: int) -> Json:
    """(x1, y1, x2, y2) pixels to Rekognition's ratios of the image's width and height."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return {"Width": (x2 - x1) / width, "Height": (y2 - y1) / height,
            "Left": x1 / width, "Top": y1 / height}


def rekognition_detail(f: FaceView, width: int, height: int) -> Json:
    """A ``FaceDetail`` (also a ``ComparedFace``): box, landmarks, pose, quality, confidence
    (percent), in ratios of a ``width`` x ``height`` image."""
    q = f.quality or {}
    return {
        "BoundingBox": bounding_box(f.box, width, height),
        "Landmarks": [{"Type": t, "X": x / width, "Y": y / height}
                      for t, (x, y) in zip(REKOGNITION_LANDMARKS, f.landmarks, strict=True)],
        "Pose": {"Roll": q.get("roll", 0.0), "Yaw": q.get("yaw", 0.0),
                 "Pitch": q.get("pitch", 0.0)},
        "Quality": {"Brightness": q.get("brightness", 0.0),
                    "Sharpness": q.get("sharpness", 0.0)},
        "Confidence": 100.0 * f.score,
    }


MODEL_VERSION_NUMBERS: dict[str, str] = {
    "dlib-hog+sp68/dlib-resnet-v1": "7.0",
    "blazeface+onet/dlib-resnet-v1": "7.1",
    "blazeface+onet/dlib-resnet-v1-int8w7": "7.2",
    "blazeface+onet/dlib-resnet-v1+flip": "7.3",
    "blazeface+onet/dlib-resnet-v1-int8w7+flip": "7.4",
    "blazeface+onet/sface-2021dec": "7.5",
    "blazeface+onet/sface-2021dec+flip": "7.6",
}
"""facesearch's model versions (``<detector>/<embedder>``, as ``/v1`` names them) as the numeric
``FaceModelVersion`` Rekognition clients expect (pattern ``[0-9.]+``), in the order they were
added. Every one is 7.x, Rekognition's current face model, whose features (users) facesearch
has for every model. Two different numbers always mean two different vector spaces, as two
different names do: collections of different versions are never searched together."""

UNLISTED_MODEL_PREFIX = "7.9"
"""Model versions not in :data:`MODEL_VERSION_NUMBERS` (custom pipelines) are ``7.9`` followed
by six digits of the CRC-32 of their name: numeric, stable, above every listed version, and
distinct for distinct names (but for a 1-in-a-million clash)."""


def rekognition_model_version(model_version: str) -> str:
    """The numeric ``FaceModelVersion`` of a facesearch model version (see
    :data:`MODEL_VERSION_NUMBERS`)."""
    known = MODEL_VERSION_NUMBERS.get(model_version)
    if known is not None:
        return known
    return f"{UNLISTED_MODEL_PREFIX}{zlib.crc32(model_version.encode()) % 1_000_000:06d}"


def rekognition_arn(region: str, account: str, kind: str, name: str) -> str:
    """A Rekognition ARN: ``arn:aws:rekognition:REGION:ACCOUNT:KIND/NAME`` (``collection``,
    ``streamprocessor``)."""
    return f"arn:aws:rekognition:{region}:{account}:{kind}/{name}"


def rekognition_face(f: FaceRecord) -> Json:
    """A ``Face``: a face stored in a collection."""
    out: Json = {"FaceId": f.face_id,
                 "BoundingBox": bounding_box(f.box, f.image.width, f.image.height),
                 "Confidence": 100.0 * f.score,
                 "IndexFacesModelVersion": rekognition_model_version(f.model_version)}
    if f.image.image_id:
        out["ImageId"] = f.image.image_id
    if f.external_id:
        out["ExternalImageId"] = f.external_id
    if f.user_id:
        out["UserId"] = f.user_id
    return out


def rekognition_stream_record(frame: SearchedFrame) -> Json:
    """Rekognition Video's Kinesis record of a frame a stream processor searched:
    ``InputInformation.KinesisVideo`` (``StreamArn``: the input a Rekognition client named;
    ``FragmentNumber``: the processor's connection to its input, 1, 2, ...; ``ServerTimestamp``
    and ``ProducerTimestamp``: when the frame was decoded, Unix time in s;
    ``FrameOffsetInSeconds``: the frame's time in that connection), ``StreamProcessorInformation``
    and ``FaceSearchResponse``: each searched face (``DetectedFace``, in ratios of the frame)
    with its ``MatchedFaces`` (at or above the threshold, best first; empty when none)."""
    video: Json = {"FragmentNumber": str(frame.session),
                   "ServerTimestamp": round(frame.captured_at, 3),
                   "ProducerTimestamp": round(frame.captured_at, 3),
                   "FrameOffsetInSeconds": round(frame.offset_s, 3)}
    if frame.input_arn is not None:
        video = {"StreamArn": frame.input_arn, **video}
    w, h = max(frame.width, 1), max(frame.height, 1)

    def matched(m: Match) -> Json:
        f = m.face
        face: Json = {"BoundingBox": bounding_box(f.box, f.image.width, f.image.height),
                      "FaceId": f.face_id, "Confidence": 100.0 * f.score}
        if f.image.image_id:
            face["ImageId"] = f.image.image_id
        if f.external_id:
            face["ExternalImageId"] = f.external_id
        return {"Similarity": m.similarity, "Face": face}

    return {
        "InputInformation": {"KinesisVideo": video},
        "StreamProcessorInformation": {"Status": frame.status},
        "FaceSearchResponse": [
            {"DetectedFace": rekognition_detail(face, w, h),
             "MatchedFaces": [matched(m) for m in matches]}
            for face, matches in zip(frame.faces, frame.matches, strict=True)],
    }


def rekognition_stream_processor(p: ProcessorInfo, region: str, account: str) -> Json:
    """``DescribeStreamProcessor``'s answer: name, ARN, status (and its message), times (s),
    the Kinesis input and output a Rekognition client named, the role ARN it sent, and the
    face search settings (collection, threshold). facesearch shares no data:
    ``DataSharingPreference.OptIn`` is false."""
    s = p.settings
    out: Json = {"Name": p.name,
                 "StreamProcessorArn": rekognition_arn(region, account, "streamprocessor",
                                                       p.name),
                 "Status": p.status.value, "CreationTimestamp": p.created_at,
                 "LastUpdateTimestamp": p.updated_at}
    if p.status_message:
        out["StatusMessage"] = p.status_message
    if s.kinesis_video_stream_arn is not None:
        out["Input"] = {"KinesisVideoStream": {"Arn": s.kinesis_video_stream_arn}}
    if s.kinesis_data_stream_arn is not None:
        out["Output"] = {"KinesisDataStream": {"Arn": s.kinesis_data_stream_arn}}
    if s.role_arn is not None:
        out["RoleArn"] = s.role_arn
    search: Json = {"CollectionId": s.collection}
    if s.threshold is not None:
        search["FaceMatchThreshold"] = s.threshold
    out["Settings"] = {"FaceSearch": search}
    out["DataSharingPreference"] = {"OptIn": False}
    return out
