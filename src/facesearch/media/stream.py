"""Live stream processors: watch a camera for the faces of a watchlist collection.

A processor (Rekognition's CreateStreamProcessor / Start / Stop / List / Describe / Delete)
reads one input: RTSP, HTTP MJPEG, HLS, a local camera (``/dev/videoN``, V4L2), or a video
file played at its own frame rate and looped as a simulated camera; or a camera the operator
configured (:mod:`facesearch.media.cameras`), looked up at each start. It runs three threads:

- capture: opens the input with PyAV (FFmpeg), decodes every frame and puts the newest one in
  a one-frame slot; a frame replaced before it was processed is counted as dropped, so the
  processor never falls behind the camera. When the input fails or ends it reconnects with
  exponential backoff (``reconnect_initial_s`` doubling up to ``reconnect_max_s``).
  The capture thread also runs every decoded frame through the shot detector
  (:mod:`facesearch.media.shots`), so a cut is seen even between two frames that processing
  dropped.
- processing: takes the newest frame, detects faces, follows them with
  :class:`facesearch.media.tracking.IouTracker` (every track ends at a cut, and at a
  reconnection), embeds new tracks and uncertain ones (no confident match yet: again every
  ``embed_interval_ms``, up to ``max_embeddings_per_track`` times, then every
  ``recheck_interval_ms``) and every other track at least every ``identity_check_ms``; a track
  whose new embedding is less similar than ``split_similarity`` to its previous one is split
  (a new track, searched afresh: a swap of faces never inherits the first face's identity). It
  searches the watchlist and emits one :class:`StreamEvent` per (track, identity) the first
  time the track matches that identity.
- webhook (when configured): POSTs each event, dropping the oldest when the receiver lags;
  and Kinesis (when the settings name a data stream): writes a record of each frame whose
  faces were searched (:mod:`facesearch.media.kinesis`), likewise.

Events also go to in-process subscribers (:meth:`StreamProcessors.subscribe`, a bounded queue
each, oldest dropped for slow readers; the HTTP API serves them as SSE or WebSocket), to a
JSONL file, and optionally come with a JPEG snapshot of the matched face under
``<home>/snapshots/<processor>/``. With encryption at rest on (the collections' sealer),
snapshots are sealed (``.jpg.fse``, read them with :func:`read_snapshot`) and JSONL lines are
``FSE1:`` + base64 of the sealed JSON (:func:`read_jsonl`). Frame-to-event latency is
measured from the moment the frame was decoded to the moment its event is emitted. Every match is a candidate for human review.

The newest processed frame, with the boxes and best identities of the faces tracked in it, is
kept in memory only (never written) for a live view (:meth:`StreamProcessor.live_view`, a JPEG
of at most :data:`LIVE_MAX_SIDE` pixels encoded on demand); :meth:`StreamProcessors.snapshot`
reads an event's snapshot back.

Security (see docs/security.md): a processor searches on behalf of the key that created it
and stops, with the reason recorded, as soon as that key is revoked or expires (checked before
every search, and at once on a revocation in this process); a live feed ends when the key
that opened it is revoked or expires. A case-bound key sees only the processors of its case.
Inputs are allow-listed: files (the caller bounds them to its video roots), ``rtsp``,
``rtsps``, ``http`` and ``https`` whose hosts pass the
:class:`~facesearch.media.webhook.EgressPolicy`, and local V4L2 devices (``/dev/videoN``) only
where ``allow_devices``; a camera is the operator's own choice, so its host is not held to the
egress policy and it may be a device or a file. FFmpeg formats are allow-listed and FFmpeg is
held to the input's own protocols (``protocol_whitelist``).
"""

from __future__ import annotations

import asyncio
import builtins
import enum
import io
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

import av
import numpy as np
from PIL import Image as PILImage
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import (
    delete,
    insert,
    select,
    update,
)

from facesearch.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    ConflictError,
    FaceSearchError,
    InvalidParameterError,
    InvalidVideoError,
    NotFoundError,
    StreamProcessorNotFoundError,
    ThrottledError,
)
from facesearch.governance.keys import AccessKeys
from facesearch.media.cameras import Cameras
from facesearch.media.events import (
    SEALED_SUFFIX,
    EventHub,
    StreamEvent,
    Subscription,
    read_snapshot,
    seal_line,
    snapshot_aad,
)
from facesearch.media.frames import VideoMatch, detect_frame
from facesearch.media.inputs import (
    INPUT_REFUSED,
    classify_input,
    open_input,
    redact_credentials,
)
from facesearch.media.kinesis import KinesisOutput, KinesisWriter, SearchedFrame
from facesearch.media.shots import ShotDetector
from facesearch.media.tracking import SPLIT_SIMILARITY, IouTracker
from facesearch.media.webhook import (
    OPEN,
    EgressPolicy,
    EgressRefusedError,
    WebhookSender,
    validate_url,
)
from facesearch.services.collection import FaceCollections
from facesearch.services.search import Match, SearchGate
from facesearch.storage.crypto import Sealer
from facesearch.storage.schema import processors_t, tags_t
from facesearch.storage.store import Store
from facesearch.types import Caller, Faces, FloatArray, RGBImage
from facesearch.vision import similarity as sim
from facesearch.vision.pipeline import Pipeline

