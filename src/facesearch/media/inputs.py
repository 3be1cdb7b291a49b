"""Which stream inputs a processor may open: the allow-list of schemes, devices and FFmpeg
formats, and the protocols FFmpeg may use for each.

Files by path (or ``file://``; the HTTP API keeps them under its video roots), ``rtsp``,
``rtsps``, ``http`` and ``https`` (whose hosts must also pass the
:class:`~facesearch.media.webhook.EgressPolicy`), and local V4L2 cameras (``/dev/videoN``)
only where allowed. Playlist formats that name further files (``hls`` for files, ``concat``)
are refused, and FFmpeg is held to the input's own protocols (``protocol_whitelist``).

Every FFmpeg input of facesearch (video jobs, their frames, stream processors, cameras) is
opened by :func:`open_input`, which holds FFmpeg to the allowed demuxers
(``format_whitelist``: format guessing cannot pick a playlist) and protocols, and checks the
demuxer it got.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import av
import av.container

from facesearch.errors import (
    InvalidParameterError,
    InvalidVideoError,
)

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
"""The network inputs a processor may open (no rtmp, srt, udp or tcp listeners)."""


NETWORK_FORMATS = frozenset({"mpjpeg", "mjpeg", "hls", "rtsp"})
"""FFmpeg formats allowed for a network input (None: FFmpeg guesses)."""


FILE_FORMATS = frozenset({"mov", "mp4", "matroska", "webm", "avi", "mpegts", "mjpeg", "flv",
                          "h264", "hevc"})
"""FFmpeg formats allowed for a file input: containers only (no playlists such as hls or
concat, which name other files)."""


DEVICE_FORMATS = frozenset({"v4l2"})
"""FFmpeg formats allowed for a local camera device."""


DEVICE_RE = re.compile(r"^/dev/video[0-9]{1,3}$")


INPUT_REFUSED = "the input could not be opened or read; reconnecting"
"""The one error text a client sees for a failing input (details go to the server log)."""


FFMPEG_PROTOCOLS = {"file": "file", "rtsp": "rtsp,rtsps,rtp,srtp,udp,tcp,tls",
                    "http": "http,https,tcp,tls,crypto,httpproxy", "device": "file"}


FILE_REFUSED = ("not a video in an allowed container (MP4, MOV, Matroska/WebM, AVI, MPEG-TS, "
                "FLV, MJPEG, raw H.264/H.265); playlists such as HLS or concat, which name other "
                "files, are refused")
"""Why a local file FFmpeg may not open was refused (no path in it)."""


def input_kind(target: str, input_format: str | None) -> str:
    """``file``, ``rtsp``, ``http`` or ``device``: which allow-lists hold for ``target`` (as
    :func:`classify_input` returns it)."""
    if input_format in DEVICE_FORMATS and DEVICE_RE.match(target):
        return "device"
    if target.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if target.startswith(("http://", "https://")):
        return "http"
    return "file"


def allowed_formats(kind: str) -> frozenset[str]:
    """The FFmpeg demuxers an input of ``kind`` may be read with."""
    if kind == "file":
        return FILE_FORMATS
    if kind == "device":
        return DEVICE_FORMATS
    return NETWORK_FORMATS | FILE_FORMATS


def open_input(target: str, input_format: str | None = None, *,
               options: Mapping[str, str] | None = None,
               timeout: float | tuple[float, float] | None = None,
               ) -> av.container.InputContainer:
    """Open ``target`` (a local path, a network URL or a V4L2 device, as
    :func:`classify_input` returns it) for decoding, with FFmpeg held to the demuxers of
    :func:`allowed_formats` (``format_whitelist``, so format guessing cannot choose a
    playlist such as ``hls`` or ``concat`` for a file) and to the protocols of
    :data:`FFMPEG_PROTOCOLS` (``protocol_whitelist``; a local file is opened as ``file:``
    with its absolute path, so no protocol prefix in its name is honoured).

    A local file FFmpeg refuses to open this way is :class:`InvalidVideoError` with
    :data:`FILE_REFUSED` (no path in the message); other FFmpeg errors propagate as
    ``av.FFmpegError`` for the caller to word."""
    kind = input_kind(target, input_format)
    formats = allowed_formats(kind)
    if input_format is not None and input_format not in formats:
        raise InvalidParameterError(f"input format {input_format!r} is not allowed here")
    opts = dict(options or {})
    opts["protocol_whitelist"] = FFMPEG_PROTOCOLS[kind]
    opts["format_whitelist"] = ",".join(sorted(formats))
    url = "file:" + os.path.abspath(target) if kind == "file" else target
    try:
        container = av.open(url, format=input_format, options=opts, timeout=timeout,
                            metadata_errors="ignore")
    except (av.error.ArgumentError, av.error.InvalidDataError,
            av.error.PatchWelcomeError) as exc:
        if kind == "file":
            raise InvalidVideoError(FILE_REFUSED) from exc
        raise
    if not set(container.format.name.split(",")) & formats:
        # Defence in depth: FFmpeg has already checked format_whitelist.
        container.close()
        raise InvalidVideoError(f"FFmpeg format {container.format.name!r} is not allowed")
    return container


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
