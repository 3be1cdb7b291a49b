"""Network inputs cannot be steered past the egress policy (issue 26, medium: an HLS playlist on
an allowed host made FFmpeg fetch segments from 127.0.0.1, a redirect from an allowed host was
followed, and IPv6 forms that embed 127.0.0.1 passed the check).

The "allowed host" is a loopback HTTP server on 127.0.0.2 with the allow-list ``127.0.0.2/32``;
the "internal service" is another loopback server on 127.0.0.1 that records every request it
gets. All traffic stays on loopback."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import pytest

from facesearch.config import Settings
from facesearch.errors import InvalidParameterError
from facesearch.media.inputs import open_input
from facesearch.media.stream.model import StreamSettings
from facesearch.media.webhook import EgressPolicy, EgressRefusedError, embedded_ipv4
from facesearch.service import FaceSearch
from facesearch.vision.pipeline import Pipeline

from .video_helpers import LIN_PHOTO, remux_segment, wait_for, watchlist

ALLOWED = EgressPolicy.parse("127.0.0.2/32")
"""Only the "allowed host" (127.0.0.2) may be reached."""


@dataclass
class Site:
    """A loopback HTTP server serving ``files`` (path -> bytes) and ``redirects`` (path ->
    Location); ``hits`` lists every path asked for."""

    host: str
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://{self.host}:{self.server.server_address[1]}"

    def start(self) -> Site:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.hits.append(self.path)
                if self.path in site.redirects:
                    self.send_response(302)
                    self.send_header("Location", site.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = site.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def segment(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return remux_segment(tmp_path_factory.mktemp("seg") / "seg.ts").read_bytes()


@pytest.fixture
def sites(segment: bytes) -> Iterator[tuple[Site, Site]]:
    """(the allowed host on 127.0.0.2, the internal service on 127.0.0.1), both serving the
    segment."""
    allowed = Site("127.0.0.2", files={"/seg.ts": segment}).start()
    internal = Site("127.0.0.1", files={"/seg.ts": segment, "/admin.ts": segment}).start()
    yield allowed, internal
    allowed.stop()
    internal.stop()


def playlist(*segments: str) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:10", "#EXT-X-MEDIA-SEQUENCE:0"]
    for s in segments:
        lines += ["#EXTINF:2.0,", s]
    return ("\n".join(lines + ["#EXT-X-ENDLIST", ""])).encode()


def decode_all(url: str, fmt: str | None = None) -> int:
    """Frames decoded from ``url`` opened as a stream processor opens it."""
    n = 0
    with open_input(url, fmt, timeout=(10.0, 10.0), egress=ALLOWED) as c:
        for _ in c.decode(video=0):
            n += 1
    return n


def test_hls_on_the_allowed_host_plays(sites: tuple[Site, Site]) -> None:
    """The control: a playlist and its segment on the allowed host decode through the checked
    fetcher (so the refusals below are the policy's, not a broken reader)."""
    allowed, internal = sites
    allowed.files["/live.m3u8"] = playlist(f"{allowed.base}/seg.ts")
    assert decode_all(f"{allowed.base}/live.m3u8", "hls") > 10
    assert allowed.hits == ["/live.m3u8", "/seg.ts"] and internal.hits == []


def test_hls_segments_on_an_internal_host_are_never_fetched(sites: tuple[Site, Site]) -> None:
    allowed, internal = sites
    allowed.files["/live.m3u8"] = playlist(f"{internal.base}/admin.ts", f"{internal.base}/seg.ts")
    with pytest.raises((EgressRefusedError, av.FFmpegError, OSError)):
        decode_all(f"{allowed.base}/live.m3u8", "hls")
    assert internal.hits == []
    assert allowed.hits == ["/live.m3u8"]


def test_a_redirect_from_the_allowed_host_is_not_followed(sites: tuple[Site, Site]) -> None:
    allowed, internal = sites
    allowed.redirects["/cam.ts"] = f"{internal.base}/admin.ts"
    allowed.redirects["/cam.m3u8"] = f"{internal.base}/live.m3u8"
    allowed.files["/seg-redirect.m3u8"] = playlist(f"{allowed.base}/cam.ts")
    for path, fmt in (("/cam.ts", None), ("/cam.m3u8", "hls"), ("/seg-redirect.m3u8", "hls")):
        with pytest.raises((av.FFmpegError, OSError)):
            decode_all(f"{allowed.base}{path}", fmt)
    assert internal.hits == []
    assert {"/cam.ts", "/cam.m3u8", "/seg-redirect.m3u8"} <= set(allowed.hits)


def test_a_direct_internal_input_is_refused(sites: tuple[Site, Site]) -> None:
    _, internal = sites
    with pytest.raises(EgressRefusedError):
        decode_all(f"{internal.base}/seg.ts")
    assert internal.hits == []


@pytest.mark.parametrize("address", [
    "::127.0.0.1",  # IPv4-compatible
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:0:127.0.0.1",  # SIIT IPv4-translated
    "64:ff9b::7f00:1",  # NAT64 well-known prefix
    "64:ff9b:1::a9fe:a9fe",  # NAT64 local-use prefix, 169.254.169.254
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "::", "::1", "fe80::1", "fc00::1",
])
def test_ipv6_forms_of_internal_addresses_are_refused(address: str) -> None:
    strict = EgressPolicy()
    with pytest.raises(InvalidParameterError):
        strict.check_url(f"rtsp://[{address}]:554/x", "stream input")
    with pytest.raises(InvalidParameterError):
        strict.check_url(f"http://[{address}]/x", "webhook URL")


def test_ipv6_forms_of_public_addresses_pass() -> None:
    strict = EgressPolicy()
    for address in ("64:ff9b::808:808", "2002:808:808::1", "2606:4700::1111"):
        strict.check_url(f"http://[{address}]/x", "webhook URL")
    assert str(embedded_ipv4(ipaddress.ip_address("64:ff9b::7f00:1"))) == "127.0.0.1"


class Recorder:
    """A TCP listener on 127.0.0.1 (the internal service) that counts connections."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


class RedirectingRtsp:
    """An RTSP server on 127.0.0.2 (the allowed host) that answers OPTIONS and then redirects
    DESCRIBE to ``location`` with ``302 Moved Temporarily``."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.sock = socket.create_server(("127.0.0.2", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                self.requests.append(lines[0])
                cseq = next(v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
                            if k.lower() == "cseq")
                if lines[0].startswith("OPTIONS"):
                    conn.sendall(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, "
                                 "DESCRIBE, SETUP, PLAY, TEARDOWN\r\n\r\n".encode())
                else:
                    conn.sendall(f"RTSP/1.0 302 Moved Temporarily\r\nCSeq: {cseq}\r\n"
                                 f"Location: {self.location}\r\nContent-Length: 0\r\n\r\n"
                                 .encode())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def redirecting() -> Iterator[tuple[RedirectingRtsp, Recorder]]:
    internal = Recorder()
    camera = RedirectingRtsp(f"rtsp://127.0.0.1:{internal.port}/admin")
    yield camera, internal
    camera.close()
    internal.close()


def test_an_rtsp_redirect_from_the_allowed_host_is_not_followed(
        redirecting: tuple[RedirectingRtsp, Recorder]) -> None:
    camera, internal = redirecting
    with pytest.raises((av.FFmpegError, OSError)):
        decode_all(f"rtsp://user:pw@127.0.0.2:{camera.port}/clip")
    assert any(r.startswith("DESCRIBE rtsp://127.0.0.2:") for r in camera.requests), \
        camera.requests  # the camera saw its own URL (the relay's is rewritten)
    assert internal.connections == 0


def test_a_cameras_redirect_is_not_followed(redirecting: tuple[RedirectingRtsp, Recorder],
                                            home: Path, pipeline: Pipeline) -> None:
    """A configured camera's own host is the operator's choice; where it redirects is not."""
    camera, internal = redirecting
    fs = FaceSearch(Settings(home=home), pipeline=pipeline)  # no allow-list at all
    try:
        watchlist(fs, "watch", [LIN_PHOTO])
        fs.cameras.add("door", f"rtsp://127.0.0.2:{camera.port}/clip")
        fs.streams.create("p", StreamSettings(camera="door", collection="watch",
                                              reconnect_initial_s=0.2))
        fs.streams.start("p")
        wait_for(lambda: sum(r.startswith("DESCRIBE") for r in camera.requests) >= 2, 60,
                 "two sessions with the camera")
        fs.streams.stop("p")
    finally:
        fs.shutdown()
    assert internal.connections == 0