log = logging.getLogger(__name__)

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class StreamSettings(BaseModel):
    """A stream processor's definition: input, watchlist, matching, outputs, pacing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_url: str | None = Field(
        default=None, min_length=1,
        description="rtsp://, http(s):// (MJPEG, HLS), /dev/videoN, or a video file (played as "
                    "a camera); or give `camera`")
    camera: str | None = Field(
        default=None, min_length=1, max_length=256,
        description="a camera the operator configured (`facesearch cameras add`), instead of "
                    "input_url: its URL and input format are looked up at each start")
    collection: str = Field(..., min_length=1, description="watchlist collection")
    threshold: float | None = Field(
        default=None, ge=0, le=100,
        description="face match threshold (None: the collection's default)")
    max_results: int = Field(default=5, ge=1, le=100, description="candidates searched per face")
    input_format: str | None = Field(
        default=None,
        description="FFmpeg input format, when it cannot be guessed (e.g. mpjpeg, v4l2)")
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    loop: bool = Field(default=True, description="file inputs: start again at the end")
    realtime: bool = Field(default=True, description="file inputs: play at the file's frame rate")
    max_fps: float | None = Field(
        default=None, gt=0,
        description="most frames processed per second (None: as many as the machine can)")
    detect_max_side: int | None = Field(
        default=1280, ge=160,
        description="frames whose longest side exceeds this (px) are scaled down for detection")
    min_face_size: float = Field(
        default=0.0, ge=0, description="smaller faces (inter-ocular px) are not searched")
    embed_interval_ms: int = Field(
        default=500, ge=0, description="least time between two embeddings of an uncertain track")
    max_embeddings_per_track: int = Field(default=5, ge=1, le=100)
    recheck_interval_ms: int = Field(
        default=5000, ge=0,
        description="uncertain tracks past their embeddings are searched again this often")
    certain_margin: float = Field(
        default=5.0, ge=0, le=100,
        description="a track whose best match is this far above the threshold is no longer "
                    "searched")
    iou_threshold: float = Field(default=0.3, gt=0, le=1)
    max_gap_ms: int = Field(default=1000, ge=0, description="a track unseen this long (ms) ends")
    split_similarity: float = Field(
        default=SPLIT_SIMILARITY, ge=0, le=100,
        description="a track is split where two consecutive embeddings of it are less similar "
                    "than this (0-100)")
    identity_check_ms: int = Field(
        default=1000, ge=0,
        description="tracks not otherwise embedded are embedded this often (ms) to check that "
                    "they still follow the same face")
    webhook_url: str | None = None
    kinesis_data_stream_arn: str | None = Field(
        default=None,
        description="a Kinesis Data Streams ARN: each frame whose faces were searched is "
                    "written there as a record (Rekognition Video's format; needs the server's "
                    "Kinesis endpoint)")
    kinesis_video_stream_arn: str | None = Field(
        default=None,
        description="the Kinesis Video Streams ARN a Rekognition client named as input (its "
                    "stream name is `camera`); written into each record")
    role_arn: str | None = Field(
        default=None, max_length=2048,
        description="the IAM role ARN a Rekognition client sent, shown back (no role is "
                    "assumed)")
    jsonl_path: Path | None = None
    snapshots: bool = Field(default=False, description="save a JPEG crop of each matched face")
    open_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=10.0, gt=0)
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _one_input(self) -> StreamSettings:
        if (self.input_url is None) == (self.camera is None):
            raise ValueError("give exactly one of input_url or camera")
        return self


class ProcessorStatus(str, enum.Enum):
    """Rekognition's stream processor statuses."""

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    FAILED = "FAILED"


# -- subscribers --------------------------------------------------------------------------------


# -- metrics ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StreamMetrics:
    """A running processor's counters. Rates in frames/s over the last few seconds, latencies
    in ms (``latency``: frame-to-event; ``processing``: frame decoded to frame processed), over
    the last 2000 samples."""

    status: ProcessorStatus
    connected: bool
    reconnects: int
    frames_in: int
    frames_processed: int
    frames_dropped: int
    fps_in: float
    fps_processed: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    processing_p50_ms: float | None
    processing_p99_ms: float | None
    events: int
    active_tracks: int
    searches: int
    searches_throttled: int
    frame_width: int | None
    frame_height: int | None
    subscribers: int
    webhook_delivered: int
    webhook_failed: int
    webhook_dropped: int
    kinesis_delivered: int
    kinesis_failed: int
    kinesis_dropped: int
    last_error: str | None
    last_error_at: float | None
    started_at: float | None
    cuts: int = 0
    """Shot boundaries seen (every track ended at each)."""
    splits: int = 0
    """Tracks split because their face's embedding changed identity."""


class _Rate:
    """Events per second over the last ``window_s`` seconds (thread-safe)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._start = time.monotonic()
        self._lock = threading.Lock()

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    def tick(self, now: float) -> None:
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            n = len(self._times)
        span = min(self.window_s, now - self._start)
        return n / span if span > 0 else 0.0


def _percentile(values: deque[float], q: float) -> float | None:
    snapshot = list(values)  # one C-level copy: safe while another thread appends
    return round(float(np.percentile(snapshot, q)), 1) if snapshot else None


class _NoVideo(Exception):
    """The input opened but carries no video stream."""


@dataclass(frozen=True, eq=False)
class _Captured:
    frame: av.VideoFrame
    timestamp_ms: int
    mono: float
    wall: float
    session: int
    shot: int = 0
    """Cuts before this frame since the input (re)opened."""


class _LatestFrame:
    """One-frame handoff: the newest frame wins; replaced frames are counted as dropped."""

    def __init__(self) -> None:
        self._item: _Captured | None = None
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: _Captured) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def take(self, timeout_s: float) -> _Captured | None:
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout_s)
            item, self._item = self._item, None
            return item


@dataclass
class _TrackState:
    embeddings: int = 0
    """Searches of the track."""
    last_embed_ms: float = float("-inf")
    last_vector: FloatArray | None = None
    """The track's last embedding (its identity check compares the next one with it)."""
    best: float = 0.0
    identities: set[str] = field(default_factory=set)
    label: str | None = None
    """The identity of the track's best candidate so far (shown on the live view)."""


LIVE_MAX_SIDE = 640
"""Largest side (px) of a live view's frame."""


@dataclass(frozen=True)
class LiveTrack:
    """A face in the live view: its track, box (x1, y1, x2, y2, pixels of the view's JPEG)
    and the identity and similarity (0-100) of its best candidate so far (None: none yet)."""

    track_id: int
    box: tuple[float, float, float, float]
    identity: str | None
    similarity: float | None


@dataclass(frozen=True)
class LiveView:
    """The newest processed frame of a running processor, kept in memory only: a JPEG of at
    most :data:`LIVE_MAX_SIDE` pixels a side (``width`` x ``height``) and the faces tracked in
    it. ``seq`` counts processed frames (a new view has a higher one); ``captured_at`` is a
    Unix time (s)."""

    seq: int
    jpeg: bytes
    width: int
    height: int
    frame_width: int
    frame_height: int
    frame_timestamp_ms: int
    captured_at: float
    tracks: list[LiveTrack]


