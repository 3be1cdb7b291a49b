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
from pydantic import BaseModel, Field, ValidationError, model_validator
from starlette.datastructures import UploadFile

from facesearch import responses
from facesearch.api.auth import Operation, allowed_operations
from facesearch.api.context import context
from facesearch.api.errors import InvalidParameterError, SerializationError
from facesearch.api.paging import decode_row, encode_token, page_by_name
from facesearch.governance.keys import KeyInfo, Role
from facesearch.governance.policy import CollectionPolicy
from facesearch.limits import MAX_RESULTS
from facesearch.responses import (
    CollectionOut,
    DetectedFaceOut,
    FaceOut,
    MatchOut,
    Out,
    RiskOut,
    UserOut,
)
from facesearch.services.search import DEFAULT_USER_MATCH_THRESHOLD
from facesearch.services.users import (
    Association,
    UserSearchResult,
)
from facesearch.types import Caller, QualityFilter

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

class ErrorOut(Out):
    code: str = Field(description="stable machine-readable code, e.g. collection_not_found")
    message: str


router = APIRouter(prefix="/v1", dependencies=[Depends(native_caller)],
                   responses={s: {"model": ErrorOut} for s in (400, 401, 403, 404, 409, 413,
                                                                422, 429, 503)})




class CollectionsOut(Out):
    collections: list[CollectionOut]
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


class FacesPage(Out):
    faces: list[FaceOut]
    next_token: str | None = None


class FaceIdsIn(BaseModel):
    face_ids: list[str] = Field(min_length=1, max_length=MAX_RESULTS)


class DeleteFacesOut(Out):
    deleted: list[str]
    not_found: list[str]
    associated_to_user: list[str] = Field(
        description="faces of a user, not deleted: disassociate them first (or erase them)")




class ProbeOut(Out):
    face: DetectedFaceOut
    matches: list[MatchOut]


class SearchOut(RiskOut):
    search_id: str
    label: str
    threshold: float
    model_version: str
    collection_size: int
    width: int
    height: int
    probes: list[ProbeOut]
    risk: responses.SearchRiskOut = Field(
        description="what the threshold means for this probe: the rates of its quality band")
    warnings: list[str] = Field(
        default_factory=list, description="what a reviewer must know: a poor probe, "
                                          "candidates from poor enrolled faces")


class FaceSearchIn(BaseModel):
    max_results: int = Field(10, ge=1, le=MAX_RESULTS)
    threshold: float | None = Field(None, ge=0, le=100, description="default: 80 or the "
                                                                     "collection's floor")


class FaceSearchOut(RiskOut):
    face_id: str
    search_id: str
    threshold: float
    matches: list[MatchOut]
    risk: responses.SearchRiskOut = Field(
        description="what the threshold means for the stored face's quality band")
    warnings: list[str] = Field(default_factory=list)


class ComparedFaceOut(Out):
    face: DetectedFaceOut
    similarity: float


class CompareOut(RiskOut):
    similarity: float
    match: bool
    threshold: float
    source: DetectedFaceOut
    target_faces: list[ComparedFaceOut]


class DetectOut(Out):
    width: int
    height: int
    faces: list[DetectedFaceOut]


class UserIn(BaseModel):
    user_id: str




class UsersPage(Out):
    users: list[UserOut]
    next_token: str | None = None


class AssociateIn(FaceIdsIn):
    user_match_threshold: float = Field(DEFAULT_USER_MATCH_THRESHOLD, ge=0, le=100)


class FailedFaceOut(Out):
    face_id: str
    reasons: list[str]


class AssociationOut(Out):
    done: list[str]
    failed: list[FailedFaceOut]
    user: UserOut


class UserSearchIn(BaseModel):
    user_id: str | None = None
    face_id: str | None = None
    max_users: int = Field(10, ge=1, le=500)
    threshold: float | None = Field(None, ge=0, le=100)


class UserMatchOut(Out):
    user_id: str
    similarity: float
    face_id: str


class UserSearchOut(RiskOut):
    search_id: str | None
    threshold: float
    face: DetectedFaceOut | None = None
    matches: list[UserMatchOut]


