"""Cameras: the stream inputs the operator names (``facesearch cameras add NAME URL``).

A camera is a name (1-256 of ``[a-zA-Z0-9_.-]``, as a Kinesis Video Streams stream name) and an
input a stream processor can open (``rtsp``, ``rtsps``, ``http(s)``, ``/dev/videoN`` or a video
file; :func:`facesearch.media.inputs.classify_input`), with an FFmpeg input format when it
cannot be guessed. Only the operator adds cameras (the CLI, on the data directory): an API
client names a camera, never its URL, so a camera's host is not held to the egress policy and
a local device or file is allowed. A Rekognition client names a camera as the stream name of
a Kinesis Video Streams ARN (``arn:aws:kinesisvideo:REGION:ACCOUNT:stream/NAME/CREATION``,
:func:`camera_of_arn`); processors look the camera's URL up each time they start. Adding and
removing cameras is audited (with the URL's password masked). With encryption at rest on, a
camera's URL (which may hold its password) is stored sealed (``sealed:`` + base64 of the
AES-256-GCM blob, bound to the camera's name); URLs stored in clear before are still read.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from facesearch.errors import (
    AlreadyExistsError,
    CameraNotFoundError,
    EncryptionError,
    InvalidParameterError,
)
from facesearch.governance.trail import AuditTrail
from facesearch.media.inputs import classify_input, redact_url
from facesearch.storage.crypto import Sealer
from facesearch.storage.schema import cameras_t
from facesearch.storage.store import Store
from facesearch.types import Caller

CAMERA_NAME = re.compile(r"^[a-zA-Z0-9_.\-]{1,256}$")
"""A camera's name: a Kinesis Video Streams stream name."""
VIDEO_STREAM_ARN = re.compile(
    r"^arn:[a-z\d-]+:kinesisvideo:[a-z\d-]+:\d{12}:stream/([a-zA-Z0-9_.\-]{1,256})/[0-9]+$")
"""A Kinesis Video Streams ARN: ``arn:aws:kinesisvideo:REGION:ACCOUNT:stream/NAME/CREATION``."""
MAX_URL = 2048
"""Characters of a camera's URL."""


def camera_name(name: str) -> str:
    """``name`` if it is a valid camera name, else :class:`InvalidParameterError`."""
    if not CAMERA_NAME.match(name):
        raise InvalidParameterError(f"invalid camera name {name!r}: use 1-256 letters, digits, "
                                    "'_', '.' or '-'")
    return name


def camera_of_arn(arn: str) -> str:
    """The camera a Kinesis Video Streams ARN names (its stream name)."""
    m = VIDEO_STREAM_ARN.match(arn)
    if m is None:
        raise InvalidParameterError(f"invalid Kinesis video stream ARN {arn!r}: expected "
                                    "arn:aws:kinesisvideo:REGION:ACCOUNT:stream/NAME/CREATION "
                                    "(NAME: a camera configured with 'facesearch cameras add')")
    return m.group(1)


@dataclass(frozen=True)
class Camera:
    """A configured camera: its input (``url``, with credentials when the camera needs them),
    FFmpeg input format, label, who added it and when (Unix time, s)."""

    name: str
    url: str
    input_format: str | None
    label: str | None
    added_by: str
    created_at: float

    @property
    def shown_url(self) -> str:
        """The URL with its password masked (for lists and the audit trail)."""
        return redact_url(self.url) or ""


SEALED_PREFIX = "sealed:"
"""A camera URL stored sealed starts with it."""


class Cameras:
    """The cameras of one data directory (URLs sealed at rest when ``sealer`` is given)."""

    def __init__(self, store: Store, trail: AuditTrail, *,
                 clock: Callable[[], float] = time.time, sealer: Sealer | None = None) -> None:
        self.store = store
        self.trail = trail
        self.clock = clock
        self.sealer = sealer

    def _stored(self, name: str, url: str) -> str:
        if self.sealer is None:
            return url
        blob = self.sealer.seal(url.encode(), f"camera:{name}".encode())
        return SEALED_PREFIX + base64.b64encode(blob).decode()

    def _url(self, name: str, stored: str) -> str:
        if not stored.startswith(SEALED_PREFIX):
            return stored
        if self.sealer is None:
            raise EncryptionError(f"camera {name!r}: its URL is sealed; the encryption key is "
                                  "needed")
        try:
            blob = base64.b64decode(stored[len(SEALED_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise EncryptionError(f"camera {name!r}: its stored URL is damaged") from None
        return self.sealer.open(blob, f"camera:{name}".encode()).decode()

    def _camera(self, r: object) -> Camera:
        g = r._mapping  # type: ignore[attr-defined]
        return Camera(g["name"], self._url(g["name"], g["url"]), g["input_format"], g["label"],
                      g["added_by"], g["created_at"])

    def add(self, name: str, url: str, *, input_format: str | None = None,
            label: str | None = None, caller: Caller | None = None) -> Camera:
        """Configure a camera (:class:`AlreadyExistsError` if the name is taken: remove it
        first). The URL must be an input a processor may open (any host, devices too)."""
        camera_name(name)
        if not 1 <= len(url) <= MAX_URL:
            raise InvalidParameterError(f"a camera URL has 1-{MAX_URL} characters")
        if label is not None and not 1 <= len(label) <= 200:
            raise InvalidParameterError("a camera label has 1-200 characters")
        classify_input(url, input_format, allow_devices=True)
        c = caller or Caller.local()
        cam = Camera(name, url, input_format or None, label, c.actor, self.clock())
        try:
            with self.store.transaction() as conn:
                conn.execute(insert(cameras_t).values(
                    name=name, url=self._stored(name, url), input_format=cam.input_format,
                    label=label,
                    added_by=cam.added_by, created_at=cam.created_at))
        except IntegrityError:
            raise AlreadyExistsError(f"camera {name!r} already exists; remove it first") from None
        self.trail.note("camera.add", c, details={"camera": name, "url": cam.shown_url,
                                                  "input_format": cam.input_format})
        return cam

    def get(self, name: str) -> Camera:
        """The camera ``name`` (:class:`CameraNotFoundError` when there is none)."""
        with self.store.transaction() as conn:
            r = conn.execute(select(cameras_t).where(cameras_t.c.name == name)).first()
        if r is None:
            raise CameraNotFoundError(f"camera {name!r} is not configured (facesearch cameras "
                                      "add NAME URL)")
        return self._camera(r)

    def remove(self, name: str, *, caller: Caller | None = None) -> None:
        """Remove a camera (processors that name it fail to start until it is added again)."""
        with self.store.transaction() as conn:
            n = conn.execute(delete(cameras_t).where(cameras_t.c.name == name)).rowcount
        if not n:
            raise CameraNotFoundError(f"camera {name!r} is not configured")
        self.trail.note("camera.remove", caller, details={"camera": name})

    # Last in the class: below it, ``list`` in annotations would mean this method.
    def list_cameras(self) -> list[Camera]:
        """Cameras in name order."""
        with self.store.transaction() as conn:
            rows = conn.execute(select(cameras_t).order_by(cameras_t.c.name)).all()
        return [self._camera(r) for r in rows]
