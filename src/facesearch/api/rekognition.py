"""The Amazon Rekognition-compatible endpoint: AWS JSON 1.1 over ``POST /``.

``X-Amz-Target: RekognitionService.<Operation>`` names the operation; the body is its JSON
request. Each operation parses Rekognition's request shape, calls the same service method as
the CLI, and answers Rekognition's response shape:

- images are JPEG or PNG, as on AWS (others: InvalidImageFormatException; the setting
  ``FACESEARCH_API_REKOGNITION_IMAGE_FORMATS`` allows more; the native API reads every
  format);
- boxes and landmarks as ratios of the image's width and height (``eyeLeft`` is the eye with
  the smaller x, as in Rekognition); ``Confidence`` is the detector's score x 100; ``Pose``
  is yaw, pitch and roll in degrees; ``Quality`` is brightness and sharpness (0-100);
- similarities on facesearch's 0-100 scale, thresholds (``FaceMatchThreshold``,
  ``SimilarityThreshold``, ``UserMatchThreshold``) compared on it (default 80; 75 for
  ``AssociateFaces``);
- ``FaceModelVersion`` and ``IndexFacesModelVersion`` are numeric (``7.5`` for the default
  model), mapped from facesearch's model versions by
  :func:`facesearch.shapes.rekognition.rekognition_model_version` (``/v1`` keeps the names);
- ``NextToken`` is opaque; ``Image`` is ``Bytes`` (at most 5 MB, as Rekognition) or an
  ``S3Object`` of the configured store (at most the image byte limit, 15 MB);
- stored-video jobs (StartFaceSearch, GetFaceSearch, StartFaceDetection, GetFaceDetection)
  read ``Video.S3Object`` (streamed by :mod:`facesearch.api.video`) and run on
  :class:`facesearch.media.video.VideoJobs`; a CANCELLED job is reported as FAILED;
  ``NotificationChannel`` gets Rekognition's completion message through the configured SNS
  endpoint, and is refused without one;
- stream processors and tags are :mod:`facesearch.api.rekognition_streams`'.

Errors carry Rekognition's codes (:mod:`facesearch.api.errors`), so botocore raises the same
exception classes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import Field, ValidationError

from facesearch.api.auth import Operation, authorize, sigv4_signature
from facesearch.api.context import ApiContext, context
from facesearch.api.errors import (
    AMZ_JSON,
    SerializationError,
    UnknownOperationError,
    rekognition_error,
)
from facesearch.api.native import parse_json
from facesearch.api.paging import decode_row, encode_token, page_by_name
from facesearch.api.replay import Claim, Repeat, repeat_rule, signature_claim, token_claim
from facesearch.api.rekognition_streams import STREAM_HANDLERS, In, Json, TagMap, arn
from facesearch.api.video import (
    Submit,
    offset_token,
    page_size,
    results_kind,
    submit_s3,
    wrap_offset,
)
from facesearch.errors import (
    FaceSearchError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidParameterError,
    NoFaceError,
    ThrottledError,
)
from facesearch.governance.tags import ResourceKind, validate_tags
from facesearch.limits import MAX_INLINE_IMAGE_BYTES, MAX_RESULTS, megabytes
from facesearch.media.sns import ROLE_ARN
from facesearch.media.video import (
    JobKind,
    JobStatus,
    VideoJob,
    VideoJobSettings,
    VideoMatch,
    parse_s3_label,
)
from facesearch.services.users import DEFAULT_USER_MATCH_THRESHOLD, UserMatch, UserSearchResult
from facesearch.shapes import rekognition as shapes
from facesearch.shapes.base import public_message
from facesearch.types import Caller, Image, QualityFilter
from facesearch.vision.decode import load_image
from facesearch.vision.quality import reasons as quality_reasons

TARGET_PREFIX = "RekognitionService"
DEFAULT_MAX_FACES = 10
DEFAULT_MAX_USERS = 10
DEFAULT_PAGE = 1000
DEFAULT_USER_PAGE = 50

Attribute = Literal["DEFAULT", "ALL", "AGE_RANGE", "BEARD", "EMOTIONS", "EYE_DIRECTION",
                    "EYEGLASSES", "EYES_OPEN", "GENDER", "MOUTH_OPEN", "MUSTACHE",
                    "FACE_OCCLUDED", "SMILE", "SUNGLASSES"]
"""Rekognition's face attribute names (facesearch computes DEFAULT's: box, landmarks, pose,
quality, confidence; an unknown name is refused)."""

router = APIRouter()


# -- request shapes -------------------------------------------------------------------------

class S3ObjectIn(In):
    Bucket: str = Field(min_length=3, max_length=255)
    Name: str = Field(min_length=1, max_length=1024)
    Version: str | None = None


class ImageIn(In):
    Bytes: str | None = None
    S3Object: S3ObjectIn | None = None


CollectionId = Field(min_length=1, max_length=255)


class CollectionIn(In):
    CollectionId: str = CollectionId


class CreateCollectionIn(CollectionIn):
    Tags: TagMap | None = None


class ListCollectionsIn(In):
    NextToken: str | None = None
    MaxResults: int | None = Field(None, ge=1, le=MAX_RESULTS)


class IndexFacesIn(In):
    CollectionId: str = CollectionId
    Image: ImageIn
    ExternalImageId: str | None = Field(None, min_length=1, max_length=255,
                                        pattern=r"^[a-zA-Z0-9_.\-:]+$")
    DetectionAttributes: list[Attribute] = Field(default_factory=list)
    MaxFaces: int | None = Field(None, ge=1)
    QualityFilter: QualityFilter = QualityFilter.AUTO


class ListFacesIn(In):
    CollectionId: str = CollectionId
    NextToken: str | None = None
    MaxResults: int | None = Field(None, ge=1, le=MAX_RESULTS)
    UserId: str | None = None
    FaceIds: list[str] | None = Field(None, min_length=1, max_length=MAX_RESULTS)


class DeleteFacesIn(In):
    CollectionId: str = CollectionId
    FaceIds: list[str] = Field(min_length=1, max_length=MAX_RESULTS)


class SearchFacesIn(In):
    CollectionId: str = CollectionId
    FaceId: str
    MaxFaces: int | None = Field(None, ge=1, le=MAX_RESULTS)
    FaceMatchThreshold: float | None = Field(None, ge=0, le=100)


class SearchFacesByImageIn(In):
    CollectionId: str = CollectionId
    Image: ImageIn
    MaxFaces: int | None = Field(None, ge=1, le=MAX_RESULTS)
    FaceMatchThreshold: float | None = Field(None, ge=0, le=100)
    QualityFilter: QualityFilter = QualityFilter.NONE


class CompareFacesIn(In):
    SourceImage: ImageIn
    TargetImage: ImageIn
    SimilarityThreshold: float | None = Field(None, ge=0, le=100)
    QualityFilter: QualityFilter = QualityFilter.NONE


class DetectFacesIn(In):
    Image: ImageIn
    Attributes: list[Attribute] = Field(default_factory=list)


class UserIn(In):
    CollectionId: str = CollectionId
    UserId: str
    ClientRequestToken: str | None = None


class ListUsersIn(In):
    CollectionId: str = CollectionId
    MaxResults: int | None = Field(None, ge=1, le=500)
    NextToken: str | None = None


class UserFacesIn(In):
    CollectionId: str = CollectionId
    UserId: str
    FaceIds: list[str] = Field(min_length=1, max_length=100)
    UserMatchThreshold: float | None = Field(None, ge=0, le=100)
    ClientRequestToken: str | None = None


class SearchUsersIn(In):
    CollectionId: str = CollectionId
    UserId: str | None = None
    FaceId: str | None = None
    UserMatchThreshold: float | None = Field(None, ge=0, le=100)
    MaxUsers: int | None = Field(None, ge=1, le=500)


class SearchUsersByImageIn(In):
    CollectionId: str = CollectionId
    Image: ImageIn
    UserMatchThreshold: float | None = Field(None, ge=0, le=100)
    MaxUsers: int | None = Field(None, ge=1, le=500)
    QualityFilter: QualityFilter = QualityFilter.NONE


# -- response shapes ------------------------------------------------------------------------

def collection_arn(ctx: ApiContext, name: str) -> str:
    return arn(ctx, ResourceKind.COLLECTION, name)


def model_version(version: str) -> str:
    """The numeric ``FaceModelVersion`` of a facesearch model version."""
    return shapes.rekognition_model_version(version)


def _too_large(ctx: ApiContext, size: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"Image.Bytes: {megabytes(size)} is over the {megabytes(MAX_INLINE_IMAGE_BYTES)} limit "
        f"of images sent as bytes; send larger images (up to the "
        f"{megabytes(ctx.fs.settings.max_image_bytes)} image limit) as an S3Object")


async def image_bytes(ctx: ApiContext, image: ImageIn) -> bytes:
    """The encoded image: ``Bytes`` (base64 in JSON; at most
    :data:`~facesearch.limits.MAX_INLINE_IMAGE_BYTES` decoded, refused before any decoding) or
    the ``S3Object``'s content."""
    if (image.Bytes is None) == (image.S3Object is None):
        raise InvalidParameterError("Image needs exactly one of Bytes or S3Object")
    if image.Bytes is not None:
        text = image.Bytes
        least = len(text) * 3 // 4 - 2  # bytes the base64 text holds, at least
        if least > MAX_INLINE_IMAGE_BYTES:
            raise _too_large(ctx, least)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidParameterError("Image.Bytes is not valid base64") from None
        if not data:
            raise InvalidParameterError("Image.Bytes is empty")
        if len(data) > MAX_INLINE_IMAGE_BYTES:
            raise _too_large(ctx, len(data))
        check_format(ctx, data)
        return data
    s3 = image.S3Object
    assert s3 is not None
    data = await ctx.io(lambda: ctx.s3.fetch(s3.Bucket, s3.Name, s3.Version))
    check_format(ctx, data)
    return data