class KeyIn(BaseModel):
    role: Role | None = Field(None, description="the key's one role (or give `roles`)")
    roles: list[Role] | None = Field(None, min_length=1, max_length=len(Role),
                                     description="several roles for one key (separation of "
                                                 "duties is the default: give one)")
    label: str | None = Field(None, min_length=1, max_length=200)
    purpose: str | None = Field(None, min_length=1, max_length=500,
                                description="issue the key for one case: its purpose")
    case_ref: str | None = Field(None, min_length=1, max_length=500,
                                 description="issue the key for one case: its reference")
    expires_in_s: float | None = Field(None, gt=0, description="the key expires after this "
                                                               "many seconds")

    @model_validator(mode="after")
    def _one_of(self) -> KeyIn:
        if (self.role is None) == (self.roles is None):
            raise ValueError("give exactly one of role or roles")
        return self

    def role_set(self) -> list[Role]:
        return [self.role] if self.role is not None else list(self.roles or [])


class KeyOut(Out):
    key_id: str
    role: str = Field(description="the key's roles, comma-separated (e.g. indexer,searcher)")
    roles: list[Role]
    label: str | None
    created_at: float
    revoked_at: float | None
    active: bool
    purpose: str | None = None
    case_ref: str | None = None
    expires_at: float | None = None


class KeyCreatedOut(KeyOut):
    secret: str = Field(description="shown once; keep it safe")


class WhoAmIOut(Out):
    key_id: str
    role: str | None = Field(description="the key's roles, comma-separated")
    roles: list[str] = Field(description="the key's roles")
    operations: list[str] = Field(default_factory=list,
                                  description="the operations this key may call (the web "
                                              "page shows what they allow)")


# image-bearing requests: multipart/form-data or JSON with base64 images

class IndexIn(BaseModel):
    image: bytes
    external_id: str | None = None
    max_faces: int | None = Field(None, ge=1, le=MAX_RESULTS)
    quality_filter: QualityName = "AUTO"
    force: bool = Field(False, description="index content already in the collection again")
    source: str | None = Field(None, min_length=1, max_length=255,
                               description="the image's file name, shown to reviewers "
                                           "(default: the uploaded file's name)")
    all_faces: bool = Field(False, description="with an external_id, index every face that "
                                               "passes the quality filter (a group photo); by "
                                               "default only the largest, the others are "
                                               "reported as NOT_LABELLED_FACE")


class SearchImageIn(BaseModel):
    image: bytes
    max_results: int = Field(10, ge=1, le=MAX_RESULTS)
    threshold: float | None = Field(None, ge=0, le=100)
    all_faces: bool = Field(False, description="search every face, not only the largest")
    face: int | None = Field(None, ge=0, le=MAX_RESULTS,
                             description="search only this face: its index among the probe's "
                                         "faces, largest first (as /v1/detect lists them)")


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
        names = []
        for k, v in form.multi_items():
            if isinstance(v, UploadFile):
                data[k] = await v.read()
                names.append((v.filename or "").replace("\\", "/").rsplit("/", 1)[-1])
            else:
                data[k] = v
        # An image's source defaults to the uploaded file's name.
        if "source" in model.model_fields and "source" not in data and names and names[0]:
            data["source"] = names[0][:255]
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

def association_out(a: Association) -> AssociationOut:
    return AssociationOut(done=a.done, user=responses.user(a.user),
                          failed=[FailedFaceOut(face_id=f, reasons=r) for f, r in a.failed])


def user_search_out(r: UserSearchResult) -> UserSearchOut:
    return UserSearchOut(
        search_id=r.search_id, threshold=r.threshold, **responses.risk(r.risk),
        face=responses.detail(r.faces.view(0)) if len(r.faces) else None,
        matches=[UserMatchOut(user_id=m.user_id, similarity=responses.rnd(m.similarity, 3),
                              face_id=m.face_id) for m in r.matches])


def key_out(k: KeyInfo) -> KeyOut:
    return KeyOut(key_id=k.key_id, role=k.role, roles=list(k.roles), label=k.label,
                  created_at=k.created_at,
                  revoked_at=k.revoked_at, active=k.active, purpose=k.purpose,
                  case_ref=k.case_ref, expires_at=k.expires_at)


# -- collections ----------------------------------------------------------------------------

class CollectionIn(BaseModel):
    name: str = Field(min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9_.\-]+$")
    policy: CollectionPolicy | None = Field(None, description="the collection's policy "
                                                             "(default: an ordinary one)")


