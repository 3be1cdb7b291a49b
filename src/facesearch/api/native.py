"""The native REST API (``/v1``): one route per library verb, snake_case JSON.

Boxes are ``[x1, y1, x2, y2]`` in pixels of the upright image, landmarks five ``[x, y]``
points (eye_left, eye_right, nose, mouth_left, mouth_right, left and right as seen in the
image), scores 0-1, similarities and thresholds on facesearch's 0-100 scale. Images are sent
either as ``multipart/form-data`` (a file part named ``image``, or ``source`` and ``target``)
or as JSON with the image base64-encoded in the same field. Lists page with ``max_results``
and an opaque ``next_token``. Errors are ``{"code": ..., "message": ...}``
(:mod:`facesearch.api.errors`).

Every route's name is its :class:`~facesearch.api.auth.Operation`; the router's one dependency
authenticates the request and authorises that operation (routes never check roles).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from ..collections import CollectionInfo, FaceRecord, Match
from ..keys import KeyInfo, Role
from ..types import Caller, Faces, QualityFilter
from ..users import DEFAULT_USER_MATCH_THRESHOLD, Association, UserInfo, UserSearchResult
from .auth import Operation
from .context import context
from .errors import InvalidParameterError, SerializationError
from .paging import decode_row, encode_token, page_by_name

M = TypeVar("M", bound=BaseModel)
QualityName = Literal["NONE", "AUTO", "LOW", "MEDIUM", "HIGH"]


async def native_caller(request: Request) -> Caller:
    """Authenticate the request and authorise the route's operation (the route's name)."""
    route = request.scope.get("route")
    request.scope.setdefault("state", {})["api"] = "native"
    op = Operation(getattr(route, "name", ""))
    return await context(request).caller(request, op, service="facesearch", allow_bearer=True)


CallerDep = Annotated[Caller, Depends(native_caller)]


# -- shapes ---------------------------------------------------------------------------------

class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(_Out):
    code: str = Field(description="stable machine-readable code, e.g. collection_not_found")
    message: str


router = APIRouter(prefix="/v1", dependencies=[Depends(native_caller)],
                   responses={s: {"model": ErrorOut} for s in (400, 401, 403, 404, 409, 413,
                                                                422, 429, 503)})


class CollectionOut(_Out):
    name: str
    model_version: str
    created_at: float = Field(description="seconds since the epoch")
    faces: int
    users: int
    images: int


class CollectionsOut(_Out):
    collections: list[CollectionOut]
    next_token: str | None = None


class QualityOut(_Out):
    size: float = Field(description="inter-ocular distance, pixels")
    sharpness: float = Field(description="0-100")
    brightness: float = Field(description="0-100")
    yaw: float = Field(description="degrees")
    pitch: float = Field(description="degrees")
    roll: float = Field(description="degrees")


class DetectedFaceOut(_Out):
    box: list[float] = Field(description="[x1, y1, x2, y2] pixels")
    score: float = Field(description="detector confidence, 0-1")
    landmarks: list[list[float]] = Field(description="5 [x, y] points, pixels")
    quality: QualityOut | None = None


class FaceOut(_Out):
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


class IndexedFaceOut(_Out):
    face: FaceOut
    detail: DetectedFaceOut


class UnindexedFaceOut(_Out):
    detail: DetectedFaceOut
    reasons: list[str]


class IndexOut(_Out):
    image_id: str | None
    duplicate: bool = Field(description="the same content was already indexed (not `force`)")
    width: int
    height: int
    indexed: list[IndexedFaceOut]
    unindexed: list[UnindexedFaceOut]


class FacesPage(_Out):
    faces: list[FaceOut]
    next_token: str | None = None


class FaceIdsIn(BaseModel):
    face_ids: list[str] = Field(min_length=1, max_length=4096)


class DeleteFacesOut(_Out):
    deleted: list[str]
    not_found: list[str]


class MatchOut(_Out):
    face: FaceOut
    similarity: float


class ProbeOut(_Out):
    face: DetectedFaceOut
    matches: list[MatchOut]


class SearchOut(_Out):
    search_id: str
    label: str
    threshold: float
    false_match_rate: float | None = Field(
        None, description="1:1 false-match rate at the threshold (calibrated; None: no "
                          "calibration for this model)")
    expected_fpir: float | None = Field(
        None, description="expected false-positive identification rate at the threshold for "
                          "the collection's current size")
    model_version: str
    collection_size: int
    width: int
    height: int
    probes: list[ProbeOut]


class FaceSearchIn(BaseModel):
    max_results: int = Field(10, ge=1, le=4096)
    threshold: float | None = Field(None, ge=0, le=100, description="default: 80 or the "
                                                                     "collection's floor")


class FaceSearchOut(_Out):
    face_id: str
    matches: list[MatchOut]


class ComparedFaceOut(_Out):
    face: DetectedFaceOut
    similarity: float


class CompareOut(_Out):
    similarity: float
    match: bool
    threshold: float
    source: DetectedFaceOut
    target_faces: list[ComparedFaceOut]


class DetectOut(_Out):
    width: int
    height: int
    faces: list[DetectedFaceOut]


class UserIn(BaseModel):
    user_id: str


class UserOut(_Out):
    user_id: str
    status: str
    faces: int
    created_at: float


class UsersPage(_Out):
    users: list[UserOut]
    next_token: str | None = None


class AssociateIn(FaceIdsIn):
    user_match_threshold: float = Field(DEFAULT_USER_MATCH_THRESHOLD, ge=0, le=100)


class FailedFaceOut(_Out):
    face_id: str
    reasons: list[str]


class AssociationOut(_Out):
    done: list[str]
    failed: list[FailedFaceOut]
    user: UserOut


class UserSearchIn(BaseModel):
    user_id: str | None = None
    face_id: str | None = None
    max_users: int = Field(10, ge=1, le=500)
    threshold: float | None = Field(None, ge=0, le=100)


class UserMatchOut(_Out):
    user_id: str
    similarity: float
    face_id: str


class UserSearchOut(_Out):
    search_id: str | None
    threshold: float
    face: DetectedFaceOut | None = None
    matches: list[UserMatchOut]


class KeyIn(BaseModel):
    role: Role
    label: str | None = Field(None, min_length=1, max_length=200)
    purpose: str | None = Field(None, min_length=1, max_length=500,
                                description="issue the key for one case: its purpose")
    case_ref: str | None = Field(None, min_length=1, max_length=500,
                                 description="issue the key for one case: its reference")
    expires_in_s: float | None = Field(None, gt=0, description="the key expires after this "
                                                               "many seconds")


class KeyOut(_Out):
    key_id: str
    role: Role
    label: str | None
    created_at: float
    revoked_at: float | None
    active: bool
    purpose: str | None = None
    case_ref: str | None = None
    expires_at: float | None = None


class KeyCreatedOut(KeyOut):
    secret: str = Field(description="shown once; keep it safe")


class WhoAmIOut(_Out):
    key_id: str
    role: str | None


# image-bearing requests: multipart/form-data or JSON with base64 images

class IndexIn(BaseModel):
    image: bytes
    external_id: str | None = None
    max_faces: int | None = Field(None, ge=1, le=4096)
    quality_filter: QualityName = "AUTO"
    force: bool = Field(False, description="index content already in the collection again")


class SearchImageIn(BaseModel):
    image: bytes
    max_results: int = Field(10, ge=1, le=4096)
    threshold: float | None = Field(None, ge=0, le=100)
    all_faces: bool = Field(False, description="search every face, not only the largest")


class CompareIn(BaseModel):
    source: bytes
    target: bytes
    threshold: float | None = Field(None, ge=0, le=100)


class DetectIn(BaseModel):
    image: bytes


class UserSearchImageIn(BaseModel):
    image: bytes
    max_users: int = Field(10, ge=1, le=500)
    threshold: float | None = Field(None, ge=0, le=100)


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body: the same fields as JSON (base64 images) or multipart (files)."""
    files = [n for n, f in model.model_fields.items() if f.annotation is bytes]

    def schema(fmt: str) -> dict[str, Any]:
        s = model.model_json_schema()
        for n in files:
            s["properties"][n] = {"type": "string", "format": fmt}
        return s

    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": schema("binary")},
        "application/json": {"schema": schema("byte")}}}}


