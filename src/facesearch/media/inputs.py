"""Which stream inputs a processor may open: the allow-list of schemes, devices and FFmpeg
formats, and the protocols FFmpeg may use for each.

Files by path (or ``file://``; the HTTP API keeps them under its video roots), ``rtsp``,
``rtsps``, ``http`` and ``https`` (whose hosts must also pass the
:class:`~facesearch.media.webhook.EgressPolicy`), and local V4L2 cameras (``/dev/videoN``)
only where allowed. Playlist formats that name further files (``hls`` for files, ``concat``)
are refused, and FFmpeg is held to the input's own protocols (``protocol_whitelist``).

Every FFmpeg input of facesearch is opened by
:func:`facesearch.video.containers.open_container`, which holds FFmpeg to the allowed
demuxers (``format_whitelist``: format guessing cannot pick a playlist) and protocols, and
checks the demuxer it got: video files directly (video jobs, their frames), stream processors'
and cameras' inputs through :func:`open_input`, which first connects a network input past the
egress policy.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

import av.container
import httpx

from facesearch.errors import InvalidParameterError
from facesearch.media.rtsp_relay import RtspRelay
from facesearch.media.webhook import OPEN, EgressPolicy, EgressRefusedError
from facesearch.video.containers import (
    DEVICE_RE,
    FILE_FORMATS,
    NETWORK_FORMATS,
    check_format,
    input_kind,
    open_container,
)

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
"""The network inputs a processor may open (no rtmp, srt, udp or tcp listeners)."""


INPUT_REFUSED = "the input could not be opened or read; reconnecting"
"""The one error text a client sees for a failing input (details go to the server log)."""


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
    :func:`classify_input` returns it) for decoding with
    :func:`facesearch.video.containers.open_container` (FFmpeg held to the demuxers and
    protocols allowed for its kind; a refused local file is
    :class:`~facesearch.errors.InvalidVideoError`).

    An HTTP(S) input is fetched by an :class:`EgressFetcher` (``io_open``): each URL FFmpeg
    opens for it is checked against ``egress`` and no redirect is followed. An RTSP input is
    reached through an :class:`~facesearch.media.rtsp_relay.RtspRelay` (interleaved TCP): the
    policy resolves and connects, and a redirect cuts the session."""
    kind = input_kind(target, input_format)
    check_format(kind, input_format)
    opts = dict(options or {})
    url = None
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
    return open_container(target, input_format, options=opts, timeout=timeout, url=url,
                          io_open=fetcher, on_error=lambda: _release(relay, fetcher))


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