SIGNATURES: tuple[tuple[str, tuple[bytes, ...]], ...] = (
    ("jpeg", (b"\xff\xd8\xff",)), ("png", (b"\x89PNG\r\n\x1a\n",)),
    ("gif", (b"GIF87a", b"GIF89a")), ("bmp", (b"BM",)), ("tiff", (b"II*\x00", b"MM\x00*")),
)


def image_format(data: bytes) -> str | None:
    """The format an image's first bytes name (jpeg, png, webp, gif, bmp, tiff; None: none of
    them)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for name, starts in SIGNATURES:
        if data.startswith(starts):
            return name
    return None


def check_format(ctx: ApiContext, data: bytes) -> None:
    """Refuse, as Rekognition does, an image in a format the endpoint is not set to accept
    (``FACESEARCH_API_REKOGNITION_IMAGE_FORMATS``; default JPEG and PNG, as AWS)."""
    if image_format(data) not in ctx.settings.rekognition_image_formats:
        raise InvalidImageError("Request has invalid image format")


# -- operations -----------------------------------------------------------------------------

async def create_collection(ctx: ApiContext, caller: Caller, p: CreateCollectionIn) -> Json:
    tags = validate_tags(p.Tags or {})  # refused before anything is created

    def create() -> str:
        info = ctx.fs.collections.create(p.CollectionId, caller=caller)
        if tags:
            ctx.fs.tags.tag(ResourceKind.COLLECTION, info.name, tags, caller=caller)
        return info.model_version

    version = await ctx.io(create)
    return {"StatusCode": 200, "CollectionArn": collection_arn(ctx, p.CollectionId),
            "FaceModelVersion": model_version(version)}


async def delete_collection(ctx: ApiContext, caller: Caller, p: CollectionIn) -> Json:
    await ctx.infer(lambda: ctx.fs.collections.delete(p.CollectionId, caller=caller))
    return {"StatusCode": 200}


async def list_collections(ctx: ApiContext, caller: Caller, p: ListCollectionsIn) -> Json:
    infos = {c.name: c for c in await ctx.io(ctx.fs.collections.list)}
    names, nxt = page_by_name(list(infos), p.NextToken, p.MaxResults or DEFAULT_PAGE,
                              "collections")
    out: Json = {"CollectionIds": names,
                 "FaceModelVersions": [model_version(infos[n].model_version) for n in names]}
    if nxt is not None:
        out["NextToken"] = nxt
    return out


async def describe_collection(ctx: ApiContext, caller: Caller, p: CollectionIn) -> Json:
    c = await ctx.io(lambda: ctx.fs.collections.describe(p.CollectionId))
    return {"FaceCount": c.face_count, "UserCount": c.user_count,
            "FaceModelVersion": model_version(c.model_version),
            "CollectionARN": collection_arn(ctx, c.name),
            "CreationTimestamp": c.created_at}


async def index_faces(ctx: ApiContext, caller: Caller, p: IndexFacesIn) -> Json:
    data = await image_bytes(ctx, p.Image)
    # Rekognition indexes the same image again when asked (new face ids): force=True.
    res = await ctx.infer(lambda: ctx.fs.collections.index_image(
        p.CollectionId, data, external_id=p.ExternalImageId, max_faces=p.MaxFaces,
        quality_filter=p.QualityFilter, force=True, caller=caller,
        all_faces=True))  # ExternalImageId labels the image, not one person (AWS semantics)
    ctx.metrics.faces_indexed.inc(len(res.indexed))
    why = {u.face_index: u.reasons for u in res.unindexed}
    kept = [i for i in range(len(res.faces)) if i not in why]
    return {
        "FaceRecords": [{"Face": shapes.rekognition_face(rec),
                         "FaceDetail": shapes.rekognition_detail(res.faces.view(i), res.width, res.height)}
                        for i, rec in zip(kept, res.indexed, strict=True)],
        "UnindexedFaces": [{"Reasons": r,
                            "FaceDetail": shapes.rekognition_detail(res.faces.view(i), res.width, res.height)}
                           for i, r in sorted(why.items())],
        "FaceModelVersion": model_version(ctx.fs.collections.model_version),
    }


async def list_faces(ctx: ApiContext, caller: Caller, p: ListFacesIn) -> Json:
    after = decode_row("faces", p.NextToken)
    faces, nxt = await ctx.io(lambda: ctx.fs.collections.list_faces(
        p.CollectionId, limit=p.MaxResults or DEFAULT_PAGE, after=after, user_id=p.UserId,
        face_ids=p.FaceIds, caller=caller))
    out: Json = {"Faces": [shapes.rekognition_face(f) for f in faces],
                 "FaceModelVersion": model_version(ctx.fs.collections.model_version)}
    if nxt is not None:
        out["NextToken"] = encode_token("faces", nxt)
    return out


async def delete_faces(ctx: ApiContext, caller: Caller, p: DeleteFacesIn) -> Json:
    d = await ctx.infer(lambda: ctx.fs.erasure.delete_faces(
        p.CollectionId, p.FaceIds, caller=caller))
    failed = {f: "FACE_NOT_FOUND" for f in d.not_found} | {
        f: "ASSOCIATED_TO_AN_EXISTING_USER" for f in d.associated}
    out: Json = {"UnsuccessfulFaceDeletions": [{"FaceId": f, "Reasons": [failed[f]]}
                                               for f in dict.fromkeys(p.FaceIds) if f in failed]}
    if d.deleted:  # the model's FaceIdList has at least one item: none deleted, no member
        out["DeletedFaces"] = d.deleted
    return out


async def search_faces(ctx: ApiContext, caller: Caller, p: SearchFacesIn) -> Json:
    matches = (await ctx.infer(lambda: ctx.fs.search.by_face_id(
        p.CollectionId, p.FaceId, max_results=p.MaxFaces or DEFAULT_MAX_FACES,
        threshold=p.FaceMatchThreshold, caller=caller))).matches
    return {"SearchedFaceId": p.FaceId,
            "FaceMatches": [{"Similarity": m.similarity, "Face": shapes.rekognition_face(m.face)}
                            for m in matches],
            "FaceModelVersion": model_version(ctx.fs.collections.model_version)}


async def search_faces_by_image(ctx: ApiContext, caller: Caller, p: SearchFacesByImageIn) -> Json:
    data = await image_bytes(ctx, p.Image)
    # The quality filter applies to the probe's largest face, before it is searched.
    res = await ctx.infer(lambda: ctx.fs.search.by_image(
        p.CollectionId, data, max_results=p.MaxFaces or DEFAULT_MAX_FACES,
        threshold=p.FaceMatchThreshold, quality_filter=p.QualityFilter, caller=caller))
    matches = res.matches
    return {"SearchedFaceBoundingBox": shapes.bounding_box(res.faces.boxes[0], res.width, res.height),
            "SearchedFaceConfidence": 100.0 * float(res.faces.scores[0]),
            "FaceMatches": [{"Similarity": m.similarity, "Face": shapes.rekognition_face(m.face)}
                            for m in matches],
            "FaceModelVersion": model_version(res.model_version)}


async def compare_faces(ctx: ApiContext, caller: Caller, p: CompareFacesIn) -> Json:
    source = await image_bytes(ctx, p.SourceImage)
    target = await image_bytes(ctx, p.TargetImage)
    c = await ctx.infer(lambda: ctx.fs.search.compare(
        source, target, threshold=p.SimilarityThreshold, quality_filter=p.QualityFilter,
        caller=caller))
    (sw, sh), (tw, th) = c.source_size, c.target_size
    passing = [i for i, why in enumerate(quality_reasons(c.target, p.QualityFilter)) if not why]
    ranked = sorted(passing, key=lambda i: -c.similarities[i])
    return {
        "SourceImageFace": {"BoundingBox": shapes.bounding_box(c.source.boxes[0], sw, sh),
                            "Confidence": 100.0 * float(c.source.scores[0])},
        "FaceMatches": [{"Similarity": c.similarities[i], "Face": shapes.rekognition_detail(c.target.view(i), tw, th)}
                        for i in ranked if c.similarities[i] >= c.threshold],
        "UnmatchedFaces": [shapes.rekognition_detail(c.target.view(i), tw, th)
                           for i in ranked if c.similarities[i] < c.threshold],
    }


async def detect_faces(ctx: ApiContext, caller: Caller, p: DetectFacesIn) -> Json:
    data = await image_bytes(ctx, p.Image)
    image, faces = await ctx.infer(lambda: ctx.fs.collections.detect_faces(data, caller=caller))
    return {"FaceDetails": [shapes.rekognition_detail(faces.view(i), image.width, image.height)
                            for i in range(len(faces))]}


async def create_user(ctx: ApiContext, caller: Caller, p: UserIn) -> Json:
    await ctx.io(lambda: ctx.fs.users.create(p.CollectionId, p.UserId, caller=caller))
    return {}


async def delete_user(ctx: ApiContext, caller: Caller, p: UserIn) -> Json:
    await ctx.io(lambda: ctx.fs.users.delete(p.CollectionId, p.UserId, caller=caller))
    return {}


async def list_users(ctx: ApiContext, caller: Caller, p: ListUsersIn) -> Json:
    after = decode_row("users", p.NextToken)
    users, nxt = await ctx.io(lambda: ctx.fs.users.list(
        p.CollectionId, limit=p.MaxResults or DEFAULT_USER_PAGE, after=after))
    out: Json = {"Users": [{"UserId": u.user_id, "UserStatus": u.status} for u in users]}
    if nxt is not None:
        out["NextToken"] = encode_token("users", nxt)
    return out


async def associate_faces(ctx: ApiContext, caller: Caller, p: UserFacesIn) -> Json:
    threshold = (DEFAULT_USER_MATCH_THRESHOLD if p.UserMatchThreshold is None
                 else p.UserMatchThreshold)
    a = await ctx.infer(lambda: ctx.fs.users.associate(
        p.CollectionId, p.UserId, p.FaceIds, user_match_threshold=threshold, caller=caller))
    return {"AssociatedFaces": [{"FaceId": f} for f in a.done],
            "UnsuccessfulFaceAssociations": [{"FaceId": f, "Reasons": r} for f, r in a.failed],
            "UserStatus": a.user.status}


DISASSOCIATE_REASONS = {"FACE_NOT_ASSOCIATED_TO_USER": "FACE_NOT_FOUND"}
"""Rekognition's DisassociateFaces has two reasons, FACE_NOT_FOUND and
ASSOCIATED_TO_A_DIFFERENT_USER: a face that belongs to no user is not found among the user's."""


