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
- users (CreateUser, ListUsers, AssociateFaces, SearchUsers, ...) are
  :mod:`facesearch.api.rekognition_users`'; stored-video jobs (StartFaceSearch, GetFaceSearch,
  StartFaceDetection, GetFaceDetection) :mod:`facesearch.api.rekognition_video`'s; stream
  processors and tags :mod:`facesearch.api.rekognition_streams`'.

Errors carry Rekognition's codes (:mod:`facesearch.api.errors`), so botocore raises the same
exception classes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from facesearch.api.auth import Operation, authorize, sigv4_signature
from facesearch.api.context import ApiContext, context
from facesearch.api.errors import (
    AMZ_JSON,
    SerializationError,
    UnknownOperationError,
    rekognition_error,
)
from facesearch.api.native import parse_json
from facesearch.api.rekognition_faces import FACE_HANDLERS
from facesearch.api.rekognition_streams import STREAM_HANDLERS, In, Json
from facesearch.api.rekognition_video import VIDEO_HANDLERS
from facesearch.api.replay import Claim, Repeat, repeat_rule, signature_claim, token_claim
from facesearch.errors import FaceSearchError, InvalidParameterError, ThrottledError
from facesearch.types import Caller

TARGET_PREFIX = "RekognitionService"

router = APIRouter()

Handler = Callable[[ApiContext, Caller, Any], Awaitable[Json]]
HANDLERS: dict[Operation, tuple[type[In], Handler]] = {
    **FACE_HANDLERS, **VIDEO_HANDLERS, **STREAM_HANDLERS}
"""Every operation of the endpoint: its request shape and handler."""


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
