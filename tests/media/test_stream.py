"""Live stream processors on the real clip: over a real RTSP server on loopback (GStreamer's,
from Debian packages; see scripts/install-test-deps), and as a looped file."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image as PILImage
from pydantic import ValidationError

from facesearch.config import Settings
from facesearch.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    ConflictError,
    InvalidParameterError,
    NotFoundError,
    StreamProcessorNotFoundError,
)
from facesearch.governance.policy import CollectionPolicy
from facesearch.media.candidates import VideoMatch
from facesearch.media.events import EventHub, StreamEvent, Subscription, read_jsonl, read_snapshot
from facesearch.media.inputs import classify_input
from facesearch.media.stream.model import ProcessorStatus, StreamSettings
from facesearch.media.webhook import DELIVERY_FAILED, EgressPolicy, post_json
from facesearch.service import FaceSearch
from facesearch.storage.crypto import is_sealed
from facesearch.types import Caller
from facesearch.vision.pipeline import Pipeline

from .video_helpers import (
    ALEX_PHOTO,
    CLIP_MS,
    LIN,
    LIN_PHOTO,
    RtspServer,
    WebhookReceiver,
    clip,
    free_port,
    require_rtsp_server,
    wait_for,
    watchlist,
)

LOOPBACK = "127.0.0.1/32"
"""The egress allow-list of these tests: the RTSP server and webhook receiver are local."""


@pytest.fixture
def fs(home: Path, pipeline: Pipeline) -> Iterator[FaceSearch]:
    """A service on a fresh data directory whose outbound connections may reach loopback."""
    service = FaceSearch(Settings(home=home, egress_allow=LOOPBACK), pipeline=pipeline)
    yield service
    service.shutdown()


def _event(n: int) -> StreamEvent:
    m = VideoMatch("f", "x", None, None, 90.0)
    return StreamEvent(str(n), "p", "c", n, "x", m, [m], (0, 0, 1, 1), 2, 2, 0, 0.0, 0.0, 0.0)


def test_subscription_drops_oldest_and_ends_on_close() -> None:
    hub = EventHub()
    sub = hub.subscribe(max_queue=2)
    for i in range(3):
        hub.publish(_event(i))
    assert sub.dropped == 1
    assert [sub.get(0).event_id, sub.get(0).event_id] == ["1", "2"]  # type: ignore[union-attr]
    assert sub.get(0.01) is None

    async def read_async() -> list[str | None]:
        asub = hub.subscribe(loop=asyncio.get_running_loop())
        got: list[str | None] = []
        task = asyncio.ensure_future(asub.aget(timeout_s=5))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(hub.publish, _event(7))
        ev = await task
        got.append(ev.event_id if ev else None)
        assert await asub.aget(timeout_s=0.05) is None  # timed out
        hub.close()
        got.append(await asub.aget(timeout_s=5))  # closed: None at once
        return got

    assert asyncio.run(read_async()) == ["7", None]
    # A closed subscription still hands out what it holds, then None at once.
    assert sub.closed and sub.get(1).event_id == "7"  # type: ignore[union-attr]
    assert sub.get(1) is None
    with pytest.raises(InvalidParameterError):
        Subscription(0)


def test_inputs_are_classified() -> None:
    assert classify_input("rtsp://cam/1", None) == ("rtsp://cam/1", None, False)
    assert classify_input("http://cam/video.mjpg", "mpjpeg") == ("http://cam/video.mjpg",
                                                                 "mpjpeg", False)
    assert classify_input("/dev/video0", None) == ("/dev/video0", "v4l2", False)
    assert classify_input("file:///x.mp4", None) == ("/x.mp4", None, True)
    assert classify_input("clip.mp4", None) == ("clip.mp4", None, True)
    with pytest.raises(InvalidParameterError):
        classify_input("gopher://cam", None)


def test_create_checks_input_webhook_and_policy(fs: FaceSearch) -> None:
    fs.collections.create("strict", policy=CollectionPolicy(require_purpose=True))
    url = str(clip())
    with pytest.raises(InvalidParameterError, match="purpose"):
        fs.streams.create("cam", StreamSettings(input_url=url, collection="strict"))
    with pytest.raises(InvalidParameterError):
        fs.streams.create("cam", StreamSettings(input_url="gopher://x", collection="strict"))
    for bad in ("bad name!", "..", ".", "x" * 129):  # ".." would put snapshots in the home
        with pytest.raises(InvalidParameterError, match="stream processor name"):
            fs.streams.create(bad, StreamSettings(input_url=url, collection="strict"))
    with pytest.raises(ValidationError):
        StreamSettings(input_url=url, collection="strict", no_such_setting=1)  # type: ignore[call-arg]
    info = fs.streams.create("cam", StreamSettings(input_url=url, collection="strict"),
                             caller=Caller.local("watchlist", "case-7"))
    assert info.status is ProcessorStatus.STOPPED and info.metrics is None
    assert [p.name for p in fs.streams.list_processors()] == ["cam"]
    assert fs.streams.stop("cam").status is ProcessorStatus.STOPPED  # not running: a no-op
    with pytest.raises(StreamProcessorNotFoundError):
        fs.streams.start("other")


def _lin_events(events: list[StreamEvent]) -> list[StreamEvent]:
    return [e for e in events if e.identity == LIN]


def _drain(sub: Subscription, into: list[StreamEvent]) -> list[StreamEvent]:
    while (e := sub.get(0)) is not None:
        into.append(e)
    return into


@pytest.mark.slow
def test_looped_file_processor_with_outputs(fs: FaceSearch, tmp_path: Path) -> None:
    watchlist(fs, "watch", [LIN_PHOTO, ALEX_PHOTO])
    jsonl = tmp_path / "events.jsonl"
    with WebhookReceiver() as hook:
        settings = StreamSettings(input_url=str(clip()), collection="watch", jsonl_path=jsonl,
                                  webhook_url=hook.url, snapshots=True, max_fps=8)
        fs.streams.create("file-cam", settings)
        with pytest.raises(AlreadyExistsError):
            fs.streams.create("file-cam", settings)
        sub = fs.streams.subscribe("file-cam")
        fs.streams.start("file-cam")
        with pytest.raises(ConflictError):
            fs.streams.start("file-cam")
        events: list[StreamEvent] = []
        wait_for(lambda: _lin_events(_drain(sub, events)), 60, "an event for Lin")
        wait_for(lambda: hook.bodies, 10, "the webhook")
        # Rates are measured over a 5 s window: let a few seconds of frames through first.
        wait_for(lambda: (m := fs.streams.metrics("file-cam")) and m.frames_processed >= 32,
                 30, "32 frames processed")
        # The live view: the newest processed frame, in memory only, with each face's box and
        # its best candidate's identity.
        view = wait_for(lambda: (v := fs.streams.live_view("file-cam")) is not None
                        and any(t.identity == LIN for t in v.tracks) and v, 60,
                        "Lin on the live view")
        assert PILImage.open(io.BytesIO(view.jpeg)).size == (view.width, view.height)
        assert (view.width, view.height, view.frame_width) == (640, 360, 640)
        lin = next(t for t in view.tracks if t.identity == LIN)
        assert lin.similarity is not None and lin.similarity >= 80
        assert 0 <= lin.box[0] < lin.box[2] <= 640 and 0 <= lin.box[1] < lin.box[3] <= 360
        newer = wait_for(lambda: (v := fs.streams.live_view("file-cam")) is not None
                         and v.seq > view.seq and v, 30, "a newer frame")
        assert newer.captured_at >= view.captured_at
        info = fs.streams.describe("file-cam")
        assert info.status is ProcessorStatus.RUNNING and info.metrics is not None
        m = info.metrics
        # The file plays in real time (29.97 frames/s); at most 8 are processed a second.
        assert m.frames_in > m.frames_processed > 0 and m.frames_dropped > 0
        assert m.fps_processed <= 8.5 and m.latency_p50_ms is not None
        assert (m.frame_width, m.frame_height) == (640, 360)
        fs.streams.stop("file-cam")
    _drain(sub, events)  # the events emitted before the stop
    assert fs.streams.describe("file-cam").status is ProcessorStatus.STOPPED
    assert fs.streams.live_view("file-cam") is None  # not running: no live view
    ev = _lin_events(events)[0]
    assert ev.match.similarity >= 80 and ev.match.external_id == LIN
    assert 0 <= ev.frame_timestamp_ms <= CLIP_MS and ev.latency_ms > 0
    assert ev.snapshot is not None and (fs.home / ev.snapshot).stat().st_size > 1000
    # An event's snapshot, read back for a reviewer (audited).
    assert fs.streams.snapshot("file-cam", ev.event_id) == (fs.home / ev.snapshot).read_bytes()
    reads, _ = fs.audit.query(operation="stream.snapshot.read")
    assert reads and reads[-1].event.details["event_id"] == ev.event_id
    with pytest.raises(InvalidParameterError):
        fs.streams.snapshot("file-cam", "../../etc/passwd")
    with pytest.raises(NotFoundError):
        fs.streams.snapshot("file-cam", "00000000-0000-4000-8000-000000000000")
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert lines and lines[0]["identity"] == events[0].identity
    assert lines[0]["event_id"] == hook.bodies[0]["event_id"]
    # One event per track and identity, not one per frame.
    keys = [(e.track_id, e.identity) for e in events]
    assert len(keys) == len(set(keys))
    fs.streams.delete("file-cam")
    assert sub.get(1) is None and sub.closed
    with pytest.raises(StreamProcessorNotFoundError):
        fs.streams.describe("file-cam")


@pytest.mark.slow
def test_processors_resume_after_restart(home: Path, pipeline: Pipeline) -> None:
    a = FaceSearch(Settings(home=home, egress_allow=LOOPBACK), pipeline=pipeline)
    watchlist(a, "watch", [LIN_PHOTO])
    a.streams.create("cam", StreamSettings(input_url=str(clip()), collection="watch"))
    a.streams.create("idle", StreamSettings(input_url=str(clip()), collection="watch"))
    a.streams.start("cam")
    a.shutdown()
    b = FaceSearch(Settings(home=home, egress_allow=LOOPBACK), pipeline=pipeline)
    try:
        assert b.streams.describe("cam").status is ProcessorStatus.STOPPED
        assert b.streams.resume() == ["cam"]
        wait_for(lambda: (m := b.streams.metrics("cam")) and m.frames_processed, 30,
                 "frames processed")
        assert [p.status for p in b.streams.list_processors()] == [ProcessorStatus.RUNNING,
                                                        ProcessorStatus.STOPPED]
    finally:
        b.shutdown()


@pytest.mark.slow
def test_rtsp_processor_reports_lin_and_not_without_him(fs: FaceSearch) -> None:
    require_rtsp_server()
    watchlist(fs, "watch", [LIN_PHOTO, ALEX_PHOTO])
    watchlist(fs, "others", [ALEX_PHOTO, "biden.jpg"])
    with RtspServer(clip()) as server:
        for name, coll in (("cam", "watch"), ("cam-others", "others")):
            fs.streams.create(name, StreamSettings(input_url=server.url, collection=coll,
                                                   reconnect_max_s=2))
        subs = {n: fs.streams.subscribe(n) for n in ("cam", "cam-others")}
        for n in subs:
            fs.streams.start(n)
        events: dict[str, list[StreamEvent]] = {n: [] for n in subs}
        wait_for(lambda: _lin_events(_drain(subs["cam"], events["cam"])), 60,
                 "an event for Lin over RTSP")
        # Let the other processor see the whole clip (it plays in real time per connection).
        wait_for(lambda: (m := fs.streams.metrics("cam-others")) and m.reconnects >= 1, 30,
                 "the end of the clip")
        for n in subs:
            fs.streams.stop(n)
    _drain(subs["cam-others"], events["cam-others"])
    ev = _lin_events(events["cam"])[0]
    assert ev.match.similarity >= 80 and ev.processor == "cam"
    assert 0 <= ev.frame_timestamp_ms <= CLIP_MS + 1000
    # Without him in the watchlist nobody is reported as him; Alex Lacamoire, who is in the
    # clip (close-ups in profile before Lin's), may be, and Biden, who is not, never is.
    assert not any(e.identity == LIN or e.match.external_id in (LIN, "biden")
                   for e in events["cam-others"])
    assert (fs.streams.describe("cam-others").metrics is None
            and fs.streams.describe("cam-others").status is ProcessorStatus.STOPPED)


@pytest.mark.slow
def test_rtsp_processor_reconnects_when_the_server_returns(fs: FaceSearch) -> None:
    require_rtsp_server()
    watchlist(fs, "watch", [LIN_PHOTO])
    server = RtspServer(clip())
    server.start()
    try:
        fs.streams.create("cam", StreamSettings(input_url=server.url, collection="watch",
                                                reconnect_initial_s=0.2, reconnect_max_s=1,
                                                read_timeout_s=3))
        sub = fs.streams.subscribe("cam")
        fs.streams.start("cam")
        wait_for(lambda: (m := fs.streams.metrics("cam")) and m.frames_processed > 5, 30,
                 "frames over RTSP")
        server.kill()  # mid-stream
        m = wait_for(lambda: (m := fs.streams.metrics("cam")) and not m.connected
                     and m.reconnects >= 1 and m, 20, "the processor to notice")
        assert m.last_error and "reconnecting" in m.last_error
        assert fs.streams.describe("cam").status is ProcessorStatus.RUNNING
        # It keeps retrying (and failing) while the camera is away.
        before = wait_for(lambda: (b := fs.streams.metrics("cam")) and
                          b.reconnects > m.reconnects and b, 30, "another reconnection attempt")
        assert not before.connected
        _drain(sub, [])
        back = time.time()
        server.start()  # the camera returns
        wait_for(lambda: (m := fs.streams.metrics("cam")) and m.connected, 30, "reconnection")
        after: list[StreamEvent] = []
        wait_for(lambda: _lin_events(_drain(sub, after)), 60, "an event after the return")
        ev = _lin_events(after)[0]
        assert ev.captured_at >= back and 0 <= ev.frame_timestamp_ms <= CLIP_MS + 1000
        m = fs.streams.metrics("cam")
        assert m is not None and m.reconnects >= before.reconnects >= 1
        assert m.frames_in > before.frames_in
    finally:
        server.kill()


# -- security (issue 11) -------------------------------------------------------------------------

def test_input_allow_list_refuses_device_tricks_and_other_formats() -> None:
    """Issue 11 item 3: ``v4l2:///any/file.mp4`` with format ``mov`` opened any file."""
    for url, fmt in (("v4l2:///any/path/file.mp4", "mov"), ("v4l2:///etc/passwd", None),
                     ("/dev/../etc/passwd", None), ("/dev/video0", "mov"),
                     ("rtmp://cam/live", None), ("udp://0.0.0.0:1234", None),
                     ("concat:/a.mp4|/etc/passwd", None), ("clip.mp4", "hls"),
                     ("clip.mp4", "concat"), ("rtsp://cam/1", "mov")):
        with pytest.raises(InvalidParameterError):
            classify_input(url, fmt)
    with pytest.raises(InvalidParameterError, match="not allowed"):
        classify_input("/dev/video0", None, allow_devices=False)
    assert classify_input("v4l2:///dev/video2", "v4l2") == ("/dev/video2", "v4l2", False)
    assert classify_input("/data/clip.mp4", "mov") == ("/data/clip.mp4", "mov", True)


