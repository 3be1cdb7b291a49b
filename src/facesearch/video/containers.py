"""The FFmpeg inputs facesearch may decode: the allow-list of demuxers and protocols per kind
of input, and :func:`open_container`, the one place FFmpeg opens an input.

A local file is opened as ``file:`` with its absolute path (no protocol prefix in its name
is honoured) and read only with container demuxers (:data:`FILE_FORMATS`: no playlist such as
``hls`` or ``concat``, which names other files). Network inputs and devices are allowed only
through :func:`facesearch.media.inputs.open_input`, which checks their hosts against the
egress policy and passes the connection it set up (an RTSP relay's URL, an HTTP fetcher) in.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import av
import av.container

from facesearch.errors import InvalidParameterError, InvalidVideoError

NETWORK_FORMATS = frozenset({"mpjpeg", "mjpeg", "hls", "rtsp"})
"""FFmpeg formats allowed for a network input (None: FFmpeg guesses)."""


FILE_FORMATS = frozenset({"mov", "mp4", "matroska", "webm", "avi", "mpegts", "mjpeg", "flv",
                          "h264", "hevc"})
"""FFmpeg formats allowed for a file input: containers only (no playlists such as hls or
concat, which name other files)."""


DEVICE_FORMATS = frozenset({"v4l2"})
"""FFmpeg formats allowed for a local camera device."""


DEVICE_RE = re.compile(r"^/dev/video[0-9]{1,3}$")


FFMPEG_PROTOCOLS = {"file": "file", "rtsp": "rtsp,rtsps,rtp,srtp,udp,tcp,tls",
                    "http": "http,https,tcp,tls,crypto,httpproxy", "device": "file"}


FILE_REFUSED = ("not a video in an allowed container (MP4, MOV, Matroska/WebM, AVI, MPEG-TS, "
                "FLV, MJPEG, raw H.264/H.265); playlists such as HLS or concat, which name other "
                "files, are refused")
"""Why a local file FFmpeg may not open was refused (no path in it)."""


def input_kind(target: str, input_format: str | None) -> str:
    """``file``, ``rtsp``, ``http`` or ``device``: which allow-lists hold for ``target`` (as
    :func:`facesearch.media.inputs.classify_input` returns it)."""
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


def check_format(kind: str, input_format: str | None) -> frozenset[str]:
    """The demuxers an input of ``kind`` may be read with;
    :class:`InvalidParameterError` when ``input_format`` is not one of them."""
    formats = allowed_formats(kind)
    if input_format is not None and input_format not in formats:
        raise InvalidParameterError(f"input format {input_format!r} is not allowed here")
    return formats


def open_container(target: str, input_format: str | None = None, *,
                   options: Mapping[str, str] | None = None,
                   timeout: float | tuple[float, float] | None = None,
                   url: str | None = None, io_open: Callable[..., Any] | None = None,
                   on_error: Callable[[], None] | None = None) -> av.container.InputContainer:
    """Open ``target`` for decoding with FFmpeg held to the demuxers of
    :func:`allowed_formats` (``format_whitelist``) and the protocols of
    :data:`FFMPEG_PROTOCOLS` (``protocol_whitelist``) of its kind (:func:`input_kind`).

    ``url`` (what FFmpeg opens instead of ``target``: a relay's) and ``io_open`` (a checked
    fetcher of network URLs) come from :func:`facesearch.media.inputs.open_input`;
    ``on_error`` is called when FFmpeg cannot open the input. A local file FFmpeg refuses is
    :class:`InvalidVideoError` with :data:`FILE_REFUSED` (no path in the message); other
    FFmpeg errors propagate as ``av.FFmpegError`` for the caller to word."""
    kind = input_kind(target, input_format)
    formats = check_format(kind, input_format)
    opts = dict(options or {})
    opts["protocol_whitelist"] = FFMPEG_PROTOCOLS[kind]
    opts["format_whitelist"] = ",".join(sorted(formats))
    if url is None:
        url = "file:" + os.path.abspath(target) if kind == "file" else target
    try:
        container = av.open(url, format=input_format, options=opts, timeout=timeout,
                            metadata_errors="ignore", io_open=io_open)
    except (av.error.ArgumentError, av.error.InvalidDataError,
            av.error.PatchWelcomeError) as exc:
        if on_error is not None:
            on_error()
        if kind == "file":
            raise InvalidVideoError(FILE_REFUSED) from exc
        raise
    except BaseException:
        if on_error is not None:
            on_error()
        raise
    if not set(container.format.name.split(",")) & formats:
        # Defence in depth: FFmpeg has already checked format_whitelist.
        container.close()
        raise InvalidVideoError(f"FFmpeg format {container.format.name!r} is not allowed")
    return container
