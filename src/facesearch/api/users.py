"""Native routes for users (several faces of one person): create, list, delete, associate
and disassociate faces, search users."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response
from pydantic import BaseModel, Field

from facesearch.api.auth import Operation
from facesearch.api.collections import FaceIdsIn
from facesearch.api.context import context
from facesearch.api.native import CallerDep, body_doc, native_router, parse_images
from facesearch.api.paging import decode_row, encode_token
from facesearch.services.search import DEFAULT_USER_MATCH_THRESHOLD
from facesearch.shapes.users import AssociationOut, UserOut, UserSearchOut, UsersPage

router = native_router()


class UserIn(BaseModel):
    user_id: str


class AssociateIn(FaceIdsIn):
    user_match_threshold: float = Field(DEFAULT_USER_MATCH_THRESHOLD, ge=0, le=100)


class UserSearchIn(BaseModel):
    user_id: str | None = None
    face_id: str | None = None
    max_users: int = Field(10, ge=1, le=500)
    threshold: float | None = Field(None, ge=0, le=100)


class UserSearchImageIn(BaseModel):
    image: bytes
    max_users: int = Field(10, ge=1, le=500)
    threshold: float | None = Field(None, ge=0, le=100)



@router.post("/collections/{collection}/users", name=Operation.CREATE_USER.value,
             status_code=201)
async def create_user(request: Request, collection: str, body: UserIn,
                      caller: CallerDep) -> UserOut:
    """Create a user (a person's faces, grouped)."""
    ctx = context(request)
    return UserOut.model_validate(await ctx.io(lambda: ctx.fs.users.create(collection, body.user_id,
                                                             caller=caller)))


@router.get("/collections/{collection}/users", name=Operation.LIST_USERS.value)
async def list_users(request: Request, collection: str,
                     max_results: Annotated[int, Query(ge=1, le=500)] = 100,
                     next_token: str | None = None) -> UsersPage:
    """Users of a collection, a page at a time."""
    ctx = context(request)
    after = decode_row("users", next_token)
    users, nxt = await ctx.io(lambda: ctx.fs.users.list_users(collection, limit=max_results,
                                                        after=after))
    return UsersPage(users=[UserOut.model_validate(u) for u in users],
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
    return AssociationOut.of(await ctx.infer(lambda: ctx.fs.users.associate(
        collection, user_id, body.face_ids, user_match_threshold=body.user_match_threshold,
        caller=caller)))


@router.post("/collections/{collection}/users/{user_id}/faces/delete",
             name=Operation.DISASSOCIATE_FACES.value)
async def disassociate_faces(request: Request, collection: str, user_id: str, body: FaceIdsIn,
                             caller: CallerDep) -> AssociationOut:
    """Take faces from a user (they stay in the collection)."""
    ctx = context(request)
    return AssociationOut.of(await ctx.io(lambda: ctx.fs.users.disassociate(
        collection, user_id, body.face_ids, caller=caller)))


@router.post("/collections/{collection}/users/search", name=Operation.SEARCH_USERS.value)
async def search_users(request: Request, collection: str, body: UserSearchIn,
                       caller: CallerDep) -> UserSearchOut:
    """Users matching a stored user's faces or a stored face."""
    ctx = context(request)
    return UserSearchOut.of(await ctx.infer(lambda: ctx.fs.users.search(
        collection, user_id=body.user_id, face_id=body.face_id, max_users=body.max_users,
        threshold=body.threshold, caller=caller)))


@router.post("/collections/{collection}/users/search-by-image",
             name=Operation.SEARCH_USERS_BY_IMAGE.value,
             openapi_extra=body_doc(UserSearchImageIn))
async def search_users_by_image(request: Request, collection: str,
                                caller: CallerDep) -> UserSearchOut:
    """Users matching the probe's largest face."""
    ctx = context(request)
    p = await parse_images(request, UserSearchImageIn)
    return UserSearchOut.of(await ctx.infer(lambda: ctx.fs.users.search_by_image(
        collection, p.image, max_users=p.max_users, threshold=p.threshold, caller=caller)))