async def disassociate_faces(ctx: ApiContext, caller: Caller, p: UserFacesIn) -> Json:
    a = await ctx.io(lambda: ctx.fs.users.disassociate(p.CollectionId, p.UserId, p.FaceIds,
                                                       caller=caller))
    return {"DisassociatedFaces": [{"FaceId": f} for f in a.done],
            "UnsuccessfulFaceDisassociations": [
                {"FaceId": f, "UserId": p.UserId,
                 "Reasons": [DISASSOCIATE_REASONS.get(x, x) for x in r]} for f, r in a.failed],
            "UserStatus": a.user.status}


def _user_matches(matches: list[UserMatch]) -> list[Json]:
    return [{"Similarity": m.similarity, "User": {"UserId": m.user_id, "UserStatus": "ACTIVE"}}
            for m in matches]


async def search_users(ctx: ApiContext, caller: Caller, p: SearchUsersIn) -> Json:
    res = await ctx.infer(lambda: ctx.fs.users.search(
        p.CollectionId, user_id=p.UserId, face_id=p.FaceId,
        max_users=p.MaxUsers or DEFAULT_MAX_USERS, threshold=p.UserMatchThreshold,
        caller=caller))
    out: Json = {"UserMatches": _user_matches(res.matches),
                 "FaceModelVersion": model_version(ctx.fs.collections.model_version)}
    if p.FaceId is not None:
        out["SearchedFace"] = {"FaceId": p.FaceId}
    if p.UserId is not None:
        out["SearchedUser"] = {"UserId": p.UserId}
    return out