def parse_json(raw: bytes) -> object:
    """``raw`` as JSON; SerializationError if it is not JSON or nests too deep to parse."""
    try:
        return json.loads(raw)
    except ValueError:
        raise SerializationError("the request body is not JSON") from None
    except RecursionError:
        raise SerializationError("the request body's JSON nests too deeply") from None


async def json_object(request: Request) -> dict[str, object]:
    """The request body as a JSON object (SerializationError otherwise)."""
    body = parse_json(await request.body())
    if not isinstance(body, dict):
        raise SerializationError("the request body must be a JSON object")
    return body


def validated(model: type[M], data: dict[str, object]) -> M:
    """``data`` as ``model``; pydantic's complaints as one InvalidParameterError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidParameterError("; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )) from None


async def parse_images(request: Request, model: type[M]) -> M:
    """The request's fields as ``model``, from multipart/form-data or JSON (base64 images)."""
    files = [n for n, f in model.model_fields.items() if f.annotation is bytes]
    ctype = request.headers.get("content-type", "")
    data: dict[str, object] = {}
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=len(files), max_fields=32)
        for k, v in form.multi_items():
            data[k] = await v.read() if isinstance(v, UploadFile) else v
    elif ctype.startswith("application/json"):
        data = await json_object(request)
        for n in files:
            if isinstance(data.get(n), str):
                try:
                    data[n] = base64.b64decode(str(data[n]), validate=True)
                except (binascii.Error, ValueError):
                    raise InvalidParameterError(f"{n}: not valid base64") from None
    else:
        raise SerializationError("send multipart/form-data or application/json")
    for n in files:
        if not data.get(n):
            raise InvalidParameterError(f"{n}: an image is required")
    return validated(model, data)


