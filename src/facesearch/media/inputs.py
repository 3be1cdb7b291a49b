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

import io
import logging
import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

import av
import av.container
import httpx

from facesearch.errors import (
    InvalidParameterError,
    InvalidVideoError,
)
from facesearch.media.rtsp_relay import RtspRelay
from facesearch.media.webhook import OPEN, EgressPolicy, EgressRefusedError

log = logging.getLogger(__name__)

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


AVIO_FLAG_WRITE = 2
"""FFmpeg's ``AVIO_FLAG_WRITE`` (an ``io_open`` call that would write)."""
HTTP_BUFFER = 64 * 1024
"""Bytes read from a network response at a time."""


class _Body(io.RawIOBase):
    """A checked HTTP(S) response body read by FFmpeg (through PyAV's ``io_open``); seekable
    (by a new ``Range`` request through the same checks) when the server says it accepts
    byte ranges and gives the length."""

    def __init__(self, fetcher: EgressFetcher, url: str, response: httpx.Response) -> None:
        super().__init__()
        self._fetcher = fetcher
        self._url = url
        self._response = response
        self._chunks = response.iter_raw(HTTP_BUFFER)
        self._buffer = b""
        self._pos = 0
        length = response.headers.get("content-length", "")
        self._length = int(length) if length.isdigit() else None
        self._ranges = (response.headers.get("accept-ranges", "").lower() == "bytes"
                        and self._length is not None)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._ranges

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        want = HTTP_BUFFER if size is None or size < 0 else size
        while len(self._buffer) < want:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            self._buffer += chunk
        out, self._buffer = self._buffer[:want], self._buffer[want:]
        self._pos += len(out)
        return out

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            offset += self._length or 0
        if offset == self._pos:
            return self._pos
        if not self._ranges:
            raise OSError("the input is not seekable")
        self._response.close()
        self._response = self._fetcher.get(self._url, start=offset)
        self._chunks = self._response.iter_raw(HTTP_BUFFER)
        self._buffer = b""
        self._pos = offset
        return offset

    def close(self) -> None:
        self._response.close()
        super().close()


class EgressFetcher:
    """PyAV's ``io_open`` for HTTP(S) inputs: every URL FFmpeg opens for one (the input
    itself, an HLS playlist's variants, segments and keys) is fetched here, with its host
    checked by the :class:`EgressPolicy` before each request, http(s) only, and redirects
    refused (a 3xx answer is an error, never followed), so an allowed host cannot point
    FFmpeg at a loopback, link-local or private address."""

    def __init__(self, egress: EgressPolicy, timeout_s: float) -> None:
        self.egress = egress
        self.client = httpx.Client(timeout=timeout_s, follow_redirects=False)

    def get(self, url: str, *, start: int = 0) -> httpx.Response:
        """A streamed, checked GET of ``url`` from byte ``start``; OSError when refused."""
        if urlsplit(url).scheme not in ("http", "https"):
            raise EgressRefusedError("a network input may only name http(s) URLs")
        self.egress.check_url(url, "stream input")
        headers = {"Range": f"bytes={start}-"} if start else {}
        try:
            r = self.client.send(self.client.build_request("GET", url, headers=headers),
                                 stream=True, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise OSError(f"{type(exc).__name__}: the input could not be fetched") from None
        if not 200 <= r.status_code < 300:
            r.close()
            what = "redirect (not followed)" if r.is_redirect else "answer"
            log.warning("network input %s: HTTP %d %s", redact_url(url), r.status_code, what)
            raise OSError(f"HTTP {r.status_code} {what}")
        return r

    def __call__(self, url: str, flags: int, options: Mapping[str, str]) -> _Body:
        if flags & AVIO_FLAG_WRITE:
            raise EgressRefusedError("a network input is never written")
        return _Body(self, url, self.get(url))

    def close(self) -> None:
        self.client.close()


def open_input(target: str, input_format: str | None = None, *,
               options: Mapping[str, str] | None = None,
               timeout: float | tuple[float, float] | None = None,
               egress: EgressPolicy = OPEN) -> av.container.InputContainer:
    """Open ``target`` (a local path, a network URL or a V4L2 device, as
    :func:`classify_input` returns it) for decoding, with FFmpeg held to the demuxers of
    :func:`allowed_formats` (``format_whitelist``, so format guessing cannot choose a
    playlist such as ``hls`` or ``concat`` for a file) and to the protocols of
    :data:`FFMPEG_PROTOCOLS` (``protocol_whitelist``; a local file is opened as ``file:``
    with its absolute path, so no protocol prefix in its name is honoured).

    A local file FFmpeg refuses to open this way is :class:`InvalidVideoError` with
    :data:`FILE_REFUSED` (no path in the message); other FFmpeg errors propagate as
    ``av.FFmpegError`` for the caller to word.

    An HTTP(S) input is fetched by an :class:`EgressFetcher` (``io_open``): each URL FFmpeg
    opens for it is checked against ``egress`` and no redirect is followed. An RTSP input is
    reached through an :class:`~facesearch.media.rtsp_relay.RtspRelay` (interleaved TCP): the
    policy resolves and connects, and a redirect cuts the session."""
    kind = input_kind(target, input_format)
    formats = allowed_formats(kind)
    if input_format is not None and input_format not in formats:
        raise InvalidParameterError(f"input format {input_format!r} is not allowed here")
    opts = dict(options or {})
    opts["protocol_whitelist"] = FFMPEG_PROTOCOLS[kind]
    opts["format_whitelist"] = ",".join(sorted(formats))
    url = "file:" + os.path.abspath(target) if kind == "file" else target
    fetcher = None
    relay = None
    if kind == "rtsp":
        # FFmpeg reaches the camera only through the relay (no redirect, no second DNS).
        open_s = timeout[0] if isinstance(timeout, tuple) else timeout
        relay = RtspRelay(target, egress, timeout_s=open_s or 10.0)
        url = relay.url
        opts["rtsp_transport"] = "tcp"
    if kind == "http":
        opts.update(http_persistent="0", http_multiple="0")  # every request through io_open
        read_s = timeout[1] if isinstance(timeout, tuple) else timeout
        fetcher = EgressFetcher(egress, read_s or 30.0)
    try:
        container = av.open(url, format=input_format, options=opts, timeout=timeout,
                            metadata_errors="ignore", io_open=fetcher)
    except (av.error.ArgumentError, av.error.InvalidDataError,
            av.error.PatchWelcomeError) as exc:
        _release(relay, fetcher)
        if kind == "file":
            raise InvalidVideoError(FILE_REFUSED) from exc
        raise
    except BaseException:
        _release(relay, fetcher)
        raise
    if not set(container.format.name.split(",")) & formats:
        # Defence in depth: FFmpeg has already checked format_whitelist.
        container.close()
        raise InvalidVideoError(f"FFmpeg format {container.format.name!r} is not allowed")
    return container


def _release(relay: RtspRelay | None, fetcher: EgressFetcher | None) -> None:
    """Close what :func:`open_input` opened for an input FFmpeg could not open."""
    if relay is not None:
        relay.close()
    if fetcher is not None:
        fetcher.close()


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


CREDENTIALS_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s/@:\"']*):[^\s/@]*@")
"""``scheme://user:password@`` anywhere in a text."""


def redact_credentials(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it masked (for log
    lines and error texts: FFmpeg's errors name the URL they opened)."""
    return CREDENTIALS_RE.sub(r"\1\2:***@", text)


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
