"""The one mapping from errors to HTTP: native statuses and Amazon Rekognition error codes.

The native API answers ``{"code": ..., "message": ...}`` with :data:`ERRORS`' status; the
Rekognition endpoint answers ``{"__type": <Rekognition code>, "message": ...}`` as the AWS JSON
1.1 protocol does, so that botocore raises the same exception classes as against Amazon
Rekognition. Errors that only the HTTP layer raises (authentication, request size, paging
tokens, S3 objects, full queues) are defined here as :class:`FaceSearchError` subclasses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from facesearch.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    CameraNotFoundError,
    ConflictError,
    EncryptionError,
    FaceNotFoundError,
    FaceSearchError,
    IdempotencyMismatchError,
    ImageTooLargeError,
    ImageTooSmallError,
    InvalidImageError,
    InvalidParameterError,
    ModelError,
    ModelMismatchError,
    NoFaceError,
    NotFoundError,
    ThrottledError,
    UnavailableError,
    VideoTooLargeError,
)
from facesearch.shapes.base import public_message

log = logging.getLogger("facesearch.api")

AMZ_JSON = "application/x-amz-json-1.1"


class AuthenticationError(FaceSearchError):
    """The request does not prove which access key sent it."""

    code = "unauthenticated"


class MissingAuthError(AuthenticationError):
    code = "missing_authentication"


class IncompleteSignatureError(AuthenticationError):
    code = "incomplete_signature"


class UnknownKeyError(AuthenticationError):
    code = "unknown_access_key"


class SignatureMismatchError(AuthenticationError):
    code = "invalid_signature"


class SignatureExpiredError(SignatureMismatchError):
    code = "signature_expired"


class ReplayedRequestError(SignatureMismatchError):
    """A SigV4 signature already accepted within the clock-skew window (a replay)."""

    code = "replayed_request"


class QueueFullError(ThrottledError):
    """Every inference worker is busy and the wait queue is full."""

    code = "overloaded"


class RequestTooLargeError(ImageTooLargeError):
    """The request body is over the server's size limit."""

    code = "request_too_large"


class InvalidPaginationTokenError(InvalidParameterError):
    code = "invalid_pagination_token"


class InvalidS3ObjectError(InvalidParameterError):
    """An ``Image.S3Object`` cannot be read (or no S3 store is configured)."""

    code = "invalid_s3_object"


class UnknownOperationError(InvalidParameterError):
    code = "unknown_operation"


class SerializationError(InvalidParameterError):
    """The request body is not the JSON (or form) the operation expects."""

    code = "serialization_error"


class InternalError(FaceSearchError):
    code = "internal_error"


@dataclass(frozen=True)
class Mapping:
    """Native HTTP status; Rekognition error code and HTTP status."""

    status: int
    aws_code: str
    aws_status: int = 400


ERRORS: dict[type[FaceSearchError], Mapping] = {
    # the HTTP layer's own
    MissingAuthError: Mapping(401, "MissingAuthenticationTokenException", 403),
    IncompleteSignatureError: Mapping(401, "IncompleteSignatureException", 403),
    UnknownKeyError: Mapping(401, "UnrecognizedClientException", 403),
    SignatureMismatchError: Mapping(401, "InvalidSignatureException", 403),
    AuthenticationError: Mapping(401, "AccessDeniedException", 403),
    QueueFullError: Mapping(503, "ThrottlingException"),
    # a backend down: Rekognition's "temporarily unable to process the request" (HTTP 500)
    UnavailableError: Mapping(503, "ThrottlingException", 500),
    RequestTooLargeError: Mapping(413, "ImageTooLargeException"),
    InvalidPaginationTokenError: Mapping(400, "InvalidPaginationTokenException"),
    InvalidS3ObjectError: Mapping(400, "InvalidS3ObjectException"),
    UnknownOperationError: Mapping(400, "UnknownOperationException"),
    SerializationError: Mapping(400, "SerializationException"),
    InternalError: Mapping(500, "InternalServerError", 500),
    # the engine's
    AccessDeniedError: Mapping(403, "AccessDeniedException", 403),
    ThrottledError: Mapping(429, "ThrottlingException"),
    ImageTooLargeError: Mapping(413, "ImageTooLargeException"),
    VideoTooLargeError: Mapping(413, "VideoTooLargeException"),
    IdempotencyMismatchError: Mapping(409, "IdempotentParameterMismatchException"),
    ImageTooSmallError: Mapping(400, "InvalidParameterException"),
    InvalidImageError: Mapping(400, "InvalidImageFormatException"),
    NoFaceError: Mapping(422, "InvalidParameterException"),
    NotFoundError: Mapping(404, "ResourceNotFoundException"),
    AlreadyExistsError: Mapping(409, "ResourceAlreadyExistsException"),
    ConflictError: Mapping(409, "ConflictException"),
    ModelMismatchError: Mapping(409, "InvalidParameterException"),
    InvalidParameterError: Mapping(400, "InvalidParameterException"),
    ModelError: Mapping(500, "InternalServerError", 500),
    EncryptionError: Mapping(500, "InternalServerError", 500),
    FaceSearchError: Mapping(500, "InternalServerError", 500),
}