# -- conversions ----------------------------------------------------------------------------

def _r(v: float, nd: int = 2) -> float:
    return round(float(v), nd)


def detected(faces: Faces, i: int) -> DetectedFaceOut:
    q = faces.quality
    return DetectedFaceOut(
        box=[_r(v, 1) for v in faces.boxes[i]], score=_r(faces.scores[i], 4),
        landmarks=[[_r(x, 1), _r(y, 1)] for x, y in faces.landmarks[i]],
        quality=None if q is None else QualityOut(
            size=_r(q.size[i], 1), sharpness=_r(q.sharpness[i], 1),
            brightness=_r(q.brightness[i], 1), yaw=_r(q.yaw[i], 1), pitch=_r(q.pitch[i], 1),
            roll=_r(q.roll[i], 1)))


def face_out(f: FaceRecord) -> FaceOut:
    return FaceOut(face_id=f.face_id, external_id=f.external_id, image_id=f.image_id,
                   user_id=f.user_id, box=[_r(v, 1) for v in f.box], score=_r(f.score, 4),
                   image_width=f.image_width, image_height=f.image_height,
                   created_at=f.created_at, model_version=f.model_version)


def match_out(m: Match) -> MatchOut:
    return MatchOut(face=face_out(m.face), similarity=_r(m.similarity, 3))


def collection_out(c: CollectionInfo) -> CollectionOut:
    return CollectionOut(name=c.name, model_version=c.model_version, created_at=c.created_at,
                         faces=c.face_count, users=c.user_count, images=c.image_count)