async def search_users_by_image(ctx: ApiContext, caller: Caller, p: SearchUsersByImageIn) -> Json:
    data = await image_bytes(ctx, p.Image)
    version = model_version(ctx.fs.collections.model_version)

    def run() -> tuple[Image, UserSearchResult]:
        image = load_image(data, ctx.fs.collections.limits)
        return image, ctx.fs.users.search_by_image(
            p.CollectionId, image, max_users=p.MaxUsers or DEFAULT_MAX_USERS,
            threshold=p.UserMatchThreshold, quality_filter=p.QualityFilter, caller=caller)

    try:
        image, res = await ctx.infer(run)
    except NoFaceError:  # Rekognition: no valid face is an empty answer, not an error
        return {"UserMatches": [], "FaceModelVersion": version, "UnsearchedFaces": []}
    detail = shapes.rekognition_detail(res.faces.view(0), image.width, image.height)
    # The probe's other faces are not searched (only its largest is), as Rekognition says.
    others = [{"FaceDetails": shapes.rekognition_detail(res.unsearched.view(i), image.width,
                                                           image.height),
               "Reasons": ["FACE_NOT_LARGEST"]} for i in range(len(res.unsearched))]
    if res.quality_reasons:
        return {"UserMatches": [], "FaceModelVersion": version,
                "UnsearchedFaces": [{"FaceDetails": detail, "Reasons": res.quality_reasons},
                                    *others]}
    return {"UserMatches": _user_matches(res.matches), "FaceModelVersion": version,
            "SearchedFace": {"FaceDetail": detail}, "UnsearchedFaces": others}


