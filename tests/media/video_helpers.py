"""Helpers for the video and stream tests: the real clip, watchlists, a loopback RTSP server and
a webhook receiver."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import av
import pytest

from facesearch.service import FaceSearch

from ..conftest import face

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")
CLIP_NAME = "short_hamilton_clip.mp4"
CLIP_MS = 9176
"""The clip's video stream: 275 frames at 29.97 frames/s, 640x360."""
LIN = "lin-manuel-miranda"
LIN_PHOTO = "lin-manuel-miranda.png"
ALEX_PHOTO = "alex-lacamoire.png"

T = TypeVar("T")


def clip() -> Path:
    return face(CLIP_NAME)


def remux_segment(dest: Path, packets: int = 60) -> Path:
    """The clip's first ``packets`` video packets remuxed into an MPEG-TS file (a real
    HLS segment, outside any allowed folder in the attack)."""
    with av.open(str(clip())) as src, av.open(str(dest), "w", format="mpegts") as out:
        stream = src.streams.video[0]
        o = out.add_stream_from_template(stream)
        for i, packet in enumerate(src.demux(stream)):
            if packet.dts is None:
                continue
            if i > packets:
                break
            packet.stream = o
            out.mux(packet)
    return dest


def hls(segment: Path, *, url: bool) -> str:
    name = f"file://{segment}" if url else str(segment)
    return (f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:2.0,\n{name}\n"
            "#EXT-X-ENDLIST\n")


def watchlist(fs: FaceSearch, name: str, photos: list[str]) -> str:
    """A collection holding one face of each reference photo (external id: the file stem)."""
    fs.collections.create(name)
    for photo in photos:
        res = fs.collections.index_image(name, face(photo), external_id=Path(photo).stem)
        assert len(res.indexed) == 1, f"no face indexed from {photo}"
    return name


def wait_for(check: Callable[[], T], timeout_s: float, what: str, every_s: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}", pytrace=False)
        time.sleep(every_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_rtsp_server() -> None:
    """Fail (never skip) when the GStreamer RTSP server bindings are missing."""
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", ("import gi; gi.require_version('GstRtspServer', '1.0'); "
                               "from gi.repository import GstRtspServer")],
        capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.fail("GStreamer's RTSP server is not installed for /usr/bin/python3; run "
                    f"scripts/install-test-deps ({probe.stderr.strip().splitlines()[-1:]})",
                    pytrace=False)


class RtspServer:
    """``tests/media/rtsp_server.py`` on 127.0.0.1 serving a file; each client plays it from the
    start in real time. :meth:`kill` it and :meth:`start` it again on the same port."""

    def __init__(self, file: Path, port: int | None = None, path: str = "/clip") -> None:
        self.file = file
        self.port = port or free_port()
        self.path = path
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    def start(self, timeout_s: float = 15.0) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(RTSP_SERVER), "--port", str(self.port), "--path", self.path,
             str(self.file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != "READY":
            self.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            pytest.fail(f"the RTSP server did not start: {line!r} {err[-500:]}", pytrace=False)

    def kill(self) -> None:
        """Kill it abruptly (SIGKILL), as a camera that drops off the network."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)
            for f in (self.proc.stdout, self.proc.stderr):
                if f is not None:
                    f.close()

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class WebhookReceiver:
    """A loopback HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(n)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