def user_out(u: UserInfo) -> UserOut:
    return UserOut(user_id=u.user_id, status=u.status, faces=u.face_count,
                   created_at=u.created_at)


def association_out(a: Association) -> AssociationOut:
    return AssociationOut(done=a.done, user=user_out(a.user),
                          failed=[FailedFaceOut(face_id=f, reasons=r) for f, r in a.failed])


def user_search_out(r: UserSearchResult) -> UserSearchOut:
    return UserSearchOut(
        search_id=r.search_id, threshold=r.threshold,
        face=detected(r.faces, 0) if len(r.faces) else None,
        matches=[UserMatchOut(user_id=m.user_id, similarity=_r(m.similarity, 3),
                              face_id=m.face_id) for m in r.matches])


def key_out(k: KeyInfo) -> KeyOut:
    return KeyOut(key_id=k.key_id, role=k.role, label=k.label, created_at=k.created_at,
                  revoked_at=k.revoked_at, active=k.active, purpose=k.purpose,
                  case_ref=k.case_ref, expires_at=k.expires_at)


# -- collections ----------------------------------------------------------------------------

class CollectionIn(BaseModel):
    name: str = Field(min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9_.\-]+$")


@router.post("/collections", name=Operation.CREATE_COLLECTION.value, status_code=201)
async def create_collection(request: Request, body: CollectionIn,
                            caller: CallerDep) -> CollectionOut:
    """Create an empty collection."""
    ctx = context(request)
    return collection_out(await ctx.io(lambda: ctx.fs.collections.create(body.name,
                                                                         caller=caller)))


@router.get("/collections", name=Operation.LIST_COLLECTIONS.value)
async def list_collections(request: Request,
                           max_results: Annotated[int, Query(ge=1, le=4096)] = 1000,
                           next_token: str | None = None) -> CollectionsOut:
    """List collections in name order, a page at a time."""
    ctx = context(request)
    infos = {c.name: c for c in await ctx.io(ctx.fs.collections.list)}
    names, nxt = page_by_name(list(infos), next_token, max_results, "collections")
    return CollectionsOut(collections=[collection_out(infos[n]) for n in names], next_token=nxt)


@router.get("/collections/{collection}", name=Operation.DESCRIBE_COLLECTION.value)
async def describe_collection(request: Request, collection: str) -> CollectionOut:
    """A collection's size and model."""
    ctx = context(request)
    return collection_out(await ctx.io(lambda: ctx.fs.collections.describe(collection)))


@router.delete("/collections/{collection}", name=Operation.DELETE_COLLECTION.value,
               status_code=204, response_class=Response)
async def delete_collection(request: Request, collection: str, caller: CallerDep) -> Response:
    """Delete a collection and erase every face in it."""
    ctx = context(request)
    await ctx.infer(lambda: ctx.fs.collections.delete(collection, caller=caller))
    return Response(status_code=204)


# -- faces ----------------------------------------------------------------------------------

@router.post("/collections/{collection}/faces", name=Operation.INDEX_FACES.value,
             openapi_extra=_body_doc(IndexIn))
async def index_faces(request: Request, collection: str, caller: CallerDep) -> IndexOut:
    """Detect the faces of an image and store those that pass the quality filter."""
    ctx = context(request)
    p = await parse_images(request, IndexIn)
    res = await ctx.infer(lambda: ctx.fs.collections.index_image(
        collection, p.image, external_id=p.external_id, max_faces=p.max_faces,
        quality_filter=QualityFilter(p.quality_filter), force=p.force, caller=caller))
    ctx.metrics.faces_indexed.inc(len(res.indexed))
    if res.duplicate:
        # Nothing was stored (the same content is already there: found before or, when an
        # identical request won the race, while storing): no faces to report either way.
        return IndexOut(image_id=res.image_id, duplicate=True, width=res.width,
                        height=res.height, indexed=[], unindexed=[])
    why = {u.face_index: u.reasons for u in res.unindexed}
    kept = [i for i in range(len(res.faces)) if i not in why]
    return IndexOut(
        image_id=res.image_id, duplicate=res.duplicate, width=res.width, height=res.height,
        indexed=[IndexedFaceOut(face=face_out(rec), detail=detected(res.faces, i))
                 for i, rec in zip(kept, res.indexed, strict=True)],
        unindexed=[UnindexedFaceOut(detail=detected(res.faces, i), reasons=r)
                   for i, r in sorted(why.items())])