@dataclass(frozen=True, eq=False)
class _Latest:
    seq: int
    pixels: RGBImage
    item: _Captured
    tracks: list[tuple[int, tuple[float, float, float, float], str | None, float | None]]


def identity_of(m: Match) -> str:
    """Who a match stands for: its user, else its external id, else the face itself."""
    return m.face.user_id or m.face.external_id or m.face.face_id


def _video_match(m: Match) -> VideoMatch:
    return VideoMatch(m.face.face_id, m.face.external_id, m.face.image.image_id, m.face.user_id,
                      float(m.similarity))


StatusCallback = Callable[[str, ProcessorStatus, str | None], None]


class StreamProcessor:
    """One live processor (see the module docstring). :meth:`start` it, :meth:`shutdown` it."""

    def __init__(self, name: str, settings: StreamSettings, pipeline: Pipeline,
                 search: SearchGate, *, caller: Caller | None = None, hub: EventHub | None = None,
                 snapshot_dir: Path | None = None, snapshot_root: Path | None = None,
                 on_status: StatusCallback | None = None,
                 clock: Callable[[], float] = time.time,
                 key_check: Callable[[], str | None] | None = None,
                 egress: EgressPolicy = OPEN, sealer: Sealer | None = None,
                 allow_devices: bool = True, kinesis: KinesisOutput | None = None) -> None:
        if settings.input_url is None:
            raise InvalidParameterError(f"stream processor {name!r}: its camera must be looked "
                                        "up before it runs (StreamProcessors.start)")
        self.name = name
        self.kinesis = kinesis
        """Where records go when the settings name a Kinesis data stream."""
        self.key_check = key_check
        """Why the creator's key may no longer search (asked before every search)."""
        self.egress = egress
        self.sealer = sealer
        """Seals snapshots and JSONL lines (the at-rest sealer, when encryption is on)."""
        self.settings = settings
        self.pipeline = pipeline
        self.search = search
        self.caller = caller or Caller.local()
        self.hub = hub or EventHub()
        self.snapshot_dir = snapshot_dir
        self.snapshot_root = snapshot_root
        self.on_status = on_status
        self.clock = clock
        self.target, self.format, self.is_file = classify_input(
            settings.input_url, settings.input_format, allow_devices=allow_devices)
        self.status = ProcessorStatus.STOPPED
        self._stop = threading.Event()
        self._slot = _LatestFrame()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._webhook: WebhookSender | None = None
        self._kinesis: KinesisWriter | None = None
        self._jsonl: TextIO | None = None
        # metrics
        self.connected = False
        self.reconnects = 0
        self.frames_in = 0
        self.frames_processed = 0
        self.events = 0
        self.searches = 0
        self.searches_throttled = 0
        self.active_tracks = 0
        self.cuts = 0
        self.splits = 0
        self.frame_size: tuple[int, int] | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.started_at: float | None = None
        self.search_id = str(uuid.uuid4())
        """The search id of this run's searches (a new one at each start): a live match is
        reviewed as a candidate of it, and the audit trail groups the run's searches by it."""
        self._rate_in = _Rate()
        self._rate_done = _Rate()
        self._latency: deque[float] = deque(maxlen=2000)
        self._processing: deque[float] = deque(maxlen=2000)
        self._latest: _Latest | None = None
        self._view: LiveView | None = None
        self._view_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._threads:
                raise ConflictError(f"stream processor {self.name!r} is already running")
            s = self.settings
            if s.kinesis_data_stream_arn is not None and self.kinesis is None:
                raise InvalidParameterError("this server has no Kinesis endpoint configured "
                                            "(FACESEARCH_API_KINESIS_ENDPOINT_URL)")
            if s.webhook_url is not None:
                self._webhook = WebhookSender(s.webhook_url, name=f"stream-{self.name}-webhook",
                                              egress=self.egress)
            if s.kinesis_data_stream_arn is not None and self.kinesis is not None:
                self._kinesis = self.kinesis.writer(s.kinesis_data_stream_arn,
                                                    name=f"stream-{self.name}-kinesis")
            if s.jsonl_path is not None:
                s.jsonl_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(s.jsonl_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                self._jsonl = open(fd, "a", encoding="utf-8")  # noqa: SIM115
            self._stop.clear()
            self.started_at = self.clock()
            self.search_id = str(uuid.uuid4())
            self._set_status(ProcessorStatus.STARTING, None)
            self._threads = [
                threading.Thread(target=self._capture, name=f"stream-{self.name}-capture",
                                 daemon=True),
                threading.Thread(target=self._process, name=f"stream-{self.name}-process",
                                 daemon=True),
            ]
            for t in self._threads:
                t.start()

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Stop capture and processing (waits up to the read timeout for a stalled input)."""
        timeout_s = timeout_s if timeout_s is not None else self.settings.read_timeout_s + 5
        with self._lock:
            threads, self._threads = self._threads, []
            if not threads:
                return
            failed = self.status is ProcessorStatus.FAILED
            if not failed:
                self._set_status(ProcessorStatus.STOPPING, None)
            self._stop.set()
        deadline = time.monotonic() + timeout_s
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._close_outputs()
        if not failed:
            self._set_status(ProcessorStatus.STOPPED, None)

    stop = shutdown

    def _close_outputs(self) -> None:
        """Send what the webhook and Kinesis queues hold, and close the JSONL file."""
        if self._webhook is not None:
            self._webhook.shutdown()
        if self._kinesis is not None:
            self._kinesis.shutdown()
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    @property
    def running(self) -> bool:
        return bool(self._threads) and not self._stop.is_set()

    def _set_status(self, status: ProcessorStatus, message: str | None) -> None:
        self.status = status
        if self.on_status is not None:
            self.on_status(self.name, status, message)

    def _error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = self.clock()

    def halt(self, message: str) -> None:
        """Stop for good, from any thread, with ``message`` recorded as the status message
        (STOPPED; e.g. the creator's key was revoked)."""
        self._error(message)
        log.warning("stream processor %s stopped: %s", self.name, message)
        with self._lock:
            threads, self._threads = self._threads, []
            self._stop.set()
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join(self.settings.read_timeout_s + 5)
        self._close_outputs()
        self._set_status(ProcessorStatus.STOPPED, message)

    def _key_revoked(self) -> bool:
        """From the processing thread: whether the creator's key may no longer search; if so
        the processor stops (:meth:`halt`, from another thread, which joins this one)."""
        problem = self.key_check() if self.key_check is not None else None
        if problem is None:
            return False
        self._stop.set()
        threading.Thread(target=self.halt, args=(f"stopped: {problem}",),
                         name=f"stream-{self.name}-halt", daemon=True).start()
        return True

    def live_view(self) -> LiveView | None:
        """The newest processed frame with its tracked faces (None before the first one);
        encoded once per frame, on demand."""
        latest = self._latest
        if latest is None:
            return None
        with self._view_lock:
            if self._view is not None and self._view.seq == latest.seq:
                return self._view
            h, w = latest.pixels.shape[:2]
            img = PILImage.fromarray(latest.pixels)
            if max(w, h) > LIVE_MAX_SIDE:
                img.thumbnail((LIVE_MAX_SIDE, LIVE_MAX_SIDE), PILImage.Resampling.BILINEAR)
            k = img.width / w
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=75)
            self._view = LiveView(
                latest.seq, buf.getvalue(), img.width, img.height, w, h,
                latest.item.timestamp_ms, latest.item.wall,
                [LiveTrack(tid, (box[0] * k, box[1] * k, box[2] * k, box[3] * k), label, sim)
                 for tid, box, label, sim in latest.tracks])
            return self._view

    def _fail(self, message: str) -> None:
        """Stop for good on an error that retrying cannot fix."""
        self._error(message)
        log.error("stream processor %s failed: %s", self.name, message)
        self._set_status(ProcessorStatus.FAILED, message)
        self._stop.set()

    def metrics(self) -> StreamMetrics:
        w, k = self._webhook, self._kinesis
        return StreamMetrics(
            status=self.status, connected=self.connected, reconnects=self.reconnects,
            frames_in=self.frames_in, frames_processed=self.frames_processed,
            frames_dropped=self._slot.dropped, fps_in=round(self._rate_in.rate(), 2),
            fps_processed=round(self._rate_done.rate(), 2),
            latency_p50_ms=_percentile(self._latency, 50),
            latency_p99_ms=_percentile(self._latency, 99),
            processing_p50_ms=_percentile(self._processing, 50),
            processing_p99_ms=_percentile(self._processing, 99),
            events=self.events, active_tracks=self.active_tracks, searches=self.searches,
            searches_throttled=self.searches_throttled,
            frame_width=self.frame_size[0] if self.frame_size else None,
            frame_height=self.frame_size[1] if self.frame_size else None,
            subscribers=self.hub.subscribers,
            webhook_delivered=w.delivered if w else 0, webhook_failed=w.failed if w else 0,
            webhook_dropped=w.dropped if w else 0,
            kinesis_delivered=k.delivered if k else 0, kinesis_failed=k.failed if k else 0,
            kinesis_dropped=k.dropped if k else 0, last_error=self.last_error,
            last_error_at=self.last_error_at, started_at=self.started_at, cuts=self.cuts,
            splits=self.splits)

    # -- capture -------------------------------------------------------------------------

    def _open(self) -> av.container.InputContainer:
        s = self.settings
        options: dict[str, str] = {}
        if self.target.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = s.rtsp_transport
        if not self.is_file and self.format != "v4l2":
            self.egress.check_url(self.target, "stream input")  # again: DNS may have changed
        return open_input(self.target, self.format, options=options,
                          timeout=(s.open_timeout_s, s.read_timeout_s), egress=self.egress)

    def _capture(self) -> None:
        s = self.settings
        attempt = 0
        session = 0
        while not self._stop.is_set():
            session += 1
            reason = "the stream ended"
            got = False
            container = None
            try:
                container = self._open()
                if not container.streams.video:
                    raise _NoVideo("the input has no video stream")
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                tb = float(stream.time_base) if stream.time_base is not None else 0.0
                rate = float(stream.average_rate or stream.guessed_rate or 25)
                first_pts: int | None = None
                start = time.monotonic()
                shots = ShotDetector(rate)
                for i, frame in enumerate(container.decode(stream)):
                    if self._stop.is_set():
                        break
                    shots.feed(frame)
                    if frame.pts is not None and tb:
                        first_pts = frame.pts if first_pts is None else first_pts
                        ts_ms = round((frame.pts - first_pts) * tb * 1000)
                    else:
                        ts_ms = round(i * 1000 / rate)
                    if self.is_file and s.realtime:
                        due = start + ts_ms / 1000.0 - time.monotonic()
                        if due > 0 and self._stop.wait(due):
                            break
                    now = time.monotonic()
                    if not got:
                        got, attempt = True, 0
                        self.connected = True
                    self.frames_in += 1
                    self._rate_in.tick(now)
                    self._slot.put(_Captured(frame, max(ts_ms, 0), now, self.clock(), session,
                                             shots.shot))
                else:
                    if self.is_file and s.loop and got:
                        continue
            except (EgressRefusedError, InvalidVideoError) as exc:
                self._fail(exc.message)  # a refused input: retrying cannot change that
                break
            except (av.FFmpegError, OSError, _NoVideo) as exc:
                reason = redact_credentials(
                    f"{type(exc).__name__}: {str(exc).strip() or 'input error'}")
            finally:
                self.connected = False
                if container is not None:
                    container.close()
            if self._stop.is_set():
                break
            if self.is_file and not s.loop and got:
                reason = "the file ended"
                self._error(reason)
                self._set_status(ProcessorStatus.STOPPED, reason)
                self._stop.set()
                break
            self._error(INPUT_REFUSED)  # the same text whatever failed: no port scanning
            log.warning("stream processor %s: %s; reconnecting", self.name, reason)
            delay = min(s.reconnect_max_s, s.reconnect_initial_s * 2 ** attempt)
            attempt += 1
            self.reconnects += 1
            if self._stop.wait(delay):
                break

    # -- processing ----------------------------------------------------------------------

    def _process(self) -> None:
        try:
            self._process_loop()
        except FaceSearchError as exc:
            self._fail(exc.message)
        except Exception as exc:  # a worker records any failure as the processor's last error
            log.exception("stream processor %s crashed", self.name)
            self._fail(f"internal error: {type(exc).__name__}: {exc}")

    def _process_loop(self) -> None:
        s = self.settings
        pipeline = self.pipeline.for_thread()
        tracker = IouTracker(s.iou_threshold, s.max_gap_ms)
        states: dict[int, _TrackState] = {}
        session = -1
        shot = 0
        split_cos = float(sim.to_cosine(s.split_similarity, pipeline.model_version))
        interval = 1.0 / s.max_fps if s.max_fps else 0.0
        next_at = 0.0
        certain = (s.threshold if s.threshold is not None else sim.DEFAULT_THRESHOLD) \
            + s.certain_margin
        next_key_check = 0.0
        while not self._stop.is_set():
            if self.key_check is not None and time.monotonic() >= next_key_check:
                next_key_check = time.monotonic() + 1.0  # and before every search
                if self._key_revoked():
                    break
            if interval:
                wait = next_at - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
            item = self._slot.take(0.5)
            if item is None:
                continue
            next_at = time.monotonic() + interval
            if item.session != session or item.shot != shot:
                if item.session == session:
                    self.cuts += 1
                tracker.reset()
                states.clear()
                session, shot = item.session, item.shot
            pixels = np.ascontiguousarray(item.frame.to_ndarray(format="rgb24"), np.uint8)
            self.frame_size = (pixels.shape[1], pixels.shape[0])
            faces, chips = detect_frame(pipeline, pixels, s.detect_max_side)
            now_ms = item.mono * 1000.0
            ids, ended = tracker.update(faces.boxes, int(now_ms))
            for tid in ended:
                states.pop(tid, None)
            self.active_tracks = len(tracker.tracks)
            want: list[int] = []
            check: list[int] = []
            for k, tid in enumerate(ids.tolist()):
                st = states.setdefault(tid, _TrackState())
                assert faces.quality is not None
                if faces.quality.size[k] < s.min_face_size:
                    continue
                if st.best >= certain:
                    if now_ms - st.last_embed_ms >= s.identity_check_ms:
                        check.append(k)
                    continue
                gap = (s.embed_interval_ms if st.embeddings < s.max_embeddings_per_track
                       else s.recheck_interval_ms)
                if st.embeddings == 0 or now_ms - st.last_embed_ms >= gap:
                    want.append(k)
            if want or check:
                vecs = pipeline.embedder.embed(chips[want + check])
                by_face = dict(zip(want + check, vecs, strict=True))
                for k, vec in by_face.items():
                    st = states[int(ids[k])]
                    if st.last_vector is not None and float(st.last_vector @ vec) < split_cos:
                        # Someone else now: a new track, searched afresh.
                        states.pop(int(ids[k]), None)
                        ids[k] = tracker.split(int(ids[k]), int(now_ms))
                        st = states[int(ids[k])] = _TrackState()
                        self.splits += 1
                        if k in check:
                            check.remove(k)
                            want.append(k)
                    st.last_vector = vec
                    st.last_embed_ms = now_ms
                if want:
                    self._search(want, np.stack([by_face[k] for k in want]), ids, states, faces,
                                 pixels, item)
            if self.status is ProcessorStatus.STARTING:
                self._set_status(ProcessorStatus.RUNNING, None)
            self._latest = _Latest(self.frames_processed + 1, pixels, item, [
                (int(tid), tuple(float(v) for v in faces.boxes[k]),  # type: ignore[misc]
                 states[int(tid)].label,
                 states[int(tid)].best if states[int(tid)].label is not None else None)
                for k, tid in enumerate(ids.tolist())])
            self.frames_processed += 1
            done = time.monotonic()
            self._rate_done.tick(done)
            self._processing.append((done - item.mono) * 1000.0)

    def _search(self, want: list[int], vecs: FloatArray, ids: np.ndarray,
                states: dict[int, _TrackState], faces: Faces, pixels: RGBImage,
                item: _Captured) -> None:
        """Search the faces ``want`` (indices into ``faces``; their embeddings ``vecs``)."""
        s = self.settings
        if self._key_revoked():
            return
        for k in want:
            states[int(ids[k])].embeddings += 1
        try:
            results: list[list[Match]] = [r.matches for r in self.search.by_vectors(
                s.collection, vecs, operation="search.stream", max_results=s.max_results,
                threshold=s.threshold, caller=self.caller, search_id=self.search_id).results]
        except ThrottledError as exc:
            self.searches_throttled += 1
            self._error(f"search throttled: {exc.message}")
            return
        self.searches += 1
        for k, matches in zip(want, results, strict=True):
            st = states[int(ids[k])]
            if matches and float(matches[0].similarity) >= st.best:
                st.best = float(matches[0].similarity)
                st.label = identity_of(matches[0])
            best_per_identity: dict[str, Match] = {}
            for m in matches:
                best_per_identity.setdefault(identity_of(m), m)
            for identity, m in best_per_identity.items():
                if identity in st.identities:
                    continue
                st.identities.add(identity)
                self._emit(int(ids[k]), identity, m, matches, faces.boxes[k], pixels, item)
        if self._kinesis is not None and self.kinesis is not None:
            frame = SearchedFrame(
                processor=self.name, input_arn=s.kinesis_video_stream_arn,
                status=ProcessorStatus.RUNNING.value, session=item.session,
                offset_s=item.timestamp_ms / 1000.0, captured_at=item.wall,
                width=int(pixels.shape[1]), height=int(pixels.shape[0]),
                faces=[faces.view(k) for k in want], matches=results)
            self._kinesis.submit(self.kinesis.record(frame), partition_key=self.name)

    def _emit(self, track_id: int, identity: str, match: Match, matches: list[Match],
              box: np.ndarray, pixels: RGBImage, item: _Captured) -> None:
        event_id = str(uuid.uuid4())
        snapshot = (self._snapshot(event_id, match.face.face_id, pixels, box)
                    if self.settings.snapshots else None)
        emitted = time.monotonic()
        latency = (emitted - item.mono) * 1000.0
        event = StreamEvent(
            event_id=event_id, processor=self.name, collection=self.settings.collection,
            track_id=track_id, identity=identity, match=_video_match(match),
            candidates=[_video_match(m) for m in matches],
            box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            frame_width=pixels.shape[1], frame_height=pixels.shape[0],
            frame_timestamp_ms=item.timestamp_ms, captured_at=item.wall,
            emitted_at=item.wall + (emitted - item.mono), latency_ms=latency, snapshot=snapshot,
            search_id=self.search_id)
        self.events += 1
        self._latency.append(latency)
        self.hub.publish(event)
        doc = event.to_json()
        if self._jsonl is not None:
            try:
                self._jsonl.write(seal_line(json.dumps(doc, ensure_ascii=False), self.sealer)
                                  + "\n")
                self._jsonl.flush()
            except OSError as exc:
                self._error(f"cannot write {self.settings.jsonl_path}: {exc.strerror or exc}")
        if self._webhook is not None:
            self._webhook.submit(doc)

    def _snapshot(self, event_id: str, face_id: str, pixels: RGBImage,
                  box: np.ndarray) -> str | None:
        """Save the crop as ``<day>/<event id>_<matched face id>.jpg`` (the face id lets an
        erasure of that face find and delete it: :func:`purge_snapshots`)."""
        if self.snapshot_dir is None:
            return None
        h, w = pixels.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in box)
        mx, my = 0.3 * (x2 - x1), 0.3 * (y2 - y1)
        l, t = max(0, int(x1 - mx)), max(0, int(y1 - my))
        r, b = min(w, int(x2 + mx)), min(h, int(y2 + my))
        if r <= l or b <= t:
            return None
        day = time.strftime("%Y%m%d", time.gmtime(self.clock()))
        name = f"{event_id}_{face_id}.jpg" + (SEALED_SUFFIX if self.sealer else "")
        path = self.snapshot_dir / day / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            buf = io.BytesIO()
            PILImage.fromarray(np.ascontiguousarray(pixels[t:b, l:r])).save(buf, "JPEG",
                                                                              quality=90)
            data = buf.getvalue()
            if self.sealer is not None:
                data = self.sealer.seal(data, snapshot_aad(name))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as exc:
            self._error(f"cannot write snapshot {path}: {exc.strerror or exc}")
            return None
        root = self.snapshot_root
        return str(path.relative_to(root)) if root is not None else str(path)