# -- stored video (StartFaceSearch, GetFaceSearch, StartFaceDetection, GetFaceDetection) -----

JobIdField = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")


class VideoIn(In):
    S3Object: S3ObjectIn | None = None


class NotificationChannelIn(In):
    """Where the completion message goes: an SNS topic of the server's SNS endpoint (refused
    when there is none). ``RoleArn`` is checked for form, not assumed."""

    SNSTopicArn: str = Field(min_length=1, max_length=1024)
    RoleArn: str = Field(pattern=ROLE_ARN.pattern)


class _StartVideoIn(In):
    Video: VideoIn
    ClientRequestToken: str | None = Field(None, min_length=1, max_length=64,
                                           pattern=r"^[a-zA-Z0-9_-]+$")
    NotificationChannel: NotificationChannelIn | None = None
    JobTag: str | None = Field(None, min_length=1, max_length=1024,
                               pattern=r"^[a-zA-Z0-9_.\-:+=/]+$")


class StartFaceSearchIn(_StartVideoIn):
    CollectionId: str = CollectionId
    FaceMatchThreshold: float | None = Field(None, ge=0, le=100)


class StartFaceDetectionIn(_StartVideoIn):
    FaceAttributes: Literal["DEFAULT", "ALL"] = "DEFAULT"