@router.get("/collections/{collection}/faces", name=Operation.LIST_FACES.value)
async def list_faces(request: Request, collection: str, caller: CallerDep,
                     max_results: Annotated[int, Query(ge=1, le=4096)] = 100,
                     next_token: str | None = None, user_id: str | None = None) -> FacesPage:
    """Faces of a collection in insertion order, a page at a time."""
    ctx = context(request)
    after = decode_row("faces", next_token)
    faces, nxt = await ctx.io(lambda: ctx.fs.collections.list_faces(
        collection, limit=max_results, after=after, user_id=user_id, caller=caller))
    return FacesPage(faces=[face_out(f) for f in faces],
                     next_token=None if nxt is None else encode_token("faces", nxt))


@router.post("/collections/{collection}/faces/delete", name=Operation.DELETE_FACES.value)
async def delete_faces(request: Request, collection: str, body: FaceIdsIn,
                       caller: CallerDep) -> DeleteFacesOut:
    """Erase faces by id."""
    ctx = context(request)
    deleted, missing = await ctx.infer(lambda: ctx.fs.collections.delete_faces(
        collection, body.face_ids, caller=caller))
    return DeleteFacesOut(deleted=deleted, not_found=missing)


@router.post("/collections/{collection}/faces/{face_id}/search",
             name=Operation.SEARCH_FACES.value)
async def search_faces(request: Request, collection: str, face_id: str, caller: CallerDep,
                       body: FaceSearchIn | None = None) -> FaceSearchOut:
    """Candidates for a stored face (the face itself excluded), best first."""
    ctx = context(request)
    p = body or FaceSearchIn.model_validate({})
    matches = await ctx.infer(lambda: ctx.fs.collections.search_by_face_id(
        collection, face_id, max_results=p.max_results, threshold=p.threshold, caller=caller))
    return FaceSearchOut(face_id=face_id, matches=[match_out(m) for m in matches])


@router.post("/collections/{collection}/search", name=Operation.SEARCH_FACES_BY_IMAGE.value,
             openapi_extra=_body_doc(SearchImageIn))
async def search_faces_by_image(request: Request, collection: str,
                                caller: CallerDep) -> SearchOut:
    """Candidates for the probe's largest face (or every face): leads for human review,
    never identifications."""
    ctx = context(request)
    p = await parse_images(request, SearchImageIn)
    res = await ctx.infer(lambda: ctx.fs.collections.search_by_image(
        collection, p.image, max_results=p.max_results, threshold=p.threshold,
        all_faces=p.all_faces, caller=caller))
    cal = ctx.fs.calibration()
    risk = None if cal is None else cal.risk(res.threshold, max(res.collection_size, 1))
    return SearchOut(
        search_id=res.search_id, label=res.label, threshold=res.threshold,
        false_match_rate=None if risk is None else risk.false_match_rate,
        expected_fpir=None if risk is None else risk.expected_fpir,
        model_version=res.model_version, collection_size=res.collection_size,
        width=res.width, height=res.height,
        probes=[ProbeOut(face=detected(res.faces, pr.face_index),
                         matches=[match_out(m) for m in pr.matches]) for pr in res.results])


# -- compare and detect ---------------------------------------------------------------------

