"""Typed errors. Each carries a stable ``code`` and a message a person understands.

The outer layers (CLI, HTTP) map these classes to exit codes and HTTP statuses in one place
each; nothing below them knows about HTTP.
"""

from __future__ import annotations


class FaceSearchError(Exception):
    """Base class of every error facesearch raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParameterError(FaceSearchError):
    """An argument is out of range or malformed."""

    code = "invalid_parameter"


class CandidateNotFoundError(InvalidParameterError):
    """A review names a face that was not a candidate of the search."""

    code = "not_a_candidate"


class ProbeQualityError(InvalidParameterError):
    """A probe face too poor to search with under the collection's policy (its
    recognisability is below the policy's floor)."""

    code = "probe_quality"


class InvalidImageError(FaceSearchError):
    """The bytes are not an image facesearch can decode."""

    code = "invalid_image"


class ImageTooLargeError(InvalidImageError):
    """The image exceeds the byte or pixel limit."""

    code = "image_too_large"


class ImageTooSmallError(InvalidImageError):
    """The image is smaller than the minimum side length."""

    code = "image_too_small"


class NoFaceError(FaceSearchError):
    """An operation that needs a face found none in the image."""

    code = "no_face"


class NotFoundError(FaceSearchError):
    code = "not_found"


class CollectionNotFoundError(NotFoundError):
    code = "collection_not_found"


class FaceNotFoundError(NotFoundError):
    code = "face_not_found"


class UserNotFoundError(NotFoundError):
    code = "user_not_found"


class SearchNotFoundError(NotFoundError):
    """A review names a search that is not in the audit trail."""

    code = "search_not_found"


class AlreadyExistsError(FaceSearchError):
    code = "already_exists"


class ConflictError(FaceSearchError):
    """The request contradicts the current state (for example, a face already owned by a user)."""

    code = "conflict"


class ModelMismatchError(FaceSearchError):
    """A collection's vectors were made by another face model than the one in use."""

    code = "model_mismatch"


class ModelError(FaceSearchError):
    """A model file is missing, corrupt, or cannot be converted."""

    code = "model_error"


class ThrottledError(FaceSearchError):
    """Too many requests: a rate limit or a full work queue. Retry after ``retry_after`` s."""

    code = "throttled"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnavailableError(ThrottledError):
    """A backend the operation needs (the database, the Milvus server) does not answer now:
    answered at once (HTTP 503; Rekognition's ThrottlingException, which clients retry),
    never after a long wait; the service recovers by itself when the backend is back.
    ``kind``: which backend (``database``, ``milvus``), for logs and readiness."""

    code = "unavailable"

    def __init__(self, message: str, kind: str = "backend", retry_after: int = 2) -> None:
        super().__init__(message, retry_after)
        self.kind = kind


class AccessDeniedError(FaceSearchError):
    """The caller's role or key does not allow this operation."""

    code = "access_denied"


class DelegationEndedError(AccessDeniedError):
    """A search on behalf of whoever created a video job or a stream processor, whose access
    key may no longer act (revoked, expired, deleted); the message says which and why."""


class EncryptionError(FaceSearchError):
    """Encrypted data cannot be read: the key is missing or wrong, or the data is corrupt."""

    code = "encryption_error"


class InvalidVideoError(InvalidParameterError):
    """The input is not a video facesearch can decode (no video stream, unknown format)."""

    code = "invalid_video"


class VideoTooLargeError(InvalidVideoError):
    """The video exceeds the size limit."""

    code = "video_too_large"


class JobNotFoundError(NotFoundError):
    code = "job_not_found"


class StreamProcessorNotFoundError(NotFoundError):
    code = "stream_processor_not_found"


class CameraNotFoundError(NotFoundError):
    """A camera name that the operator has not configured (``facesearch cameras add``)."""

    code = "camera_not_found"


class IdempotencyMismatchError(ConflictError):
    """A client request token was reused for a different request."""

    code = "idempotency_mismatch"


class DatabaseError(FaceSearchError):
    """The database cannot be used as configured: an unsupported URL, a schema newer than this
    version of facesearch, or a migration the database role may not make."""

    code = "database"


class BackendError(FaceSearchError):
    """An engine the service runs on (a Milvus server, a Ray cluster) is missing, unreachable
    or failed."""

    code = "backend_error"