def test_egress_refuses_loopback_link_local_and_private_targets(home: Path,
                                                                pipeline: Pipeline) -> None:
    """Issue 11 item 9 (SSRF): webhooks and stream inputs reached 127.0.0.1 and the cloud
    metadata address; failures told an open port from a closed one."""
    strict = FaceSearch(Settings(home=home), pipeline=pipeline)  # no allow-list
    try:
        watchlist(strict, "watch", [LIN_PHOTO])
        refused = []
        for url, hook in (("rtsp://127.0.0.1:8554/clip", None),
                          ("http://169.254.169.254/latest/meta-data", None),
                          ("rtsp://10.1.2.3/cam", None), ("http://[::1]:80/x", None),
                          ("rtsp://localhost:554/x", None), ("rtsp://2130706433/x", None),
                          ("rtsp://0.0.0.0/x", None), ("http://[::ffff:127.0.0.1]/x", None),
                          (str(clip()), "http://169.254.169.254/hook"),
                          (str(clip()), "http://127.0.0.1:22/")):
            with pytest.raises(InvalidParameterError) as exc:
                strict.streams.create("cam", StreamSettings(input_url=url, collection="watch",
                                                            webhook_url=hook))
            refused.append(exc.value.message)
        # One text per kind of target: nothing tells the targets apart.
        assert len(set(refused[:8])) == 1 and len(set(refused[8:])) == 1, refused
        with pytest.raises(InvalidParameterError):
            strict.video.start_face_detection(clip(), webhook_url="http://127.0.0.1:9/x")
        assert strict.streams.list_processors() == [] and strict.video.list_jobs()[0] == []
    finally:
        strict.shutdown()
    allowed = EgressPolicy.parse(LOOPBACK)
    allowed.check_url("http://127.0.0.1:9/x", "webhook URL")  # the allow-list admits it
    with pytest.raises(InvalidParameterError):
        allowed.check_url("http://169.254.169.254/", "webhook URL")

    # A closed port and a listening one that answers 404 read the same to the client.
    class NotFound(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        open_port = post_json(f"http://127.0.0.1:{server.server_address[1]}/", {"a": 1},
                              attempts=1, egress=allowed)
        closed_port = post_json(f"http://127.0.0.1:{free_port()}/", {"a": 1}, attempts=1,
                                egress=allowed)
        refused_target = post_json("http://169.254.169.254/", {"a": 1}, attempts=1,
                                   egress=allowed)
    finally:
        server.shutdown()
        server.server_close()
    assert open_port == closed_port == refused_target == DELIVERY_FAILED


def _key_caller(fs: FaceSearch, role: str = "searcher", case: str | None = None,
                expires_at: float | None = None) -> Caller:
    k = fs.keys.create(role, purpose="test" if case else None, case_ref=case,
                       expires_at=expires_at).info
    return Caller(actor=k.key_id, role=role, purpose=k.purpose, case_ref=k.case_ref)


def test_revoking_a_key_stops_its_processors_and_ends_its_feeds(fs: FaceSearch) -> None:
    """Issue 11 item 1: a processor created by a revoked key kept searching and an open feed
    kept delivering matches."""
    watchlist(fs, "watch", [LIN_PHOTO])
    owner, reader, other = _key_caller(fs), _key_caller(fs), _key_caller(fs)
    settings = StreamSettings(input_url=str(clip()), collection="watch", max_fps=8)
    fs.streams.create("cam", settings, caller=owner)
    fs.streams.create("cam2", settings, caller=other)
    feed = fs.streams.subscribe("cam2", caller=reader)
    fs.streams.start("cam")
    fs.streams.start("cam2")
    wait_for(lambda: (m := fs.streams.metrics("cam")) and m.searches, 120, "a search")
    fs.keys.revoke(owner.actor)
    info = fs.streams.describe("cam")  # stopped at once, with the reason recorded
    assert info.status is ProcessorStatus.STOPPED and info.metrics is None
    assert info.status_message and "revoked" in info.status_message
    seen = fs.audit.query(actor=owner.actor, operation="search.stream", limit=1000)[0]
    with pytest.raises(AccessDeniedError, match="revoked"):
        fs.streams.start("cam")
    # The feed opened by another key ends when that key is revoked; the processor goes on.
    events: list[StreamEvent] = []
    wait_for(lambda: _drain(feed, events), 120, "an event on the reader's feed")
    fs.keys.revoke(reader.actor)
    assert feed.closed and feed.get(0) is None and feed.end_reason
    assert "revoked" in feed.end_reason
    assert fs.streams.describe("cam2").status is ProcessorStatus.RUNNING
    after = fs.audit.query(actor=owner.actor, operation="search.stream", limit=1000)[0]
    assert len(after) == len(seen)  # no search on behalf of the revoked key
    fs.streams.stop("cam2")


def test_an_expired_key_stops_its_processor(home: Path, pipeline: Pipeline) -> None:
    """Issue 11 item 1: expiry is checked before each search and each second of processing."""
    now = [time.time()]
    fs = FaceSearch(Settings(home=home), pipeline=pipeline, clock=lambda: now[0])
    try:
        watchlist(fs, "watch", [LIN_PHOTO])
        owner = _key_caller(fs, expires_at=now[0] + 3600)
        fs.streams.create("cam", StreamSettings(input_url=str(clip()), collection="watch",
                                                max_fps=4), caller=owner)
        feed = fs.streams.subscribe("cam", caller=owner)
        fs.streams.start("cam")
        wait_for(lambda: (m := fs.streams.metrics("cam")) and m.frames_processed, 120,
                 "frames processed")
        now[0] += 3601  # the key expires
        expired_at = now[0]
        info = wait_for(lambda: (i := fs.streams.describe("cam")).status
                        is ProcessorStatus.STOPPED and i, 60, "the processor to stop")
        assert info.status_message and "expired" in info.status_message
        assert fs.streams.describe("cam").metrics is None
        with pytest.raises(AccessDeniedError, match="expired"):
            fs.streams.start("cam")
        assert fs.keys.problem(owner.actor)
        # Nothing seen after the expiry reached the key's feed.
        assert all(e.captured_at < expired_at for e in _drain(feed, []))
    finally:
        fs.shutdown()


def test_case_bound_keys_see_only_their_case_processors(fs: FaceSearch) -> None:
    """Issue 11 item 2: a key for case B received the live matches of a case-S processor."""
    watchlist(fs, "watch", [LIN_PHOTO])
    s_key, b_key = _key_caller(fs, case="S"), _key_caller(fs, case="B")
    admin = _key_caller(fs, role="admin")
    fs.streams.create("cam-s", StreamSettings(input_url=str(clip()), collection="watch"),
                      caller=s_key)
    for call in (lambda: fs.streams.subscribe("cam-s", caller=b_key),
                 lambda: fs.streams.describe("cam-s", caller=b_key),
                 lambda: fs.streams.start("cam-s", caller=b_key),
                 lambda: fs.streams.stop("cam-s", caller=b_key),
                 lambda: fs.streams.delete("cam-s", caller=b_key)):
        with pytest.raises(StreamProcessorNotFoundError):
            call()
    assert fs.streams.list_processors(caller=b_key) == []
    assert [p.name for p in fs.streams.list_processors(caller=s_key)] == ["cam-s"]
    assert [p.name for p in fs.streams.list_processors(caller=admin)] == ["cam-s"]  # no case: all
    sub = fs.streams.subscribe("cam-s", caller=s_key)
    subscribed = fs.audit.query(actor=s_key.actor, operation="stream.subscribe")[0]
    assert len(subscribed) == 1 and subscribed[0].event.case_ref == "S"
    sub.close()


def test_snapshots_and_events_are_sealed_at_rest(home: Path, pipeline: Pipeline) -> None:
    """Issue 11 item 10: with encryption at rest, stream snapshots (face crops) and JSONL
    events were written in clear (and readable by other users)."""
    key = base64.b64encode(os.urandom(32)).decode()
    fs = FaceSearch(Settings(home=home, encryption_key=key), pipeline=pipeline)
    try:
        watchlist(fs, "watch", [LIN_PHOTO])
        jsonl = home / "streams" / "cam" / "events.jsonl"
        fs.streams.create("cam", StreamSettings(input_url=str(clip()), collection="watch",
                                                snapshots=True, jsonl_path=jsonl, max_fps=8))
        sub = fs.streams.subscribe("cam")
        fs.streams.start("cam")
        events: list[StreamEvent] = []
        wait_for(lambda: _lin_events(_drain(sub, events)), 120, "an event for Lin")
        fs.streams.stop("cam")
        ev = _lin_events(events)[0]
        assert ev.snapshot is not None
        raw = (home / ev.snapshot).read_bytes()
        assert is_sealed(raw) and not raw.startswith(b"\xff\xd8")
        jpeg = read_snapshot(home, ev.snapshot, fs.sealer)
        assert jpeg.startswith(b"\xff\xd8") and len(jpeg) > 1000
        assert fs.streams.snapshot("cam", ev.event_id) == jpeg
        text = jsonl.read_text()
        assert LIN not in text and text.startswith("FSE1:")
        assert ev.event_id in {e["event_id"] for e in read_jsonl(jsonl, fs.sealer)}
        for path in (home / ev.snapshot, jsonl):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        fs.erasure.delete_faces("watch", [ev.match.face_id])  # erasure finds sealed crops
        assert not (home / ev.snapshot).exists()
        with pytest.raises(NotFoundError):
            fs.streams.snapshot("cam", ev.event_id)
    finally:
        fs.shutdown()