class GetFaceDetectionIn(In):
    JobId: str = JobIdField
    MaxResults: int | None = Field(None, ge=1)
    NextToken: str | None = Field(None, max_length=255)


class GetFaceSearchIn(GetFaceDetectionIn):
    SortBy: Literal["INDEX", "TIMESTAMP"] = "TIMESTAMP"


def _topic(p: _StartVideoIn) -> str | None:
    return p.NotificationChannel.SNSTopicArn if p.NotificationChannel is not None else None


async def _start_video(ctx: ApiContext, p: _StartVideoIn, submit: Submit) -> Json:
    s3 = p.Video.S3Object
    if s3 is None:
        raise InvalidParameterError("Video needs an S3Object")
    ctx.fs.video.check_sns(_topic(p))  # refused before the video is copied
    job_id = await ctx.io(lambda: submit_s3(ctx, s3.Bucket, s3.Name, s3.Version, submit))
    return {"JobId": job_id}


def _video_match(m: VideoMatch) -> Json:
    face: Json = {"FaceId": m.face_id}
    if m.image_id:
        face["ImageId"] = m.image_id
    if m.external_id:
        face["ExternalImageId"] = m.external_id
    if m.user_id:
        face["UserId"] = m.user_id
    return {"Similarity": m.similarity, "Face": face}


def _video_job(job: VideoJob) -> tuple[Json, int, int]:
    """The job's common answer fields, and its frame size."""
    status = JobStatus.FAILED if job.status is JobStatus.CANCELLED else job.status
    out: Json = {"JobId": job.job_id, "JobStatus": status.value}
    message = job.status_message
    if job.status is JobStatus.CANCELLED:
        message = f"CANCELLED: {message or 'the job was cancelled'}"
    if message and job.status is not JobStatus.SUCCEEDED:
        out["StatusMessage"] = public_message(message)
    if job.job_tag:
        out["JobTag"] = job.job_tag
    s3 = parse_s3_label(job.source)
    if s3 is not None:
        obj: Json = {"Bucket": s3[0], "Name": s3[1]}
        if s3[2]:
            obj["Version"] = s3[2]
        out["Video"] = {"S3Object": obj}
    v = job.video
    if v is None:
        return out, 1, 1
    meta: Json = {"Codec": v.codec, "Format": v.format, "FrameRate": v.fps,
                  "FrameWidth": v.width, "FrameHeight": v.height}
    if v.duration_ms is not None:
        meta["DurationMillis"] = v.duration_ms
    out["VideoMetadata"] = meta
    return out, max(v.width, 1), max(v.height, 1)