@router.post("/compare", name=Operation.COMPARE_FACES.value, openapi_extra=_body_doc(CompareIn))
async def compare_faces(request: Request, caller: CallerDep) -> CompareOut:
    """The source's largest face against every face of the target (1:1)."""
    ctx = context(request)
    p = await parse_images(request, CompareIn)
    c = await ctx.infer(lambda: ctx.fs.collections.compare(
        p.source, p.target, threshold=p.threshold, caller=caller))
    return CompareOut(similarity=_r(c.similarity, 3), match=c.match, threshold=c.threshold,
                      source=detected(c.source, 0),
                      target_faces=[ComparedFaceOut(face=detected(c.target, i),
                                                    similarity=_r(s, 3))
                                    for i, s in enumerate(c.similarities)])


@router.post("/detect", name=Operation.DETECT_FACES.value, openapi_extra=_body_doc(DetectIn))
async def detect_faces(request: Request, caller: CallerDep) -> DetectOut:
    """Faces of an image with their landmarks and quality (nothing is stored)."""
    ctx = context(request)
    p = await parse_images(request, DetectIn)
    image, faces = await ctx.infer(lambda: ctx.fs.collections.detect_faces(p.image,
                                                                           caller=caller))
    return DetectOut(width=image.width, height=image.height,
                     faces=[detected(faces, i) for i in range(len(faces))])


# -- users ----------------------------------------------------------------------------------

@router.post("/collections/{collection}/users", name=Operation.CREATE_USER.value,
             status_code=201)
async def create_user(request: Request, collection: str, body: UserIn,
                      caller: CallerDep) -> UserOut:
    """Create a user (a person's faces, grouped)."""
    ctx = context(request)
    return user_out(await ctx.io(lambda: ctx.fs.users.create(collection, body.user_id,
                                                             caller=caller)))


@router.get("/collections/{collection}/users", name=Operation.LIST_USERS.value)
async def list_users(request: Request, collection: str,
                     max_results: Annotated[int, Query(ge=1, le=500)] = 100,
                     next_token: str | None = None) -> UsersPage:
    """Users of a collection, a page at a time."""
    ctx = context(request)
    after = decode_row("users", next_token)
    users, nxt = await ctx.io(lambda: ctx.fs.users.list(collection, limit=max_results,
                                                        after=after))
    return UsersPage(users=[user_out(u) for u in users],
                     next_token=None if nxt is None else encode_token("users", nxt))


@router.delete("/collections/{collection}/users/{user_id}", name=Operation.DELETE_USER.value,
               status_code=204, response_class=Response)
async def delete_user(request: Request, collection: str, user_id: str,
                      caller: CallerDep) -> Response:
    """Delete a user; its faces stay in the collection, unassociated."""
    ctx = context(request)
    await ctx.io(lambda: ctx.fs.users.delete(collection, user_id, caller=caller))
    return Response(status_code=204)


@router.post("/collections/{collection}/users/{user_id}/faces",
             name=Operation.ASSOCIATE_FACES.value)
async def associate_faces(request: Request, collection: str, user_id: str, body: AssociateIn,
                          caller: CallerDep) -> AssociationOut:
    """Give faces to a user (each must match the user's faces when it has some)."""
    ctx = context(request)
    return association_out(await ctx.infer(lambda: ctx.fs.users.associate(
        collection, user_id, body.face_ids, user_match_threshold=body.user_match_threshold,
        caller=caller)))


@router.post("/collections/{collection}/users/{user_id}/faces/delete",
             name=Operation.DISASSOCIATE_FACES.value)
async def disassociate_faces(request: Request, collection: str, user_id: str, body: FaceIdsIn,
                             caller: CallerDep) -> AssociationOut:
    """Take faces from a user (they stay in the collection)."""
    ctx = context(request)
    return association_out(await ctx.io(lambda: ctx.fs.users.disassociate(
        collection, user_id, body.face_ids, caller=caller)))


