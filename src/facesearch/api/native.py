"""The native REST API (``/v1``): what its route modules share.

Routes (:mod:`.collections`, :mod:`.search`, :mod:`.users`, :mod:`.keys`,
:mod:`.accountability`, :mod:`.crops`, :mod:`.video`, :mod:`.streams`) have one per library
verb, snake_case JSON (the shapes of :mod:`facesearch.shapes`). Boxes are ``[x1, y1, x2, y2]``
in pixels of the upright image, landmarks five ``[x, y]`` points (eye_left, eye_right, nose,
mouth_left, mouth_right, left and right as seen in the image), scores 0-1, similarities and
thresholds on facesearch's 0-100 scale. Images are sent either as ``multipart/form-data`` (a
file part named ``image``, or ``source`` and ``target``) or as JSON with the image
base64-encoded in the same field. Lists page with ``max_results`` and an opaque
``next_token``. Errors are ``{"code": ..., "message": ...}`` (:mod:`facesearch.api.errors`).

Every route's name is its :class:`~facesearch.api.auth.Operation`; each router's one
dependency (:func:`native_router`) authenticates the request and authorises that operation
(routes never check roles).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from facesearch.api.auth import Operation
from facesearch.api.context import context
from facesearch.api.errors import InvalidParameterError, SerializationError
from facesearch.shapes.base import ErrorOut
from facesearch.types import Caller

M = TypeVar("M", bound=BaseModel)
QualityName = Literal["NONE", "AUTO", "LOW", "MEDIUM", "HIGH"]

ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 422, 429, 503)
"""The error statuses a native route may answer (documented with :class:`ErrorOut`)."""


async def native_caller(request: Request) -> Caller:
    """Authenticate the request and authorise the route's operation (the route's name)."""
    route = request.scope.get("route")
    request.scope.setdefault("state", {})["api"] = "native"
    op = Operation(getattr(route, "name", ""))
    return await context(request).caller(request, op, service="facesearch", allow_bearer=True)


CallerDep = Annotated[Caller, Depends(native_caller)]


def native_router(statuses: tuple[int, ...] = ERROR_STATUSES) -> APIRouter:
    """A ``/v1`` router whose every route authenticates and authorises its caller, its
    error ``statuses`` documented as :class:`ErrorOut`."""
    return APIRouter(prefix="/v1", dependencies=[Depends(native_caller)],
                     responses={s: {"model": ErrorOut} for s in statuses})


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
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