@router.post("/collections", name=Operation.CREATE_COLLECTION.value, status_code=201)
async def create_collection(request: Request, body: CollectionIn,
                            caller: CallerDep) -> CollectionOut:
    """Create an empty collection."""
    ctx = context(request)
    return responses.collection(await ctx.io(lambda: ctx.fs.collections.create(
        body.name, policy=body.policy, caller=caller)))


@router.get("/collections", name=Operation.LIST_COLLECTIONS.value)
async def list_collections(request: Request,
                           max_results: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = 1000,
                           next_token: str | None = None) -> CollectionsOut:
    """List collections in name order, a page at a time."""
    ctx = context(request)
    infos = {c.name: c for c in await ctx.io(ctx.fs.collections.list)}
    names, nxt = page_by_name(list(infos), next_token, max_results, "collections")
    return CollectionsOut(collections=[responses.collection(infos[n]) for n in names], next_token=nxt)


@router.get("/collections/{collection}", name=Operation.DESCRIBE_COLLECTION.value)
async def describe_collection(request: Request, collection: str) -> CollectionOut:
    """A collection's size and model."""
    ctx = context(request)
    return responses.collection(await ctx.io(lambda: ctx.fs.collections.describe(collection)))


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
        quality_filter=QualityFilter(p.quality_filter), force=p.force, source_name=p.source,
        caller=caller, all_faces=p.all_faces))
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
        indexed=[IndexedFaceOut(face=responses.face(rec), detail=responses.detail(res.faces.view(i)))
                 for i, rec in zip(kept, res.indexed, strict=True)],
        unindexed=[UnindexedFaceOut(detail=responses.detail(res.faces.view(i)), reasons=r)
                   for i, r in sorted(why.items())])


@router.get("/collections/{collection}/faces", name=Operation.LIST_FACES.value)
async def list_faces(request: Request, collection: str, caller: CallerDep,
                     max_results: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = 100,
                     next_token: str | None = None, user_id: str | None = None) -> FacesPage:
    """Faces of a collection in insertion order, a page at a time."""
    ctx = context(request)
    after = decode_row("faces", next_token)
    faces, nxt = await ctx.io(lambda: ctx.fs.collections.list_faces(
        collection, limit=max_results, after=after, user_id=user_id, caller=caller))
    return FacesPage(faces=[responses.face(f) for f in faces],
                     next_token=None if nxt is None else encode_token("faces", nxt))


@router.post("/collections/{collection}/faces/delete", name=Operation.DELETE_FACES.value)
async def delete_faces(request: Request, collection: str, body: FaceIdsIn,
                       caller: CallerDep) -> DeleteFacesOut:
    """Erase faces by id (faces that belong to a user are left alone: disassociate them
    first, or erase them with EraseFaces)."""
    ctx = context(request)
    d = await ctx.infer(lambda: ctx.fs.erasure.delete_faces(
        collection, body.face_ids, caller=caller))
    return DeleteFacesOut(deleted=d.deleted, not_found=d.not_found,
                          associated_to_user=d.associated)


@router.post("/collections/{collection}/faces/{face_id}/search",
             name=Operation.SEARCH_FACES.value)
async def search_faces(request: Request, collection: str, face_id: str, caller: CallerDep,
                       body: FaceSearchIn | None = None) -> FaceSearchOut:
    """Candidates for a stored face (the face itself excluded), best first."""
    ctx = context(request)
    p = body or FaceSearchIn.model_validate({})
    res = await ctx.infer(lambda: ctx.fs.search.by_face_id(
        collection, face_id, max_results=p.max_results, threshold=p.threshold, caller=caller))
    return FaceSearchOut(face_id=face_id, search_id=res.search_id, threshold=res.threshold,
                         **responses.risk(res.risk), risk=responses.search_risk(res.risk),
                         warnings=res.warnings,
                         matches=[responses.match(m) for m in res.matches])


@router.post("/collections/{collection}/search", name=Operation.SEARCH_FACES_BY_IMAGE.value,
             openapi_extra=_body_doc(SearchImageIn))