# -- persistent processors ----------------------------------------------------------------------



@dataclass(frozen=True)
class ProcessorInfo:
    """A processor's definition and state; ``metrics`` when it runs in this process."""

    name: str
    settings: StreamSettings
    status: ProcessorStatus
    status_message: str | None
    created_at: float
    updated_at: float
    metrics: StreamMetrics | None


def validate_processor_name(name: str) -> str:
    """1-128 of ``[a-zA-Z0-9_.-]`` (as Rekognition's stream processor names), other than
    ``.`` and ``..``: a processor's name is its snapshot folder's."""
    if not 1 <= len(name) <= 128 or not set(name) <= _NAME_CHARS:
        raise InvalidParameterError(f"invalid stream processor name {name!r}: use 1-128 "
                                    "letters, digits, '_', '.' or '-'")
    if name in (".", ".."):
        raise InvalidParameterError(f"invalid stream processor name {name!r}: it names a "
                                    "folder's parent or itself")
    return name


class StreamProcessors:
    """Stream processor definitions (in the service's database) and the ones running here."""

    def __init__(self, home: Path, store: Store, collections: FaceCollections,
                 search: SearchGate, *, clock: Callable[[], float] = time.time,
                 keys: AccessKeys | None = None, egress: EgressPolicy = OPEN,
                 sealer: Sealer | None = None, allow_devices: bool = True,
                 cameras: Cameras | None = None) -> None:
        self.home = home
        self.store = store
        self.cameras = cameras
        """The operator's cameras, which processors may name instead of an input URL."""
        self.kinesis: KinesisOutput | None = None
        """Where processors that name a Kinesis data stream write (the HTTP API sets it from
        its settings; None: such processors are refused)."""
        self.collections = collections
        self.search = search
        self.sealer = sealer
        self.clock = clock
        self.keys = keys
        self.egress = egress
        self.allow_devices = allow_devices
        """Whether local V4L2 devices may be inputs (the HTTP API sets it from its settings)."""
        self._live: dict[str, StreamProcessor] = {}
        self._hubs: dict[str, EventHub] = {}
        self._lock = threading.RLock()
        self._closed = False
        if keys is not None:
            keys.revoke_hooks.append(self.key_revoked)

    def key_problem(self, actor: str) -> str | None:
        """Why the access key ``actor`` may no longer act (None: it may, or it is no key)."""
        return None if self.keys is None else self.keys.problem(actor)

    def key_revoked(self, key_id: str) -> None:
        """Stop, at once, the processors ``key_id`` created (STOPPED, with the reason, not
        resumed on restart) and end the feeds it opened."""
        reason = f"stopped: the access key {key_id} was revoked"
        with self.store.transaction() as conn:
            names = [r[0] for r in conn.execute(select(processors_t.c.name)
                                                .where(processors_t.c.caller_actor == key_id))]
            conn.execute(update(processors_t).where(processors_t.c.caller_actor == key_id)
                         .values(desired_running=0, updated_at=self.clock()))
        for name in names:
            with self._lock:
                proc = self._live.pop(name, None)
            if proc is not None:
                proc.halt(reason)
            else:
                self._on_status(name, ProcessorStatus.STOPPED, reason)
        with self._lock:
            hubs = list(self._hubs.values())
        for hub in hubs:
            hub.end_for(key_id, f"the access key {key_id} was revoked")

    def _row(self, name: str, caller: Caller | None = None) -> object:
        """The processor's row; one of another case is "not found" to a case-bound caller."""
        case = None if self.keys is None else self.keys.case_of(caller)
        with self.store.transaction() as conn:
            r = conn.execute(select(processors_t).where(processors_t.c.name == name)).first()
        if r is None or (case is not None and r.caller_case != case):
            raise StreamProcessorNotFoundError(f"stream processor {name!r} does not exist")
        return r

    def _info(self, r: object) -> ProcessorInfo:
        g = r._mapping  # type: ignore[attr-defined]
        live = self._live.get(g["name"])
        return ProcessorInfo(g["name"], StreamSettings.model_validate_json(g["settings"]),
                             ProcessorStatus(g["status"]), g["status_message"], g["created_at"],
                             g["updated_at"], live.metrics() if live is not None else None)

    def _resolve(self, settings: StreamSettings) -> tuple[StreamSettings, bool]:
        """The settings a processor runs with (a camera's URL and input format filled in),
        and whether its input is the operator's (a camera: any host, devices allowed)."""
        if settings.camera is None:
            return settings, False
        if self.cameras is None:
            raise InvalidParameterError("this service has no cameras configured")
        cam = self.cameras.get(settings.camera)
        return settings.model_copy(update={
            "input_url": cam.url, "input_format": settings.input_format or cam.input_format}), True

    def _check(self, settings: StreamSettings, caller: Caller) -> tuple[StreamSettings, bool]:
        """Refuse settings that may not run (input, outputs, the creator's key, the search's
        admission); the settings to run with and whether the input is a camera."""
        run, camera = self._resolve(settings)
        assert run.input_url is not None
        _, fmt, is_file = classify_input(run.input_url, run.input_format,
                                         allow_devices=camera or self.allow_devices)
        if not camera and not is_file and fmt != "v4l2":
            self.egress.check_url(run.input_url, "stream input")
        if settings.webhook_url is not None:
            validate_url(settings.webhook_url, self.egress)
        if settings.kinesis_data_stream_arn is not None:
            if self.kinesis is None:
                raise InvalidParameterError("this server has no Kinesis endpoint configured "
                                            "(FACESEARCH_API_KINESIS_ENDPOINT_URL)")
            self.kinesis.check(settings.kinesis_data_stream_arn)
        problem = self.key_problem(caller.actor)
        if problem is not None:
            raise AccessDeniedError(f"the processor cannot run: {problem}")
        self.search.admit(settings.collection, operation="search.stream", caller=caller,
                          threshold=settings.threshold, max_results=settings.max_results,
                          rate_limit=False)
        return run, camera

    def foreground(self, settings: StreamSettings, *, caller: Caller | None = None,
                   name: str = "cli") -> StreamProcessor:
        """A processor for this process to run in the foreground (``facesearch stream run``):
        its search is admitted as a stored processor's is (refusals audited), but it is not
        stored nor resumed, and, being the operator's own command, its input and webhook are
        not held to the egress policy. :meth:`StreamProcessor.start` it and
        :meth:`StreamProcessor.shutdown` it."""
        validate_processor_name(name)
        c = caller or Caller.local()
        run, _ = self._resolve(settings)
        self.search.admit(settings.collection, operation="search.stream", caller=c,
                          threshold=settings.threshold, max_results=settings.max_results,
                          rate_limit=False)
        return StreamProcessor(name, run, self.collections.pipeline, self.search, caller=c,
                               snapshot_dir=self.home / "snapshots" / name,
                               snapshot_root=self.home, clock=self.clock, sealer=self.sealer,
                               kinesis=self.kinesis)

    def create(self, name: str, settings: StreamSettings, *,
               caller: Caller | None = None) -> ProcessorInfo:
        """Define a processor (STOPPED until started)."""
        validate_processor_name(name)
        c = caller or Caller.local()
        self._check(settings, c)
        now = self.clock()
        with self._lock, self.store.transaction() as conn:
            if conn.execute(select(processors_t.c.id)
                            .where(processors_t.c.name == name)).first() is not None:
                raise AlreadyExistsError(f"stream processor {name!r} already exists")
            conn.execute(insert(processors_t).values(
                name=name, settings=settings.model_dump_json(),
                status=ProcessorStatus.STOPPED.value, desired_running=0, caller_actor=c.actor,
                caller_role=c.role, caller_purpose=c.purpose, caller_case=c.case_ref,
                caller_client=c.client, created_at=now, updated_at=now))
        return self.describe(name)

    def describe(self, name: str, *, caller: Caller | None = None) -> ProcessorInfo:
        return self._info(self._row(name, caller))

    def metrics(self, name: str, *, caller: Caller | None = None) -> StreamMetrics | None:
        self._row(name, caller)
        live = self._live.get(name)
        return live.metrics() if live is not None else None

    def hub(self, name: str) -> EventHub:
        with self._lock:
            return self._hubs.setdefault(name, EventHub(self.key_problem))

    def subscribe(self, name: str, *, max_queue: int = 256,
                  loop: asyncio.AbstractEventLoop | None = None,
                  caller: Caller | None = None) -> Subscription:
        """A feed of the processor's events (kept across stops and starts; close it when
        done). Pass the running ``loop`` to read it with ``await sub.aget()``. A ``caller``'s
        feed ends when its key is revoked or expires; a case-bound key may subscribe only to
        its case's processors. Subscribing is audited."""
        self._row(name, caller)
        sub = self.hub(name).subscribe(max_queue, loop, caller.actor if caller else None)
        self.search.trail.record("stream.subscribe", caller, details={"processor": name})
        return sub

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` was called (live feeds end)."""
        return self._closed

    def watch(self, name: str, *, caller: Caller | None = None) -> None:
        """Let ``caller`` watch the processor's live view (a case-bound key: its case's
        processors only); audited once per viewing (``stream.live``)."""
        self._row(name, caller)
        self.search.trail.record("stream.live", caller, details={"processor": name})

    def live_view(self, name: str) -> LiveView | None:
        """The processor's newest processed frame (None while it does not run here or has
        processed none); StreamProcessorNotFoundError once it is deleted."""
        with self._lock:
            live = self._live.get(name)
        if live is None:
            self._row(name)
            return None
        return live.live_view() if live.running else None

    def snapshot(self, name: str, event_id: str, *, caller: Caller | None = None) -> bytes:
        """The JPEG snapshot of one of the processor's events (audited,
        ``stream.snapshot.read``); NotFoundError when it has none or it was erased."""
        try:
            event_id = str(uuid.UUID(event_id))
        except ValueError:
            raise InvalidParameterError(f"invalid event id {event_id!r}") from None
        self._row(name, caller)
        root = (self.home / "snapshots").resolve()
        folder = (root / name).resolve()
        found = sorted(folder.glob(f"*/{event_id}_*.jpg*")) if folder.is_relative_to(root) \
            and folder != root else []
        if not found:
            raise NotFoundError(f"event {event_id} of stream processor {name!r} has no snapshot "
                                "(snapshots off, or erased with the face it matched)")
        data = read_snapshot(self.home, str(found[0].relative_to(self.home.resolve())),
                             self.sealer)
        self.search.trail.record("stream.snapshot.read", caller,
                                 details={"processor": name, "event_id": event_id})
        return data

    def _on_status(self, name: str, status: ProcessorStatus, message: str | None) -> None:
        with self.store.transaction() as conn:
            conn.execute(update(processors_t).where(processors_t.c.name == name).values(
                status=status.value, status_message=message, updated_at=self.clock()))

    def start(self, name: str, *, caller: Caller | None = None) -> ProcessorInfo:
        """Start a processor in this process (ConflictError if it already runs)."""
        r = self._row(name, caller)
        g = r._mapping  # type: ignore[attr-defined]
        settings = StreamSettings.model_validate_json(g["settings"])
        caller = Caller(actor=g["caller_actor"], role=g["caller_role"],
                        purpose=g["caller_purpose"], case_ref=g["caller_case"],
                        client=g["caller_client"])
        # Checked before taking the lock: it may ask the network (DNS, the Kinesis endpoint).
        run, camera = self._check(settings, caller)
        with self._lock:
            if self._closed:
                raise ConflictError("the stream service is shut down")
            live = self._live.get(name)
            if live is not None and live.running:
                raise ConflictError(f"stream processor {name!r} is already running")
            if live is not None:
                live.shutdown()
            # A camera is the operator's: its own host is not held to the egress policy, but
            # where it redirects, what its playlist names and the webhook are.
            proc = StreamProcessor(name, run, self.collections.pipeline, self.search,
                                   caller=caller,
                                   hub=self.hub(name), snapshot_dir=self.home / "snapshots" / name,
                                   snapshot_root=self.home, on_status=self._on_status,
                                   clock=self.clock, key_check=self._key_check(name, caller),
                                   egress=(self.egress.admitting(run.input_url or "") if camera
                                           else self.egress), sealer=self.sealer,
                                   allow_devices=camera or self.allow_devices,
                                   kinesis=self.kinesis)
            with self.store.transaction() as conn:
                conn.execute(update(processors_t).where(processors_t.c.name == name)
                             .values(desired_running=1, updated_at=self.clock()))
            self._live[name] = proc
            proc.start()
        return self.describe(name)

    def _key_check(self, name: str, caller: Caller) -> Callable[[], str | None]:
        """Before each search: whether the creator's key still may; when not, the processor
        is no longer resumed on restart."""
        def check() -> str | None:
            problem = self.key_problem(caller.actor)
            if problem is not None:
                with self._lock:
                    self._live.pop(name, None)
                with self.store.transaction() as conn:
                    conn.execute(update(processors_t).where(processors_t.c.name == name)
                                 .values(desired_running=0, updated_at=self.clock()))
            return problem
        return check

    def stop(self, name: str, *, caller: Caller | None = None) -> ProcessorInfo:
        """Stop a processor (a no-op when it is not running)."""
        self._row(name, caller)
        with self._lock:
            proc = self._live.pop(name, None)
            with self.store.transaction() as conn:
                conn.execute(update(processors_t).where(processors_t.c.name == name)
                             .values(desired_running=0, updated_at=self.clock()))
        if proc is not None:
            proc.shutdown()
        else:
            self._on_status(name, ProcessorStatus.STOPPED, None)
        return self.describe(name)

    def delete(self, name: str, *, caller: Caller | None = None) -> None:
        """Stop and delete a processor; its subscribers' feeds end."""
        self._row(name, caller)
        with self._lock:
            proc = self._live.pop(name, None)
        if proc is not None:
            proc.shutdown()
        with self._lock:
            with self.store.transaction() as conn:
                conn.execute(delete(processors_t).where(processors_t.c.name == name))
                conn.execute(delete(tags_t).where(tags_t.c.kind == "streamprocessor",
                                                  tags_t.c.name == name))
            hub = self._hubs.pop(name, None)
        if hub is not None:
            hub.close()

    def resume(self) -> builtins.list[str]:
        """Start the processors that were running when the service last stopped."""
        with self.store.transaction() as conn:
            names = [r[0] for r in conn.execute(select(processors_t.c.name)
                                                .where(processors_t.c.desired_running == 1))]
        started = []
        for name in names:
            try:
                self.start(name)
                started.append(name)
            except FaceSearchError as exc:
                self._on_status(name, ProcessorStatus.FAILED, exc.message)
                log.error("stream processor %s could not be resumed: %s", name, exc.message)
        return started

    def shutdown(self) -> None:
        """Stop every processor running here (they start again with :meth:`resume`)."""
        with self._lock:
            self._closed = True
            procs, self._live = list(self._live.values()), {}
            hubs, self._hubs = list(self._hubs.values()), {}
        for p in procs:
            p.shutdown()
        for h in hubs:
            h.close()

    # Last in the class: below it, ``list`` in annotations would mean this method.
    def list(self, *, caller: Caller | None = None) -> builtins.list[ProcessorInfo]:
        """Processors in name order (a case-bound ``caller``: its case's only)."""
        q = select(processors_t).order_by(processors_t.c.name)
        case = None if self.keys is None else self.keys.case_of(caller)
        if case is not None:
            q = q.where(processors_t.c.caller_case == case)
        with self.store.transaction() as conn:
            rows = conn.execute(q).all()
        return [self._info(r) for r in rows]
