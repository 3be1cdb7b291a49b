"""A live stream processor: watch a camera for the faces of a watchlist collection.

A processor (Rekognition's CreateStreamProcessor / Start / Stop / List / Describe / Delete)
reads one input: RTSP, HTTP MJPEG, HLS, a local camera (``/dev/videoN``, V4L2), or a video
file played at its own frame rate and looped as a simulated camera; or a camera the operator
configured (:mod:`facesearch.media.cameras`), looked up at each start. It runs three threads:

- capture (:mod:`facesearch.media.stream.capture`): decodes every frame of the input and keeps
  the newest one; reconnects with backoff; sees every cut.
- processing: takes the newest frame, detects faces, follows them with
  :class:`facesearch.video.tracking.IouTracker` (every track ends at a cut, and at a
  reconnection), embeds new tracks and uncertain ones (no confident match yet, i.e. none
  ``certain_margin`` above the threshold the search gate uses: again every
  ``embed_interval_ms``, up to ``max_embeddings_per_track`` times, then every
  ``recheck_interval_ms``) and every other track at least every ``identity_check_ms``; a track
  whose new embedding is less similar than ``split_similarity`` to its previous one is split
  (a new track, searched afresh: a swap of faces never inherits the first face's identity). It
  searches the watchlist and emits one :class:`~facesearch.media.events.StreamEvent` per
  (track, identity) the first time the track matches that identity.
- outputs (:mod:`facesearch.media.stream.outputs`): a webhook and Kinesis, each with its own
  sender thread dropping the oldest when the receiver lags; a JSONL file; snapshots.

Events also go to in-process subscribers (a bounded queue each, oldest dropped for slow
readers; the HTTP API serves them as SSE or WebSocket). Frame-to-event latency is measured from
the moment the frame was decoded to the moment its event is emitted. Every match is a
candidate for human review.

The newest processed frame, with the boxes and best identities of the faces tracked in it, is
kept in memory only (never written) for a live view (:meth:`StreamProcessor.live_view`, a JPEG
of at most :data:`~facesearch.media.stream.model.LIVE_MAX_SIDE` pixels encoded on demand).

Security (see docs/security.md): a processor searches on behalf of the key that created it (a
:class:`~facesearch.services.search.Delegation`, checked by the search gate before every search
and every second) and stops, with the reason recorded, as soon as that key is revoked or
expires. Inputs are allow-listed (:mod:`facesearch.media.inputs`): their hosts pass the
:class:`~facesearch.media.webhook.EgressPolicy` again at each connection.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from facesearch.errors import (
    ConflictError,
    DelegationEndedError,
    FaceSearchError,
    InvalidParameterError,
    ThrottledError,
)
from facesearch.media.candidates import video_match
from facesearch.media.events import EventHub, StreamEvent
from facesearch.media.kinesis import KinesisOutput, SearchedFrame
from facesearch.media.stream.capture import Capture, Captured, Rate, percentile
from facesearch.media.stream.model import (
    LIVE_MAX_SIDE,
    LiveTrack,
    LiveView,
    ProcessorStatus,
    StatusCallback,
    StreamMetrics,
    StreamSettings,
)
from facesearch.media.stream.outputs import Outputs
from facesearch.media.webhook import OPEN, EgressPolicy
from facesearch.services.search import Delegation, Match, SearchGate
from facesearch.storage.crypto import Sealer
from facesearch.types import Caller, Faces, FloatArray, RGBImage
from facesearch.video.frames import detect_frame
from facesearch.video.tracking import IouTracker
from facesearch.vision import similarity as sim
from facesearch.vision.pipeline import Pipeline

log = logging.getLogger(__name__)


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


@dataclass(frozen=True, eq=False)
class _Latest:
    seq: int
    pixels: RGBImage
    item: Captured
    tracks: list[tuple[int, tuple[float, float, float, float], str | None, float | None]]


def identity_of(m: Match) -> str:
    """Who a match stands for: its user, else its external id, else the face itself."""
    return m.face.user_id or m.face.external_id or m.face.face_id


class StreamProcessor:
    """One live processor (see the module docstring). :meth:`start` it, :meth:`shutdown` it."""

    def __init__(self, name: str, settings: StreamSettings, pipeline: Pipeline,
                 search: SearchGate, *, delegation: Delegation | None = None,
                 hub: EventHub | None = None,
                 snapshot_dir: Path | None = None, snapshot_root: Path | None = None,
                 on_status: StatusCallback | None = None,
                 clock: Callable[[], float] = time.time,
                 on_delegation_ended: Callable[[], None] | None = None,
                 egress: EgressPolicy = OPEN, sealer: Sealer | None = None,
                 allow_devices: bool = True, kinesis: KinesisOutput | None = None) -> None:
        if settings.input_url is None:
            raise InvalidParameterError(f"stream processor {name!r}: its camera must be looked "
                                        "up before it runs (StreamProcessors.start)")
        self.name = name
        self.delegation = delegation
        """On whose behalf it searches (the gate checks, before every search, that the
        creator's key may still act); None: the local user's own."""
        self.on_delegation_ended = on_delegation_ended
        """Called when the gate refuses the delegation (the processor then stops)."""
        self.settings = settings
        self.pipeline = pipeline
        self.search = search
        self.caller = delegation.creator if delegation is not None else Caller.local()
        self.hub = hub or EventHub()
        self.outputs = Outputs(name, settings, on_error=self.error, egress=egress, sealer=sealer,
                               kinesis=kinesis, snapshot_dir=snapshot_dir,
                               snapshot_root=snapshot_root, clock=clock)
        """The webhook, Kinesis, JSONL and snapshot outputs (sealed with ``sealer`` when
        encryption is on)."""
        self.on_status = on_status
        self.clock = clock
        self.status = ProcessorStatus.STOPPED
        self._stop = threading.Event()
        self.capture = Capture(name, settings, egress=egress, stop=self._stop, events=self,
                               clock=clock, allow_devices=allow_devices)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        # metrics (the capture's: frames in, reconnections)
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
        self._rate_done = Rate()
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
            self.outputs.open()
            self._stop.clear()
            self.started_at = self.clock()
            self.search_id = str(uuid.uuid4())
            self._set_status(ProcessorStatus.STARTING, None)
            self._threads = [
                threading.Thread(target=self.capture.run, name=f"stream-{self.name}-capture",
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
        self.outputs.close()
        if not failed:
            self._set_status(ProcessorStatus.STOPPED, None)

    stop = shutdown

    @property
    def running(self) -> bool:
        return bool(self._threads) and not self._stop.is_set()

    def _set_status(self, status: ProcessorStatus, message: str | None) -> None:
        self.status = status
        if self.on_status is not None:
            self.on_status(self.name, status, message)

    def error(self, message: str) -> None:
        """Record ``message`` as the last error (the processor goes on)."""
        self.last_error = message
        self.last_error_at = self.clock()

    def ended(self, reason: str) -> None:
        """The input ended for good: STOPPED with ``reason``."""
        self.error(reason)
        self._set_status(ProcessorStatus.STOPPED, reason)

    def halt(self, message: str) -> None:
        """Stop for good, from any thread, with ``message`` recorded as the status message
        (STOPPED; e.g. the creator's key was revoked)."""
        self.error(message)
        log.warning("stream processor %s stopped: %s", self.name, message)
        with self._lock:
            threads, self._threads = self._threads, []
            self._stop.set()
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join(self.settings.read_timeout_s + 5)
        self.outputs.close()
        self._set_status(ProcessorStatus.STOPPED, message)

    def _delegation_ended(self) -> bool:
        """From the processing thread: whether the search gate refuses the processor's
        delegation (its creator's key may no longer act); if so the processor stops
        (:meth:`halt`, from another thread, which joins this one)."""
        if self.delegation is None:
            return False
        try:
            self.search.check_delegation(self.delegation)
        except DelegationEndedError as exc:
            self._stop_delegated(exc.message)
            return True
        return False

    def _stop_delegated(self, problem: str) -> None:
        if self.on_delegation_ended is not None:
            self.on_delegation_ended()
        self._stop.set()
        threading.Thread(target=self.halt, args=(f"stopped: {problem}",),
                         name=f"stream-{self.name}-halt", daemon=True).start()

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

    def fail(self, message: str) -> None:
        """Stop for good on an error that retrying cannot fix."""
        self.error(message)
        log.error("stream processor %s failed: %s", self.name, message)
        self._set_status(ProcessorStatus.FAILED, message)
        self._stop.set()

    def metrics(self) -> StreamMetrics:
        w, k, c = self.outputs.webhook, self.outputs.kinesis_writer, self.capture
        return StreamMetrics(
            status=self.status, connected=c.connected, reconnects=c.reconnects,
            frames_in=c.frames_in, frames_processed=self.frames_processed,
            frames_dropped=c.slot.dropped, fps_in=round(c.rate_in.rate(), 2),
            fps_processed=round(self._rate_done.rate(), 2),
            latency_p50_ms=percentile(self._latency, 50),
            latency_p99_ms=percentile(self._latency, 99),
            processing_p50_ms=percentile(self._processing, 50),
            processing_p99_ms=percentile(self._processing, 99),
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

    # -- processing ----------------------------------------------------------------------

    def _process(self) -> None:
        try:
            self._process_loop()
        except FaceSearchError as exc:
            self.fail(exc.message)
        except Exception as exc:  # a worker records any failure as the processor's last error
            log.exception("stream processor %s crashed", self.name)
            self.fail(f"internal error: {type(exc).__name__}: {exc}")

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
        # The gate decides the threshold (the collection's default when none is set).
        certain = self.search.threshold(s.collection, s.threshold) + s.certain_margin
        next_key_check = 0.0
        while not self._stop.is_set():
            if self.delegation is not None and time.monotonic() >= next_key_check:
                next_key_check = time.monotonic() + 1.0  # and before every search
                if self._delegation_ended():
                    break
            if interval:
                wait = next_at - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
            item = self.capture.slot.take(0.5)
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
                item: Captured) -> None:
        """Search the faces ``want`` (indices into ``faces``; their embeddings ``vecs``) on
        behalf of the processor's creator."""
        s = self.settings
        for k in want:
            states[int(ids[k])].embeddings += 1
        try:
            results: list[list[Match]] = [r.matches for r in self.search.by_vectors(
                s.collection, vecs, operation="search.stream", max_results=s.max_results,
                threshold=s.threshold, caller=None if self.delegation else self.caller,
                delegation=self.delegation, search_id=self.search_id).results]
        except DelegationEndedError as exc:
            self._stop_delegated(exc.message)
            return
        except ThrottledError as exc:
            self.searches_throttled += 1
            self.error(f"search throttled: {exc.message}")
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
        if self.outputs.wants_frames:
            self.outputs.frame(SearchedFrame(
                processor=self.name, input_arn=s.kinesis_video_stream_arn,
                status=ProcessorStatus.RUNNING.value, session=item.session,
                offset_s=item.timestamp_ms / 1000.0, captured_at=item.wall,
                width=int(pixels.shape[1]), height=int(pixels.shape[0]),
                faces=[faces.view(k) for k in want], matches=results))

    def _emit(self, track_id: int, identity: str, match: Match, matches: list[Match],
              box: np.ndarray, pixels: RGBImage, item: Captured) -> None:
        event_id = str(uuid.uuid4())
        snapshot = (self.outputs.snapshot(event_id, match.face.face_id, pixels, box)
                    if self.settings.snapshots else None)
        emitted = time.monotonic()
        latency = (emitted - item.mono) * 1000.0
        event = StreamEvent(
            event_id=event_id, processor=self.name, collection=self.settings.collection,
            track_id=track_id, identity=identity, match=video_match(match),
            candidates=[video_match(m) for m in matches],
            box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            frame_width=pixels.shape[1], frame_height=pixels.shape[0],
            frame_timestamp_ms=item.timestamp_ms, captured_at=item.wall,
            emitted_at=item.wall + (emitted - item.mono), latency_ms=latency, snapshot=snapshot,
            search_id=self.search_id)
        self.events += 1
        self._latency.append(latency)
        self.hub.publish(event)
        self.outputs.event(event.to_json())
