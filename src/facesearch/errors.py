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
