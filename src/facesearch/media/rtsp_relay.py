"""The one way FFmpeg reaches an RTSP camera: through a loopback relay the egress policy owns.

FFmpeg follows an RTSP ``3xx`` answer to any host (it has no option to stop that), and it
resolves the host name itself. So FFmpeg is never handed a camera's address: :class:`RtspRelay`
resolves the host once through the :class:`~facesearch.media.webhook.EgressPolicy`, connects to
an address the policy allowed (no second DNS answer can differ), and gives FFmpeg
``rtsp://127.0.0.1:PORT/...`` with interleaved TCP transport (so FFmpeg opens no other
connection and sends no UDP anywhere). The relay passes RTSP messages both ways, rewriting only
the request line's ``rtsp://127.0.0.1:PORT`` back to the camera's own URL, and cuts the
session on any redirect (a ``3xx`` answer, a ``Location`` header or a server ``REDIRECT``
request): a redirect is never followed.

``rtsps://`` cameras are reached over TLS by the relay (FFmpeg's plain RTSP runs on loopback);
as with FFmpeg's own TLS default, the camera's certificate is not verified.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from urllib.parse import SplitResult, urlsplit, urlunsplit

from facesearch.media.webhook import EgressPolicy, EgressRefusedError

log = logging.getLogger(__name__)

MAX_HEADER = 64 * 1024
"""Bytes of one RTSP message's start line and headers."""
MAX_BODY = 1024 * 1024
"""Bytes of one RTSP message's body (an SDP description)."""
RECV = 64 * 1024
"""Bytes read from a socket at a time."""


class _Cut(Exception):
    """The session must end (a redirect, a malformed message, or a closed side)."""


class RtspRelay:
    """One RTSP session relayed from a loopback listener to a checked camera address."""

    def __init__(self, url: str, egress: EgressPolicy, *, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("rtsp", "rtsps") or not parts.hostname:
            raise EgressRefusedError("a stream input must be an rtsp:// or rtsps:// URL")
        try:
            port = parts.port or (322 if parts.scheme == "rtsps" else 554)
        except ValueError:
            raise EgressRefusedError("the stream input has an invalid port") from None
        addresses = egress.addresses(parts.hostname, port, "stream input")
        self.upstream = self._connect(addresses, port, timeout_s, parts)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(timeout_s)
        self.port: int = self.listener.getsockname()[1]
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        self._upstream_prefix = urlunsplit((parts.scheme, netloc, "", "", "")).encode()
        self._local_prefix = f"rtsp://127.0.0.1:{self.port}".encode()
        userinfo = parts.netloc.rpartition("@")[0]
        local_netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else \
            f"127.0.0.1:{self.port}"
        self.url = urlunsplit(("rtsp", local_netloc, parts.path, parts.query, ""))
        """What FFmpeg opens (with the camera's credentials, on loopback)."""
        self._client: socket.socket | None = None
        self._closed = threading.Event()
        threading.Thread(target=self._serve, name="rtsp-relay", daemon=True).start()

    @staticmethod
    def _connect(addresses: list[str], port: int, timeout_s: float,
                 parts: SplitResult) -> socket.socket:
        last: OSError | None = None
        for addr in addresses:
            try:
                sock = socket.create_connection((addr, port), timeout=timeout_s)
            except OSError as exc:
                last = exc
                continue
            if parts.scheme == "rtsps":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                sock = ctx.wrap_socket(sock, server_hostname=parts.hostname)
            sock.settimeout(None)
            return sock
        raise OSError("the stream input could not be reached") from last

    def _serve(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            self.close()
            return
        finally:
            self.listener.close()
        client.settimeout(None)
        self._client = client
        threading.Thread(target=self._pump, args=(client, self.upstream, True),
                         name="rtsp-relay-up", daemon=True).start()
        self._pump(self.upstream, client, False)

    def _pump(self, src: socket.socket, dst: socket.socket, to_camera: bool) -> None:
        buf = b""
        try:
            while True:
                message, buf = self._next(src, buf)
                dst.sendall(self._rewrite(message) if to_camera else self._check(message))
        except _Cut as cut:
            if str(cut):
                log.warning("RTSP relay: %s; the session is cut", cut)
        except OSError:
            pass
        finally:
            self.close()

    @staticmethod
    def _next(src: socket.socket, buf: bytes) -> tuple[bytes, bytes]:
        """The next whole message (an RTSP message or a ``$`` interleaved frame) and the
        bytes after it."""
        while True:
            if buf[:1] == b"$" and len(buf) >= 4:
                end = 4 + int.from_bytes(buf[2:4], "big")
                if len(buf) >= end:
                    return buf[:end], buf[end:]
            elif buf and buf[:1] != b"$":
                head_end = buf.find(b"\r\n\r\n")
                if head_end >= 0:
                    end = head_end + 4 + _content_length(buf[:head_end])
                    if len(buf) >= end:
                        return buf[:end], buf[end:]
                elif len(buf) > MAX_HEADER:
                    raise _Cut("an RTSP message header is too long")
            chunk = src.recv(RECV)
            if not chunk:
                raise _Cut("")
            buf += chunk

    def _rewrite(self, message: bytes) -> bytes:
        """A request to the camera with the relay's own URL in its request line replaced by
        the camera's."""
        if message[:1] == b"$":
            return message
        line, sep, rest = message.partition(b"\r\n")
        method, _, tail = line.partition(b" ")
        uri, _, version = tail.partition(b" ")
        if uri.startswith(self._local_prefix):
            uri = self._upstream_prefix + uri[len(self._local_prefix):]
        return b" ".join((method, uri, version)) + sep + rest

    @staticmethod
    def _check(message: bytes) -> bytes:
        """A message from the camera, unless it redirects (then :class:`_Cut`)."""
        if message[:1] == b"$":
            return message
        head = message.split(b"\r\n\r\n", 1)[0]
        lines = head.split(b"\r\n")
        start = lines[0].split(b" ")
        if start[0].startswith(b"RTSP/") and len(start) > 1 and start[1][:1] == b"3":
            raise _Cut(f"redirect {start[1].decode(errors='replace')} refused")
        if start[0].upper() == b"REDIRECT":
            raise _Cut("server REDIRECT refused")
        if any(h.split(b":", 1)[0].strip().lower() == b"location" for h in lines[1:]):
            raise _Cut("Location header refused")
        return message

    def close(self) -> None:
        """End the session (both sides); idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        for s in (self.listener, self._client, self.upstream):
            if s is None:
                continue
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            v = value.strip()
            if not v.isdigit() or int(v) > MAX_BODY:
                raise _Cut("an RTSP message has a bad Content-Length")
            return int(v)
    return 0
