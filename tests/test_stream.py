"""Live stream processors on the real clip: over a real RTSP server on loopback (GStreamer's,
from Debian packages; see scripts/install-test-deps), and as a looped file."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from facesearch.config import Settings
from facesearch.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidParameterError,
    StreamProcessorNotFoundError,
)
from facesearch.pipeline import Pipeline
from facesearch.policy import CollectionPolicy
from facesearch.service import FaceSearch
from facesearch.stream import (
    EventHub,
    ProcessorStatus,
    StreamEvent,
    StreamSettings,
    Subscription,
    classify_input,
)
from facesearch.types import Caller
from facesearch.video import VideoMatch

from .video_helpers import (
    ALEX_PHOTO,
    CLIP_MS,
    LIN,
    LIN_PHOTO,
    RtspServer,
    WebhookReceiver,
    clip,
    require_rtsp_server,
    wait_for,
    watchlist,
)


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
    with pytest.raises(InvalidParameterError):
        fs.streams.create("bad name!", StreamSettings(input_url=url, collection="strict"))
    with pytest.raises(ValidationError):
        StreamSettings(input_url=url, collection="strict", no_such_setting=1)  # type: ignore[call-arg]
    info = fs.streams.create("cam", StreamSettings(input_url=url, collection="strict"),
                             caller=Caller.local("watchlist", "case-7"))
    assert info.status is ProcessorStatus.STOPPED and info.metrics is None
    assert [p.name for p in fs.streams.list()] == ["cam"]
    assert fs.streams.stop("cam").status is ProcessorStatus.STOPPED  # not running: a no-op
    with pytest.raises(StreamProcessorNotFoundError):
        fs.streams.start("other")


def _lin_events(events: list[StreamEvent]) -> list[StreamEvent]:
    return [e for e in events if e.identity == LIN]


def _drain(sub: Subscription, into: list[StreamEvent]) -> list[StreamEvent]:
    while (e := sub.get(0)) is not None:
        into.append(e)
    return into


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
    ev = _lin_events(events)[0]
    assert ev.match.similarity >= 80 and ev.match.external_id == LIN
    assert 0 <= ev.frame_timestamp_ms <= CLIP_MS and ev.latency_ms > 0
    assert ev.snapshot is not None and (fs.home / ev.snapshot).stat().st_size > 1000
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


def test_processors_resume_after_restart(home: Path, pipeline: Pipeline) -> None:
    a = FaceSearch(Settings(home=home), pipeline=pipeline)
    watchlist(a, "watch", [LIN_PHOTO])
    a.streams.create("cam", StreamSettings(input_url=str(clip()), collection="watch"))
    a.streams.create("idle", StreamSettings(input_url=str(clip()), collection="watch"))
    a.streams.start("cam")
    a.shutdown()
    b = FaceSearch(Settings(home=home), pipeline=pipeline)
    try:
        assert b.streams.describe("cam").status is ProcessorStatus.STOPPED
        assert b.streams.resume() == ["cam"]
        wait_for(lambda: (m := b.streams.metrics("cam")) and m.frames_processed, 30,
                 "frames processed")
        assert [p.status for p in b.streams.list()] == [ProcessorStatus.RUNNING,
                                                        ProcessorStatus.STOPPED]
    finally:
        b.shutdown()


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
        time.sleep(1.5)
        before = fs.streams.metrics("cam")
        assert before is not None and not before.connected
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