@router.post("/collections/{collection}/users/search", name=Operation.SEARCH_USERS.value)
async def search_users(request: Request, collection: str, body: UserSearchIn,
                       caller: CallerDep) -> UserSearchOut:
    """Users matching a stored user's faces or a stored face."""
    ctx = context(request)
    return user_search_out(await ctx.infer(lambda: ctx.fs.users.search(
        collection, user_id=body.user_id, face_id=body.face_id, max_users=body.max_users,
        threshold=body.threshold, caller=caller)))


@router.post("/collections/{collection}/users/search-by-image",
             name=Operation.SEARCH_USERS_BY_IMAGE.value,
             openapi_extra=_body_doc(UserSearchImageIn))
async def search_users_by_image(request: Request, collection: str,
                                caller: CallerDep) -> UserSearchOut:
    """Users matching the probe's largest face."""
    ctx = context(request)
    p = await parse_images(request, UserSearchImageIn)
    return user_search_out(await ctx.infer(lambda: ctx.fs.users.search_by_image(
        collection, p.image, max_users=p.max_users, threshold=p.threshold, caller=caller)))


# -- keys -----------------------------------------------------------------------------------

@router.post("/keys", name=Operation.CREATE_KEY.value, status_code=201)
async def create_key(request: Request, body: KeyIn, caller: CallerDep) -> KeyCreatedOut:
    """Create an access key; the secret is in this answer only."""
    ctx = context(request)
    expires = time.time() + body.expires_in_s if body.expires_in_s else None
    new = await ctx.io(lambda: ctx.fs.keys.create(
        body.role, body.label, purpose=body.purpose, case_ref=body.case_ref, expires_at=expires,
        caller=caller))
    return KeyCreatedOut(**key_out(new.info).model_dump(), secret=new.secret)


@router.get("/keys", name=Operation.LIST_KEYS.value)
async def list_keys(request: Request) -> list[KeyOut]:
    """Access keys (without secrets), revoked ones included."""
    ctx = context(request)
    return [key_out(k) for k in await ctx.io(ctx.fs.keys.list)]


@router.delete("/keys/{key_id}", name=Operation.REVOKE_KEY.value)
async def revoke_key(request: Request, key_id: str, caller: CallerDep) -> KeyOut:
    """Revoke an access key (at once)."""
    ctx = context(request)
    return key_out(await ctx.io(lambda: ctx.fs.keys.revoke(key_id, caller=caller)))


# -- audit trail ----------------------------------------------------------------------------

class AuditPage(_Out):
    events: list[dict[str, Any]] = Field(description="audit events, oldest first (the export "
                                                     "form of ``facesearch audit export``)")
    next_token: str | None = None


@router.get("/audit", name=Operation.LIST_AUDIT_EVENTS.value)
async def list_audit_events(
    request: Request, actor: str | None = None, case: str | None = None,
    collection: str | None = None,
    operation: Annotated[str | None, Query(description="exact, or a prefix ending in '*'")] = None,
    since: Annotated[float | None, Query(description="seconds since the epoch")] = None,
    until: float | None = None, max_results: Annotated[int, Query(ge=1, le=10_000)] = 100,
    next_token: str | None = None,
) -> AuditPage:
    """Audit events matching every filter given, a page at a time (auditors only)."""
    ctx = context(request)
    after = decode_row("audit", next_token)
    records, nxt = await ctx.io(lambda: ctx.fs.audit.query(
        actor=actor, case_ref=case, collection=collection, operation=operation, since=since,
        until=until, limit=max_results, after_seq=after))
    return AuditPage(events=[r.to_json() for r in records],
                     next_token=None if nxt is None else encode_token("audit", nxt))


@router.get("/whoami", name=Operation.WHO_AM_I.value)
async def who_am_i(caller: CallerDep) -> WhoAmIOut:
    """The access key the request was signed with, and its role."""
    return WhoAmIOut(key_id=caller.actor, role=caller.role)