AWS_OVERRIDES: dict[tuple[str, type[FaceSearchError]], str] = {
    # Rekognition's CreateUser reports an existing user as a conflict.
    ("CreateUser", AlreadyExistsError): "ConflictException",
    # SearchFaces with a face id the collection lacks is a bad argument, not a missing
    # resource (clients read ResourceNotFoundException as "the collection is gone"); natively
    # it stays 404 face_not_found.
    ("SearchFaces", FaceNotFoundError): "InvalidParameterException",
    ("SearchUsers", FaceNotFoundError): "InvalidParameterException",  # its FaceId, likewise
    # A stream processor's name in use, or one already running.
    ("CreateStreamProcessor", AlreadyExistsError): "ResourceInUseException",
    ("StartStreamProcessor", ConflictError): "ResourceInUseException",
    # The camera a Kinesis video stream ARN names is an argument, not the processor.
    ("CreateStreamProcessor", CameraNotFoundError): "InvalidParameterException",
    # Its collection too: the model lists no ResourceNotFoundException for it.
    ("CreateStreamProcessor", NotFoundError): "InvalidParameterException",
    ("StartStreamProcessor", CameraNotFoundError): "InvalidParameterException",
}


def mapping(exc: FaceSearchError) -> Mapping:
    """The entry of the nearest class of ``exc`` in :data:`ERRORS`."""
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]  # type: ignore[index]
    return ERRORS[FaceSearchError]


def aws_code(exc: FaceSearchError, operation: str | None) -> str:
    for cls in type(exc).__mro__:
        override = AWS_OVERRIDES.get((operation or "", cls))  # type: ignore[arg-type]
        if override is not None:
            return override
    return mapping(exc).aws_code


def _retry_headers(exc: FaceSearchError) -> dict[str, str]:
    if isinstance(exc, ThrottledError):
        return {"Retry-After": str(max(1, int(exc.retry_after)))}
    return {}


def native_error(exc: FaceSearchError) -> JSONResponse:
    return JSONResponse({"code": exc.code, "message": public_message(exc.message)},
                        status_code=mapping(exc).status, headers=_retry_headers(exc))


def rekognition_error(exc: FaceSearchError, operation: str | None,
                      request_id: str) -> JSONResponse:
    code = aws_code(exc, operation)
    return JSONResponse({"__type": code, "message": public_message(exc.message)},
                        status_code=mapping(exc).aws_status, media_type=AMZ_JSON,
                        headers={"x-amzn-RequestId": request_id, "x-amzn-ErrorType": code,
                                 **_retry_headers(exc)})


def is_rekognition(request: Request) -> bool:
    """The Rekognition endpoint is ``POST /``."""
    return request.url.path == "/"


def error_response(request: Request, exc: FaceSearchError) -> JSONResponse:
    """The error response in the shape of the endpoint the request was sent to."""
    if is_rekognition(request):
        state = request.scope.get("state", {})
        return rekognition_error(exc, state.get("operation"), state.get("request_id", ""))
    return native_error(exc)


async def on_facesearch_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FaceSearchError)
    return error_response(request, exc)


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for e in exc.errors()[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return error_response(request, InvalidParameterError("; ".join(parts) or "invalid request"))


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own (unknown path, wrong method): the native error shape."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse({"code": code, "message": str(exc.detail)}, status_code=exc.status_code,
                        headers=exc.headers)


async def on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: answered as an internal error; Starlette re-raises it, so it is logged with its
    traceback."""
    return error_response(request, InternalError("internal error"))