def job_token(caller: Caller, kind: JobKind, token: str | None) -> str | None:
    """The video service's token for a request's ``ClientRequestToken``: one per key and
    operation (another key's same token is another job; the API's own record,
    :mod:`facesearch.api.replay`, answers a repeat with the first JobId and refuses other
    parameters)."""
    if token is None:
        return None
    return hashlib.sha256(f"{caller.actor}:{kind.value}:{token}".encode()).hexdigest()


async def start_face_search(ctx: ApiContext, caller: Caller, p: StartFaceSearchIn) -> Json:
    settings = VideoJobSettings(threshold=p.FaceMatchThreshold)
    return await _start_video(ctx, p, lambda video, source: ctx.fs.video.start_face_search(
        p.CollectionId, video, settings=settings, job_tag=p.JobTag,
        client_request_token=job_token(caller, JobKind.FACE_SEARCH, p.ClientRequestToken),
        source_name=source, caller=caller, sns_topic_arn=_topic(p), unreadable_fails_job=True))


async def start_face_detection(ctx: ApiContext, caller: Caller, p: StartFaceDetectionIn) -> Json:
    return await _start_video(ctx, p, lambda video, source: ctx.fs.video.start_face_detection(
        video, job_tag=p.JobTag,
        client_request_token=job_token(caller, JobKind.FACE_DETECTION, p.ClientRequestToken),
        source_name=source, caller=caller, sns_topic_arn=_topic(p), unreadable_fails_job=True))


async def get_face_search(ctx: ApiContext, caller: Caller, p: GetFaceSearchIn) -> Json:
    kind = results_kind(p.JobId, f"persons-{p.SortBy}-0")
    page = await ctx.io(lambda: ctx.fs.video.face_search_results(
        p.JobId, max_results=page_size(p.MaxResults), next_token=offset_token(kind, p.NextToken),
        sort_by=p.SortBy, caller=caller))
    out, w, h = _video_job(page.job)
    out["Persons"] = [{"Timestamp": e.timestamp_ms,
                       "Person": {"Index": e.person_index,
                                  "BoundingBox": shapes.bounding_box(e.face.box, w, h),
                                  "Face": shapes.rekognition_detail(e.face.view(), w, h)},
                       "FaceMatches": [_video_match(m) for m in e.matches]}
                      for e in page.persons]
    if page.next_token is not None:
        out["NextToken"] = wrap_offset(kind, page.next_token)
    return out


async def get_face_detection(ctx: ApiContext, caller: Caller, p: GetFaceDetectionIn) -> Json:
    kind = results_kind(p.JobId, "faces")
    page = await ctx.io(lambda: ctx.fs.video.face_detection_results(
        p.JobId, max_results=page_size(p.MaxResults), next_token=offset_token(kind, p.NextToken),
        caller=caller))
    if page.job.kind is not JobKind.FACE_DETECTION:
        raise InvalidParameterError(f"job {p.JobId} is a face search job; call GetFaceSearch")
    out, w, h = _video_job(page.job)
    out["Faces"] = [{"Timestamp": f.timestamp_ms, "Face": shapes.rekognition_detail(f.face.view(), w, h)}
                    for f in page.faces]
    if page.next_token is not None:
        out["NextToken"] = wrap_offset(kind, page.next_token)
    return out