async def search_faces_by_image(request: Request, collection: str,
                                caller: CallerDep) -> SearchOut:
    """Candidates for the probe's largest face (or every face): leads for human review,
    never identifications."""
    ctx = context(request)
    p = await parse_images(request, SearchImageIn)
    res = await ctx.infer(lambda: ctx.fs.search.by_image(
        collection, p.image, max_results=p.max_results, threshold=p.threshold,
        all_faces=p.all_faces, face_index=p.face, caller=caller))
    return SearchOut(
        search_id=res.search_id, label=res.label, threshold=res.threshold,
        **responses.risk(res.risk), risk=responses.search_risk(res.risk),
        warnings=res.warnings,
        model_version=res.model_version, collection_size=res.collection_size,
        width=res.width, height=res.height,
        probes=[ProbeOut(face=responses.detail(res.faces.view(pr.face_index)),
                         matches=[responses.match(m) for m in pr.matches])
                for pr in res.results])


# -- compare and detect ---------------------------------------------------------------------

@router.post("/compare", name=Operation.COMPARE_FACES.value, openapi_extra=_body_doc(CompareIn))
async def compare_faces(request: Request, caller: CallerDep) -> CompareOut:
    """The source's largest face against every face of the target (1:1)."""
    ctx = context(request)
    p = await parse_images(request, CompareIn)
    c = await ctx.infer(lambda: ctx.fs.search.compare(
        p.source, p.target, threshold=p.threshold, caller=caller))
    return CompareOut(similarity=responses.rnd(c.similarity, 3), match=c.match,
                      threshold=c.threshold, **responses.risk(c.risk),
                      source=responses.detail(c.source.view(0)),
                      target_faces=[ComparedFaceOut(face=responses.detail(c.target.view(i)),
                                                    similarity=responses.rnd(s, 3))
                                    for i, s in enumerate(c.similarities)])


@router.post("/detect", name=Operation.DETECT_FACES.value, openapi_extra=_body_doc(DetectIn))
async def detect_faces(request: Request, caller: CallerDep) -> DetectOut:
    """Faces of an image with their landmarks and quality (nothing is stored)."""
    ctx = context(request)
    p = await parse_images(request, DetectIn)
    image, faces = await ctx.infer(lambda: ctx.fs.collections.detect_faces(p.image,
                                                                           caller=caller))
    return DetectOut(width=image.width, height=image.height,
                     faces=[responses.detail(faces.view(i)) for i in range(len(faces))])


# -- users ----------------------------------------------------------------------------------

@router.post("/collections/{collection}/users", name=Operation.CREATE_USER.value,
             status_code=201)
async def create_user(request: Request, collection: str, body: UserIn,
                      caller: CallerDep) -> UserOut:
    """Create a user (a person's faces, grouped)."""
    ctx = context(request)
    return responses.user(await ctx.io(lambda: ctx.fs.users.create(collection, body.user_id,
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
    return UsersPage(users=[responses.user(u) for u in users],
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
        body.role_set(), body.label, purpose=body.purpose, case_ref=body.case_ref,
        expires_at=expires, caller=caller))
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

class AuditPage(Out):
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
    next_token: str | None = None, purpose: str | None = None,
    search_id: Annotated[str | None, Query(description="the search and its reviews")] = None,
    *, caller: CallerDep,
) -> AuditPage:
    """Audit events matching every filter given, a page at a time (auditors only; a key
    bound to a case reads that case's events only)."""
    ctx = context(request)
    after = decode_row("audit", next_token)
    records, nxt = await ctx.io(lambda: ctx.fs.audit.query(
        actor=actor, case_ref=case, collection=collection, operation=operation, since=since,
        until=until, limit=max_results, after_seq=after, purpose=purpose,
        search_id=search_id, bound_case=ctx.fs.keys.case_of(caller)))
    return AuditPage(events=[r.to_json() for r in records],
                     next_token=None if nxt is None else encode_token("audit", nxt))


@router.get("/whoami", name=Operation.WHO_AM_I.value)
async def who_am_i(request: Request, caller: CallerDep) -> WhoAmIOut:
    """The access key the request was signed with, its roles, and what it may call."""
    ctx = context(request)
    key = await ctx.io(lambda: ctx.fs.keys.describe(caller.actor))
    return WhoAmIOut(key_id=caller.actor, role=caller.role,
                     roles=caller.role.split(",") if caller.role else [],
                     operations=[op.value for op in allowed_operations(key)])

