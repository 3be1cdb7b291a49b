"""Native routes for collections and their faces (``/v1/collections``): create, list,
describe, delete; index, list and delete faces."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response
from pydantic import BaseModel, Field

from facesearch.api.auth import Operation
from facesearch.api.context import context
from facesearch.api.native import CallerDep, QualityName, body_doc, native_router, parse_images
from facesearch.api.paging import decode_row, encode_token, page_by_name
from facesearch.governance.policy import CollectionPolicy
from facesearch.limits import MAX_RESULTS
from facesearch.shapes.collections import CollectionOut, CollectionsOut
from facesearch.shapes.faces import DeleteFacesOut, FaceOut, FacesPage, IndexOut
from facesearch.types import QualityFilter

router = native_router()


class FaceIdsIn(BaseModel):
    face_ids: list[str] = Field(min_length=1, max_length=MAX_RESULTS)


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


class CollectionIn(BaseModel):
    name: str = Field(min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9_.\-]+$")
    policy: CollectionPolicy | None = Field(None, description="the collection's policy "
                                                             "(default: an ordinary one)")


@router.post("/collections", name=Operation.CREATE_COLLECTION.value, status_code=201)
async def create_collection(request: Request, body: CollectionIn,
                            caller: CallerDep) -> CollectionOut:
    """Create an empty collection."""
    ctx = context(request)
    return CollectionOut.model_validate(await ctx.io(lambda: ctx.fs.collections.create(
        body.name, policy=body.policy, caller=caller)))


@router.get("/collections", name=Operation.LIST_COLLECTIONS.value)
async def list_collections(request: Request,
                           max_results: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = 1000,
                           next_token: str | None = None) -> CollectionsOut:
    """List collections in name order, a page at a time."""
    ctx = context(request)
    infos = {c.name: c for c in await ctx.io(ctx.fs.collections.list_collections)}
    names, nxt = page_by_name(list(infos), next_token, max_results, "collections")
    return CollectionsOut(collections=[CollectionOut.model_validate(infos[n]) for n in names],
                          next_token=nxt)


@router.get("/collections/{collection}", name=Operation.DESCRIBE_COLLECTION.value)
async def describe_collection(request: Request, collection: str) -> CollectionOut:
    """A collection's size and model."""
    ctx = context(request)
    info = await ctx.io(lambda: ctx.fs.collections.describe(collection))
    return CollectionOut.model_validate(info)


@router.delete("/collections/{collection}", name=Operation.DELETE_COLLECTION.value,
               status_code=204, response_class=Response)
async def delete_collection(request: Request, collection: str, caller: CallerDep) -> Response:
    """Delete a collection and erase every face in it."""
    ctx = context(request)
    await ctx.infer(lambda: ctx.fs.collections.delete(collection, caller=caller))
    return Response(status_code=204)


# -- faces ----------------------------------------------------------------------------------

@router.post("/collections/{collection}/faces", name=Operation.INDEX_FACES.value,
             openapi_extra=body_doc(IndexIn))
async def index_faces(request: Request, collection: str, caller: CallerDep) -> IndexOut:
    """Detect the faces of an image and store those that pass the quality filter."""
    ctx = context(request)
    p = await parse_images(request, IndexIn)
    res = await ctx.infer(lambda: ctx.fs.collections.index_image(
        collection, p.image, external_id=p.external_id, max_faces=p.max_faces,
        quality_filter=QualityFilter(p.quality_filter), force=p.force, source_name=p.source,
        caller=caller, all_faces=p.all_faces))
    ctx.metrics.faces_indexed.inc(len(res.indexed))
    return IndexOut.of(res)


@router.get("/collections/{collection}/faces", name=Operation.LIST_FACES.value)
async def list_faces(request: Request, collection: str, caller: CallerDep,
                     max_results: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = 100,
                     next_token: str | None = None, user_id: str | None = None) -> FacesPage:
    """Faces of a collection in insertion order, a page at a time."""
    ctx = context(request)
    after = decode_row("faces", next_token)
    faces, nxt = await ctx.io(lambda: ctx.fs.collections.list_faces(
        collection, limit=max_results, after=after, user_id=user_id, caller=caller))
    return FacesPage(faces=[FaceOut.model_validate(f) for f in faces],
                     next_token=None if nxt is None else encode_token("faces", nxt))


@router.post("/collections/{collection}/faces/delete", name=Operation.DELETE_FACES.value)
async def delete_faces(request: Request, collection: str, body: FaceIdsIn,
                       caller: CallerDep) -> DeleteFacesOut:
    """Erase faces by id (faces that belong to a user are left alone: disassociate them
    first, or erase them with EraseFaces)."""
    ctx = context(request)
    d = await ctx.infer(lambda: ctx.fs.erasure.delete_faces(
        collection, body.face_ids, caller=caller))
    return DeleteFacesOut.model_validate(d)


