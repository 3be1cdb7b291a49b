"""Which stream inputs a processor may open: the allow-list of schemes, devices and FFmpeg
formats, and the protocols FFmpeg may use for each.

Files by path (or ``file://``; the HTTP API keeps them under its video roots), ``rtsp``,
``rtsps``, ``http`` and ``https`` (whose hosts must also pass the
:class:`~facesearch.media.webhook.EgressPolicy`), and local V4L2 cameras (``/dev/videoN``)
only where allowed. Playlist formats that name further files (``hls`` for files, ``concat``)
are refused, and FFmpeg is held to the input's own protocols (``protocol_whitelist``).
"""

from __future__ import annotations

import re

from facesearch.errors import (
    InvalidParameterError,
)

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
"""The network inputs a processor may open (no rtmp, srt, udp or tcp listeners)."""


NETWORK_FORMATS = frozenset({"mpjpeg", "mjpeg", "hls", "rtsp"})
"""FFmpeg formats allowed for a network input (None: FFmpeg guesses)."""


FILE_FORMATS = frozenset({"mov", "mp4", "matroska", "webm", "avi", "mpegts", "mjpeg", "flv",
                          "h264", "hevc"})
"""FFmpeg formats allowed for a file input: containers only (no playlists such as hls or
concat, which name other files)."""


DEVICE_RE = re.compile(r"^/dev/video[0-9]{1,3}$")


INPUT_REFUSED = "the input could not be opened or read; reconnecting"
"""The one error text a client sees for a failing input (details go to the server log)."""


FFMPEG_PROTOCOLS = {"file": "file", "rtsp": "rtsp,rtsps,rtp,srtp,udp,tcp,tls",
              "http": "http,https,tcp,tls,crypto,httpproxy"}


def classify_input(url: str, input_format: str | None, *,
                   allow_devices: bool = True) -> tuple[str, str | None, bool]:
    """``(what to open, FFmpeg format, whether it is a file played as a camera)``.

    Allowed: ``rtsp``/``rtsps``/``http``/``https`` URLs (formats of :data:`NETWORK_FORMATS`),
    files (``file://`` or a path; formats of :data:`FILE_FORMATS`) and, when
    ``allow_devices``, V4L2 devices ``/dev/videoN`` (or ``v4l2:///dev/videoN``; format v4l2).
    Anything else is :class:`InvalidParameterError`."""
    fmt = input_format or None
    if url.startswith(("v4l2://", "/dev/")):
        target = url[len("v4l2://"):] if url.startswith("v4l2://") else url
        if not DEVICE_RE.match(target) or fmt not in (None, "v4l2"):
            raise InvalidParameterError("a local camera input is /dev/videoN (or "
                                        "v4l2:///dev/videoN) with input format v4l2")
        if not allow_devices:
            raise InvalidParameterError("local camera devices are not allowed on this server")
        return target, "v4l2", False
    if url.startswith(NETWORK_SCHEMES):
        if fmt is not None and fmt not in NETWORK_FORMATS:
            raise InvalidParameterError(f"input format {fmt!r} is not allowed for a network "
                                        f"input; use one of {', '.join(sorted(NETWORK_FORMATS))}")
        return url, fmt, False
    path = url[len("file://"):] if url.startswith("file://") else url
    if "://" in path or "|" in path:
        raise InvalidParameterError(f"unsupported stream input {url!r}: use rtsp://, http(s)://, "
                                    "/dev/videoN or a file path")
    if fmt is not None and fmt not in FILE_FORMATS:
        raise InvalidParameterError(f"input format {fmt!r} is not allowed for a file input; use "
                                    f"one of {', '.join(sorted(FILE_FORMATS))}")
    return path, fmt, True


def redact_url(url: str | None) -> str | None:
    """``url`` with the password of its user info masked."""
    if url is None or "://" not in url:
        return url
    scheme, _, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{hostport}{slash}{tail}"
