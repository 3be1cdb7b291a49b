"""What a reviewer sees of stored faces (native API, ``/v1``): their review crops.

A crop is a small JPEG of each face kept at enrolment (:mod:`facesearch.vision.crop`), for
human review and for browsing a collection. Only roles whose work needs faces may read them
(the role table: searchers, indexers, admins; auditors see aggregates); each request is one
audit event naming every face shown.
"""

from __future__ import annotations

import base64
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import Field

from facesearch import responses
from facesearch.api.auth import Operation
from facesearch.api.context import context
from facesearch.api.native import CallerDep, ErrorOut, native_caller
from facesearch.responses import FaceOut, Out
from facesearch.services.collection import FaceCard
from facesearch.vision.crop import to_crop

router = APIRouter(prefix="/v1", dependencies=[Depends(native_caller)],
                   responses={s: {"model": ErrorOut} for s in (400, 401, 403, 404, 429)})

MAX_CARDS = 200
"""Most faces one crops request names."""


class CropOut(Out):
    content_type: Literal["image/jpeg"] = "image/jpeg"
    data: str = Field(description="the JPEG, base64")
    size: int = Field(description="width and height, pixels (at most 160)")
    box: list[float] = Field(description="the face box [x1, y1, x2, y2] in crop pixels")
    landmarks: list[list[float]] = Field(description="5 [x, y] points in crop pixels")


class FaceCardOut(Out):
    face: FaceOut
    source_name: str | None = Field(description="the file the face was indexed from (its "
                                                "name only)")
    landmarks: list[list[float]] = Field(description="5 [x, y] points, pixels of the indexed "
                                                     "image")
    crop: CropOut | None = Field(description="null for faces indexed before crops were kept")


class FaceCardsOut(Out):
    faces: list[FaceCardOut]
    not_found: list[str]


def card_out(c: FaceCard) -> FaceCardOut:
    f = c.face
    crop = None
    if c.crop is not None:
        x1, y1, x2, y2 = f.box
        crop = CropOut(data=base64.b64encode(c.crop.jpeg).decode("ascii"), size=c.crop.size,
                       box=[v for pt in to_crop([(x1, y1), (x2, y2)], c.crop) for v in pt],
                       landmarks=to_crop(f.landmarks, c.crop))
    return FaceCardOut(face=responses.face(f), source_name=c.source_name,
                       landmarks=[[responses.rnd(x, 1), responses.rnd(y, 1)]
                                  for x, y in f.landmarks], crop=crop)


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
    return FaceCardsOut(faces=[card_out(c) for c in cards], not_found=missing)


@router.get("/collections/{collection}/faces/{face_id}/crop", name=Operation.GET_FACE_CROPS.value,
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
async def get_face_crop(request: Request, collection: str, face_id: str,
                        caller: CallerDep) -> Response:
    """One stored face's review crop as a JPEG (404 when the face has none)."""
    ctx = context(request)
    crop = await ctx.io(lambda: ctx.fs.collections.face_crop(collection, face_id,
                                                             caller=caller))
    return Response(crop.jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
