"""Shared limits and the validators of identifiers, as every interface applies them.

The CLI's options, the HTTP models and the services use these names; none repeats a number.
"""

from __future__ import annotations

import math
import uuid

from facesearch.errors import InvalidParameterError

MAX_RESULTS = 4096
"""Most candidates one search returns, faces one image indexes, ids one request names, or
faces one page lists (Rekognition's MaxFaces limit)."""
DEFAULT_MAX_RESULTS = 10
"""Candidates a search returns unless told otherwise."""
DEFAULT_PAGE = 100
"""Faces, users or events a list returns unless told otherwise."""
MAX_REVIEW_NOTE = 4000
"""Characters of an analyst's note on a review."""
MAX_INLINE_IMAGE_BYTES = 5 * 1024 * 1024
"""Largest image sent inline (Rekognition's ``Image.Bytes``, 5 MB, before base64); larger
images (up to the image byte limit, 15 MB) come as S3 objects."""
MAX_TAGS = 200
"""Tags one resource (collection, stream processor) may carry (as Rekognition's)."""
MAX_TAG_KEY = 128
"""Characters of a tag key (1 at least)."""
MAX_TAG_VALUE = 256
"""Characters of a tag value (0 allowed)."""

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def collection_name(name: str) -> str:
    """Collection names: 1-255 of ``[a-zA-Z0-9_.-]`` (as Rekognition's CollectionId)."""
    if not 1 <= len(name) <= 255 or not set(name) <= _NAME_CHARS:
        raise InvalidParameterError(
            f"invalid collection name {name!r}: use 1-255 letters, digits, '_', '.' or '-'")
    return name


def megabytes(n: float) -> str:
    """A byte count as the limits are stated: MB of 2**20 bytes (15 MB is 15 * 2**20), rounded
    up to 0.01 MB (so that a size just over a limit never reads as the limit)."""
    text = f"{math.ceil(n / 2**20 * 100) / 100:.2f}".rstrip("0").rstrip(".")
    return f"{text} MB"


def threshold(value: float | None) -> float | None:
    """A similarity threshold, 0-100 (None: the collection's default)."""
    if value is not None and not 0.0 <= float(value) <= 100.0:
        raise InvalidParameterError(f"threshold must be between 0 and 100, got {value}")
    return None if value is None else float(value)


def count(value: int, what: str = "max results") -> int:
    """A count of results, faces or page entries: 1 to :data:`MAX_RESULTS`."""
    if not 1 <= int(value) <= MAX_RESULTS:
        raise InvalidParameterError(f"{what} must be between 1 and {MAX_RESULTS}, got {value}")
    return int(value)


def face_id(value: str) -> str:
    """Face ids are UUIDs."""
    try:
        uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidParameterError(f"invalid face id {value!r}: expected a UUID") from None
    return value


def external_id(value: str) -> str:
    """External ids: 1-255 characters, no control characters."""
    if not 1 <= len(value) <= 255 or any(c in value for c in "\x00\n\r"):
        raise InvalidParameterError(
            f"invalid external id {value!r}: 1-255 characters, no control characters")
    return value
