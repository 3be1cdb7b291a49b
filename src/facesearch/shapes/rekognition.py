"""Amazon Rekognition's shapes, as its endpoint answers them: PascalCase dicts (validated
against botocore's service model by the tests), boxes and landmarks in ratios of the image,
confidences and similarities in percent, and facesearch's model versions as Rekognition's
numeric ``FaceModelVersion``."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from facesearch.services.search import Match
from facesearch.shapes.base import Json
from facesearch.storage.records import FaceRecord
from facesearch.types import LANDMARK_NAMES, FaceView

if TYPE_CHECKING:
    from facesearch.media.kinesis import SearchedFrame
    from facesearch.media.stream.model import ProcessorInfo

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
