"""What a reviewer sees of stored faces (native API, ``/v1``): their review crops.

A crop is a small JPEG of each face kept at enrolment (:mod:`facesearch.vision.crop`), for
human review and for browsing a collection. Only roles whose work needs faces may read them
(the role table: searchers, indexers, admins; auditors see aggregates); each request is one
audit event naming every face shown.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response

from facesearch.api.auth import Operation
from facesearch.api.context import context
from facesearch.api.native import CallerDep, native_router
from facesearch.shapes.faces import FaceCardOut, FaceCardsOut

router = native_router((400, 401, 403, 404, 429))

MAX_CARDS = 200
"""Most faces one crops request names."""


@router.get("/collections/{collection}/crops", name=Operation.GET_FACE_CROPS.value)
async def get_face_crops(
    request: Request, collection: str, caller: CallerDep,
    face_id: Annotated[list[str], Query(min_length=1, max_length=MAX_CARDS,
                                        description="face ids (repeat the parameter)")],
) -> FaceCardsOut:
    """Stored faces with their review crops (small JPEGs, base64), for human review and for
    browsing a collection; one audit event names every face shown."""
    ctx = context(request)
    cards, missing = await ctx.io(lambda: ctx.fs.collections.face_cards(
        collection, face_id, caller=caller))
    return FaceCardsOut(faces=[FaceCardOut.of(c) for c in cards], not_found=missing)


@router.get("/collections/{collection}/faces/{face_id}/crop", name=Operation.GET_FACE_CROPS.value,
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
async def get_face_crop(request: Request, collection: str, face_id: str,
                        caller: CallerDep) -> Response:
    """One stored face's review crop as a JPEG (404 when the face has none)."""
    ctx = context(request)
    crop = await ctx.io(lambda: ctx.fs.collections.face_crop(collection, face_id,
                                                             caller=caller))
    return Response(crop.jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