Handler = Callable[[ApiContext, Caller, Any], Awaitable[Json]]
HANDLERS: dict[Operation, tuple[type[In], Handler]] = {
    Operation.CREATE_COLLECTION: (CreateCollectionIn, create_collection),
    Operation.DELETE_COLLECTION: (CollectionIn, delete_collection),
    Operation.LIST_COLLECTIONS: (ListCollectionsIn, list_collections),
    Operation.DESCRIBE_COLLECTION: (CollectionIn, describe_collection),
    Operation.INDEX_FACES: (IndexFacesIn, index_faces),
    Operation.LIST_FACES: (ListFacesIn, list_faces),
    Operation.DELETE_FACES: (DeleteFacesIn, delete_faces),
    Operation.SEARCH_FACES: (SearchFacesIn, search_faces),
    Operation.SEARCH_FACES_BY_IMAGE: (SearchFacesByImageIn, search_faces_by_image),
    Operation.COMPARE_FACES: (CompareFacesIn, compare_faces),
    Operation.DETECT_FACES: (DetectFacesIn, detect_faces),
    Operation.CREATE_USER: (UserIn, create_user),
    Operation.DELETE_USER: (UserIn, delete_user),
    Operation.LIST_USERS: (ListUsersIn, list_users),
    Operation.ASSOCIATE_FACES: (UserFacesIn, associate_faces),
    Operation.DISASSOCIATE_FACES: (UserFacesIn, disassociate_faces),
    Operation.SEARCH_USERS: (SearchUsersIn, search_users),
    Operation.SEARCH_USERS_BY_IMAGE: (SearchUsersByImageIn, search_users_by_image),
    Operation.START_FACE_SEARCH: (StartFaceSearchIn, start_face_search),
    Operation.GET_FACE_SEARCH: (GetFaceSearchIn, get_face_search),
    Operation.START_FACE_DETECTION: (StartFaceDetectionIn, start_face_detection),
    Operation.GET_FACE_DETECTION: (GetFaceDetectionIn, get_face_detection),
    **STREAM_HANDLERS,
}


def _operation(target: str) -> Operation:
    prefix, _, name = target.partition(".")
    try:
        op = Operation(name)
    except ValueError:
        op = None
    if prefix != TARGET_PREFIX or op not in HANDLERS:
        raise UnknownOperationError(f"unknown operation {target!r}")
    assert op is not None
    return op


TYPE_ERRORS = ("_type", "_parsing", "int_from_float")
"""Pydantic error types of a member with the wrong JSON type (AWS: SerializationException);
the others break a constraint (length, range, pattern, enum)."""

TAGS_ON_CREATE = frozenset({Operation.CREATE_COLLECTION, Operation.CREATE_STREAM_PROCESSOR})
"""Operations whose ``Tags`` need TagResource's right too (tags are set by admins)."""


def parse_params(model: type[In], raw: bytes) -> In:
    """The operation's request shape, read from the JSON body strictly (a number sent as a
    string is refused, as AWS's JSON protocol does): SerializationException for a member of
    the wrong type, InvalidParameterException for one outside its constraints."""
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        errors = exc.errors()
        text = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
                         for e in errors[:5])
        if any(e["type"].endswith(TYPE_ERRORS) for e in errors):
            raise SerializationError(text) from None
        raise InvalidParameterError(text) from None


def _claim(ctx: ApiContext, request: Request, op: Operation, key_id: str,
           data: dict[str, Any]) -> Claim | None:
    """What makes this request run once: its ClientRequestToken, else (for operations whose
    repeat gets the first answer) its signature; None: it runs every time."""
    token = data.get("ClientRequestToken")
    if isinstance(token, str) and token:
        return token_claim(key_id, op, token, data)
    signature = sigv4_signature(request.headers.get("authorization"))
    if signature and repeat_rule(op, rekognition=True) is Repeat.FIRST_ANSWER:
        return signature_claim(signature, ctx.settings.clock_skew_s)
    return None


@router.post("/", include_in_schema=False)
async def dispatch(request: Request) -> Response:
    """One Rekognition call: authenticate, authorise, parse, run (once, for a repeated
    signature or ClientRequestToken: :mod:`facesearch.api.replay`), answer."""
    ctx = context(request)
    state = request.scope.setdefault("state", {})
    state["api"] = "rekognition"
    op = _operation(request.headers.get("x-amz-target", ""))
    caller = await ctx.caller(request, op, service="rekognition", allow_bearer=False)
    model, handler = HANDLERS[op]
    raw = await request.body() or b"{}"
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise SerializationError("the request body must be a JSON object")
    params = parse_params(model, raw)
    if op in TAGS_ON_CREATE and data.get("Tags"):
        authorize(state["key"], Operation.TAG_RESOURCE)
    request_id = state.get("request_id", "")

    async def run() -> Response:
        try:
            out = await handler(ctx, caller, params)
        except ThrottledError:
            raise  # refused before anything was done: not an answer to keep
        except FaceSearchError as exc:
            return rekognition_error(exc, op.value, request_id)
        return Response(json.dumps(out), media_type=AMZ_JSON)

    claim = _claim(ctx, request, op, caller.actor, data)
    if claim is None or ctx.answers is None:
        response = await run()
    else:
        response = await ctx.answers.once(claim, ctx.io, run)
    response.headers["x-amzn-RequestId"] = request_id
    return response
