"""The Rekognition endpoint's image operations: collections (CreateCollection, ...), faces
(IndexFaces, ListFaces, DeleteFaces), searches (SearchFaces, SearchFacesByImage), CompareFaces,
DetectFaces, and users (CreateUser, ListUsers, AssociateFaces, SearchUsers, ...).

Each parses Rekognition's request shape, calls the same service method as the CLI, and answers
Rekognition's response shape (:mod:`facesearch.shapes.rekognition`); the protocol (targets,
authentication, replays) is :mod:`facesearch.api.rekognition`'s.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import Field

from facesearch.api.auth import Operation
from facesearch.api.context import ApiContext
from facesearch.api.paging import decode_row, encode_token, page_by_name
from facesearch.api.rekognition_streams import In, Json, TagMap, arn
from facesearch.api.rekognition_video import S3ObjectIn
from facesearch.errors import (
    ImageTooLargeError,
    InvalidImageError,
    InvalidParameterError,
    NoFaceError,
)
from facesearch.governance.tags import ResourceKind, validate_tags
from facesearch.limits import MAX_INLINE_IMAGE_BYTES, MAX_RESULTS, megabytes
from facesearch.services.users import UserMatch, UserSearchResult
from facesearch.shapes import rekognition as shapes
from facesearch.types import Caller, Image, QualityFilter
from facesearch.vision.decode import load_image
from facesearch.vision.quality import reasons as quality_reasons

DEFAULT_MAX_FACES = 10
DEFAULT_MAX_USERS = 10
DEFAULT_PAGE = 1000
DEFAULT_USER_PAGE = 50

Attribute = Literal["DEFAULT", "ALL", "AGE_RANGE", "BEARD", "EMOTIONS", "EYE_DIRECTION",
                    "EYEGLASSES", "EYES_OPEN", "GENDER", "MOUTH_OPEN", "MUSTACHE",
                    "FACE_OCCLUDED", "SMILE", "SUNGLASSES"]
"""Rekognition's face attribute names (facesearch computes DEFAULT's: box, landmarks, pose,
quality, confidence; an unknown name is refused)."""


# -- request shapes -------------------------------------------------------------------------

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
    infos = {c.name: c for c in await ctx.io(ctx.fs.collections.list_collections)}
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
    users, nxt = await ctx.io(lambda: ctx.fs.users.list_users(
        p.CollectionId, limit=p.MaxResults or DEFAULT_USER_PAGE, after=after))
    out: Json = {"Users": [{"UserId": u.user_id, "UserStatus": u.status} for u in users]}
    if nxt is not None:
        out["NextToken"] = encode_token("users", nxt)
    return out


async def associate_faces(ctx: ApiContext, caller: Caller, p: UserFacesIn) -> Json:
    a = await ctx.infer(lambda: ctx.fs.users.associate(
        p.CollectionId, p.UserId, p.FaceIds, user_match_threshold=p.UserMatchThreshold,
        caller=caller))
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


Handler = Callable[[ApiContext, Caller, Any], Awaitable[Json]]
FACE_HANDLERS: dict[Operation, tuple[type[In], Handler]] = {
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
}
"""The operations of this module, joined into :data:`facesearch.api.rekognition.HANDLERS`."""
