"""Native routes that match faces: search a collection by a stored face or by an image,
compare two images (1:1), detect faces. Candidates are leads for human review."""

from __future__ import annotations

from fastapi import Request
from pydantic import BaseModel, Field

from facesearch.api.auth import Operation
from facesearch.api.context import context
from facesearch.api.native import CallerDep, body_doc, native_router, parse_images
from facesearch.limits import MAX_RESULTS
from facesearch.shapes.faces import DetectedFaceOut, DetectOut
from facesearch.shapes.search import CompareOut, FaceSearchOut, SearchOut

router = native_router()


class FaceSearchIn(BaseModel):
    max_results: int = Field(10, ge=1, le=MAX_RESULTS)
    threshold: float | None = Field(None, ge=0, le=100, description="default: 80 or the "
                                                                     "collection's floor")


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


@router.post("/collections/{collection}/faces/{face_id}/search",
             name=Operation.SEARCH_FACES.value)
async def search_faces(request: Request, collection: str, face_id: str, caller: CallerDep,
                       body: FaceSearchIn | None = None) -> FaceSearchOut:
    """Candidates for a stored face (the face itself excluded), best first."""
    ctx = context(request)
    p = body or FaceSearchIn.model_validate({})
    res = await ctx.infer(lambda: ctx.fs.search.by_face_id(
        collection, face_id, max_results=p.max_results, threshold=p.threshold, caller=caller))
    return FaceSearchOut.of(face_id, res)


@router.post("/collections/{collection}/search", name=Operation.SEARCH_FACES_BY_IMAGE.value,
             openapi_extra=body_doc(SearchImageIn))
async def search_faces_by_image(request: Request, collection: str,
                                caller: CallerDep) -> SearchOut:
    """Candidates for the probe's largest face (or every face): leads for human review,
    never identifications."""
    ctx = context(request)
    p = await parse_images(request, SearchImageIn)
    res = await ctx.infer(lambda: ctx.fs.search.by_image(
        collection, p.image, max_results=p.max_results, threshold=p.threshold,
        all_faces=p.all_faces, face_index=p.face, caller=caller))
    return SearchOut.of(res)


# -- compare and detect ---------------------------------------------------------------------

@router.post("/compare", name=Operation.COMPARE_FACES.value, openapi_extra=body_doc(CompareIn))
async def compare_faces(request: Request, caller: CallerDep) -> CompareOut:
    """The source's largest face against every face of the target (1:1)."""
    ctx = context(request)
    p = await parse_images(request, CompareIn)
    c = await ctx.infer(lambda: ctx.fs.search.compare(
        p.source, p.target, threshold=p.threshold, caller=caller))
    return CompareOut.of(c)


@router.post("/detect", name=Operation.DETECT_FACES.value, openapi_extra=body_doc(DetectIn))
async def detect_faces(request: Request, caller: CallerDep) -> DetectOut:
    """Faces of an image with their landmarks and quality (nothing is stored)."""
    ctx = context(request)
    p = await parse_images(request, DetectIn)
    image, faces = await ctx.infer(lambda: ctx.fs.collections.detect_faces(p.image,
                                                                           caller=caller))
    return DetectOut(width=image.width, height=image.height,
                     faces=DetectedFaceOut.all(faces))


