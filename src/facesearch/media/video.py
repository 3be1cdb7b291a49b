"""Stored video: decoding, face tracking, and asynchronous face search / face detection jobs.

Semantics follow Rekognition Video's StartFaceSearch / GetFaceSearch and StartFaceDetection /
GetFaceDetection:

- Decoding is PyAV (FFmpeg): H.264, H.265, MPEG-4, MJPEG and more, in MP4, MOV, MKV, AVI...
  Timestamps are milliseconds from the video stream's first frame.
- Frames are sampled at ``sample_fps`` (the first frame of each 1/sample_fps interval), faces
  are detected on each sampled frame (frames larger than ``detect_max_side`` are scaled down
  for detection only), followed across frames by :class:`facesearch.media.tracking.IouTracker`.
  Every decoded frame goes through the shot detector (:mod:`facesearch.media.shots`): all
  tracks end at a cut. In face search jobs every face is embedded, and a track is split where
  a face's embedding disagrees with the track's previous one (``split_similarity``). Each track
  ("person", with a per-video ``Index``) is searched with its template: the quality-weighted
  mean of its ``views_per_track`` best views (:class:`~facesearch.media.tracking.TrackTemplate`)
  (one audited 1:N search per batch of persons, on behalf of the caller that submitted the
  job); its thumbnail is its best view, a frame of that track.
- Jobs are rows in the service's SQLite database (their results too), run by ``workers``
  threads, can be cancelled, report progress (percent of the video's duration) and, when they
  end, POST a notification (shaped like Rekognition's SNS message) to a webhook and/or publish
  Rekognition's completion message to an SNS topic (:mod:`facesearch.media.sns`; a topic is
  refused when no SNS endpoint is configured, never accepted and dropped). Jobs found
  in progress when the service starts (:meth:`VideoJobs.start`) whose process is gone are run
  again from the start if their input is still there, else failed with the reason.

Every similarity is a candidate for human review, never an identification.
"""

from __future__ import annotations

import builtins
import enum
import io
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

import numpy as np
from PIL import Image as PILImage
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    delete,
    func,
    insert,
    select,
    update,
)

from facesearch.errors import (
    AccessDeniedError,
    ConflictError,
    EncryptionError,
    FaceSearchError,
    IdempotencyMismatchError,
    InvalidParameterError,
    InvalidVideoError,
    JobNotFoundError,
    NotFoundError,
    ThrottledError,
    VideoTooLargeError,
)
from facesearch.governance.keys import AccessKeys
from facesearch.limits import MAX_RESULTS
from facesearch.media.frames import (
    VideoInfo,
    VideoMatch,
    best_matches,
    detect_frame,
    frame_at,
    iter_frames,
    probe,
)
from facesearch.media.sns import SnsPublisher, check_topic_arn, completion_message
from facesearch.media.tracking import SPLIT_SIMILARITY, IouTracker, TrackTemplate, view_scores
from facesearch.vision.recognisability import recognisability
from facesearch.media.webhook import OPEN, EgressPolicy, post_json, validate_url
from facesearch.services.collection import FaceCollections
from facesearch.services.search import Match, SearchGate
from facesearch.storage.crypto import is_sealed
from facesearch.storage.schema import detections_t, jobs_t, matches_t, thumbnails_t
from facesearch.storage.store import Store
from facesearch.types import Caller, Faces, FaceView, FloatArray, IntArray
from facesearch.vision import similarity as sim
from facesearch.vision.pipeline import Pipeline

if TYPE_CHECKING:
    from facesearch.services.cluster import PipelineSpec, RayCluster

log = logging.getLogger(__name__)

MAX_VIDEO_BYTES = 10 * 1024**3
"""Largest accepted video (10 GB, as Rekognition Video's limit)."""
MAX_PAGE = 1000

VideoInput = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
"""A video: a server path, its bytes, or a readable binary file object (an upload, an S3
object's body)."""


class JobKind(str, enum.Enum):
    FACE_SEARCH = "FACE_SEARCH"
    FACE_DETECTION = "FACE_DETECTION"


class JobStatus(str, enum.Enum):
    """Rekognition's job statuses, plus CANCELLED (report it as FAILED to Rekognition clients)."""

    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
SortBy = Literal["TIMESTAMP", "INDEX"]


class VideoJobSettings(BaseModel):
    """How a video is analysed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_fps: float = Field(default=5.0, gt=0, le=120,
                              description="frames analysed per second of video")
    threshold: float | None = Field(
        default=None, ge=0, le=100,
        description="face match threshold (0-100; None: the collection's default)")
    max_results: int = Field(default=10, ge=1, le=MAX_RESULTS, description="candidates kept per person")
    detect_max_side: int | None = Field(
        default=1280, ge=160,
        description="frames whose longest side exceeds this (px) are scaled down for detection")
    views_per_track: int = Field(
        default=5, ge=1, le=50,
        description="best views of each person (by quality) averaged, quality-weighted, into "
                    "the template it is searched with")
    split_similarity: float = Field(
        default=SPLIT_SIMILARITY, ge=0, le=100,
        description="a person's track is split where two consecutive views of it are less "
                    "similar than this (0-100)")
    min_face_size: float = Field(
        default=0.0, ge=0, description="faces with a smaller inter-ocular distance (px) are ignored")
    iou_threshold: float = Field(
        default=0.2, gt=0, le=1,
        description="tracker: least IoU to follow a face to the next sampled frame")
    max_gap_ms: int = Field(default=1500, ge=0,
                            description="tracker: a person unseen this long (ms) ends")


# -- decoding ---------------------------------------------------------------------------------


# -- per-frame analysis -------------------------------------------------------------------------


class _Stopped(Exception):
    """Raised inside a scan when the caller asked it to stop."""


@dataclass(frozen=True, eq=False)
class VideoScan:
    """Every face detected in the sampled frames of a video, with its person track.

    Detections are columnar: ``timestamps`` (N,) ms, ``tracks`` (N,) person index, ``shots``
    (N,) shot index (0 before the first cut), ``faces`` (N faces, with quality, in video
    pixels). ``embeddings`` ((M, D) unit vectors) are the templates of the persons
    ``embedding_tracks`` ((M,), one each); empty when not asked for. ``best_views`` maps each
    person to the time (ms) and aligned face chip of its best view (the job's thumbnail of the
    person). ``cuts`` (ms, ascending) are when each shot after the first begins.
    """

    info: VideoInfo
    timestamps: IntArray
    tracks: IntArray
    faces: Faces
    embeddings: FloatArray
    embedding_tracks: IntArray
    frames: int
    best_views: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)
    shots: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    cuts: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def persons(self) -> int:
        return len(np.unique(self.tracks))


@dataclass(eq=False)
class _Person:
    """A track being followed in :func:`scan_video`: its embeddings and its best view."""

    template: TrackTemplate
    best_weight: float = -1.0
    best_ms: int = 0
    best_chip: np.ndarray | None = None


def _recognisability(pipeline: Pipeline, norms: np.ndarray | None,
                     n: int) -> np.ndarray | None:
    """Each view's recognisability as a 0-1 factor of its weight in the track's template
    (:func:`~facesearch.media.tracking.view_scores`), or None where the embedder gives no
    score (dlib's ResNet) or nothing was embedded (detection jobs)."""
    if norms is None:
        return None
    score = recognisability(norms, n, pipeline.embedder.name)
    if np.isnan(score).all():
        return None
    return np.where(np.isnan(score), 1.0, score / 100.0)


def scan_video(path: str | os.PathLike[str], pipeline: Pipeline, settings: VideoJobSettings, *,
               embed: bool = True, info: VideoInfo | None = None,
               on_progress: Callable[[float], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> VideoScan:
    """Detect and track faces over a video's sampled frames; with ``embed``, embed every face
    and search each person with its track's template.

    Tracks end at cuts (every decoded frame goes through the shot detector) and, with
    ``embed``, split where a face's embedding is less similar than
    ``settings.split_similarity`` to its track's previous one (a new person from there on).
    ``on_progress`` gets the fraction (0-1) of the video done after each sampled frame;
    ``should_stop`` is asked before each frame (True aborts with ``_Stopped``).
    """
    info = info or probe(path)
    tracker = IouTracker(settings.iou_threshold, settings.max_gap_ms)
    split_cos = float(sim.to_cosine(settings.split_similarity, pipeline.model_version))
    people: dict[int, _Person] = {}
    best_views: dict[int, tuple[int, np.ndarray]] = {}
    ts_parts: list[IntArray] = []
    track_parts: list[IntArray] = []
    shot_parts: list[IntArray] = []
    face_parts: list[Faces] = []
    vec_parts: list[FloatArray] = []
    vec_tracks: list[int] = []
    cuts: list[int] = []
    shot = 0
    frames = 0

    def finish(ids: Sequence[int]) -> None:
        for tid in ids:
            person = people.pop(tid, None)
            if person is None:
                continue
            if person.best_chip is not None:
                best_views[tid] = (person.best_ms, person.best_chip)
            if embed and len(person.template):
                vec_parts.append(person.template.template()[None])
                vec_tracks.append(tid)

    duration = float(info.duration_ms or 0)
    for frame in iter_frames(path, sample_fps=settings.sample_fps, shots=True):
        if should_stop is not None and should_stop():
            raise _Stopped
        frames += 1
        if frame.shot != shot:
            finish(tracker.reset())
            shot = frame.shot
            cuts.append(frame.shot_start_ms)
        faces, chips = detect_frame(pipeline, frame.pixels, settings.detect_max_side)
        if settings.min_face_size > 0 and len(faces):
            assert faces.quality is not None
            keep = faces.quality.size >= settings.min_face_size
            faces, chips = faces[keep], chips[keep]
        ids, ended = tracker.update(faces.boxes, frame.timestamp_ms)
        finish(ended)
        if len(faces):
            assert faces.quality is not None
            vecs, norms = pipeline.vectors(chips) if embed else (None, None)
            weight = view_scores(faces.quality, faces.scores,
                                 _recognisability(pipeline, norms, len(faces)))
            for k, tid in enumerate(ids.tolist()):
                person = people.get(tid)
                if vecs is not None and person is not None \
                        and not person.template.agrees(vecs[k], split_cos):
                    finish([tid])
                    tid = tracker.split(tid, frame.timestamp_ms)
                    ids[k] = tid
                    person = None
                if person is None:
                    person = people[tid] = _Person(TrackTemplate(settings.views_per_track))
                if vecs is not None:
                    person.template.add(vecs[k], float(weight[k]))
                if float(weight[k]) > person.best_weight:
                    person.best_weight = float(weight[k])
                    person.best_ms = frame.timestamp_ms
                    person.best_chip = chips[k].copy()
            ts_parts.append(np.full(len(faces), frame.timestamp_ms, np.int64))
            track_parts.append(ids)
            shot_parts.append(np.full(len(faces), shot, np.int64))
            face_parts.append(faces)
        if on_progress is not None and duration > 0:
            on_progress(min(frame.timestamp_ms / duration, 1.0))
    finish(sorted(people))
    dim = pipeline.embedder.dim
    empty = np.zeros(0, np.int64)
    return VideoScan(
        info=info,
        timestamps=np.concatenate(ts_parts) if ts_parts else empty,
        tracks=np.concatenate(track_parts) if track_parts else empty,
        faces=Faces.concatenate(face_parts),
        embeddings=(np.concatenate(vec_parts) if vec_parts
                    else np.zeros((0, dim), np.float32)),
        embedding_tracks=np.array(vec_tracks, np.int64),
        frames=frames, best_views=best_views,
        shots=np.concatenate(shot_parts) if shot_parts else empty,
        cuts=np.array(cuts, np.int64),
    )


# -- storage ----------------------------------------------------------------------------------



# -- results ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoFace:
    """A face seen in a frame: box (x1, y1, x2, y2) and five landmarks in video pixels,
    detector confidence (0-1), inter-ocular size (px), sharpness and brightness (0-100), head
    pose (degrees)."""

    box: tuple[float, float, float, float]
    confidence: float
    landmarks: list[tuple[float, float]]
    size: float
    sharpness: float
    brightness: float
    yaw: float
    pitch: float
    roll: float

    def view(self) -> FaceView:
        """The face as plain numbers (in video pixels)."""
        return FaceView(self.box, self.confidence,
                        tuple((float(x), float(y)) for x, y in self.landmarks),
                        {"size": self.size, "sharpness": self.sharpness,
                         "brightness": self.brightness, "yaw": self.yaw, "pitch": self.pitch,
                         "roll": self.roll})


@dataclass(frozen=True)
class PersonMatch:
    """One person (``person_index``, a track) at one timestamp (ms), with the person's
    candidates (the same at each of the person's timestamps)."""

    timestamp_ms: int
    person_index: int
    face: VideoFace
    matches: list[VideoMatch]


@dataclass(frozen=True)
class FaceDetection:
    timestamp_ms: int
    face: VideoFace


@dataclass(frozen=True)
class PersonSummary:
    """A person's span in the video (ms), how often seen, and candidates."""

    person_index: int
    first_ms: int
    last_ms: int
    detections: int
    matches: list[VideoMatch]


@dataclass(frozen=True)
class PersonThumbnail:
    """A person's face at its best view (``timestamp_ms``), as a small JPEG."""

    person_index: int
    timestamp_ms: int
    jpeg: bytes


FRAME_MAX_SIDE = 960
"""Largest side (px) of a video frame served to a viewer."""


def _jpeg(pixels: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(pixels)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _jpeg_scaled(pixels: np.ndarray, max_side: int) -> tuple[bytes, int, int]:
    """``pixels`` as a JPEG scaled to at most ``max_side`` a side, and its size."""
    img = PILImage.fromarray(np.ascontiguousarray(pixels))
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), PILImage.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue(), img.width, img.height


def _thumbnail_aad(job_row: int, person: int) -> bytes:
    return f"video-thumbnail:{job_row}:{person}".encode()


@dataclass(frozen=True)
class VideoJob:
    """A job's state. ``progress`` is the percent (0-100) of the video analysed;
    ``notification`` is None until the webhook or SNS topic was tried, then "delivered" or the
    failure (``webhook: ...; sns: ...`` when the job has both)."""

    job_id: str
    kind: JobKind
    status: JobStatus
    status_message: str | None
    progress: float
    collection: str | None
    source: str
    settings: VideoJobSettings
    video: VideoInfo | None
    job_tag: str | None
    webhook_url: str | None
    sns_topic_arn: str | None
    notification: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    frames_analysed: int | None
    persons: int | None
    matched_persons: int | None
    attempts: int


@dataclass(frozen=True)
class FaceSearchPage:
    job: VideoJob
    persons: list[PersonMatch]
    next_token: str | None


@dataclass(frozen=True)
class FaceDetectionPage:
    job: VideoJob
    faces: list[FaceDetection]
    next_token: str | None


UNREADABLE_MESSAGE = "Unsupported codec/format."
"""The StatusMessage of a Rekognition job whose video cannot be read (as AWS's)."""


def _video_columns(info: VideoInfo | None) -> dict[str, object]:
    """A job row's video columns (all null for a video that could not be read)."""
    if info is None:
        return {}
    return {"video_format": info.format, "video_codec": info.codec, "video_width": info.width,
            "video_height": info.height, "video_fps": info.fps,
            "video_duration_ms": info.duration_ms, "video_frames": info.frame_count,
            "video_start_ms": info.start_ms}


def _job_from_row(r: object) -> VideoJob:
    g = r._mapping  # type: ignore[attr-defined]
    video = None
    if g["video_width"] is not None:
        video = VideoInfo(g["video_format"], g["video_codec"], g["video_width"],
                          g["video_height"], g["video_fps"], g["video_duration_ms"],
                          g["video_frames"], g["video_start_ms"] or 0)
    return VideoJob(
        job_id=g["job_id"], kind=JobKind(g["kind"]), status=JobStatus(g["status"]),
        status_message=g["status_message"], progress=round(float(g["progress"]), 2),
        collection=g["collection"], source=g["source"],
        settings=VideoJobSettings.model_validate_json(g["settings"]), video=video,
        job_tag=g["job_tag"], webhook_url=g["webhook_url"], sns_topic_arn=g["sns_topic_arn"],
        notification=g["notification"],
        created_at=g["created_at"], started_at=g["started_at"], finished_at=g["finished_at"],
        frames_analysed=g["frames_analysed"], persons=g["persons"],
        matched_persons=g["matched_persons"], attempts=g["attempts"])


def _video_face(r: object) -> VideoFace:
    import json

    g = r._mapping  # type: ignore[attr-defined]
    return VideoFace(box=(g["x1"], g["y1"], g["x2"], g["y2"]), confidence=g["confidence"],
                     landmarks=[(float(x), float(y)) for x, y in json.loads(g["landmarks"])],
                     size=g["q_size"], sharpness=g["q_sharpness"], brightness=g["q_brightness"],
                     yaw=g["q_yaw"], pitch=g["q_pitch"], roll=g["q_roll"])


def _page_args(max_results: int, next_token: str | None) -> int:
    if not 1 <= max_results <= MAX_PAGE:
        raise InvalidParameterError(f"max results must be between 1 and {MAX_PAGE}, "
                                    f"got {max_results}")
    if next_token is None:
        return 0
    try:
        offset = int(next_token)
    except ValueError:
        raise InvalidParameterError(f"invalid next token {next_token!r}") from None
    if offset < 0:
        raise InvalidParameterError(f"invalid next token {next_token!r}")
    return offset


# -- the job manager --------------------------------------------------------------------------

class VideoJobs:
    """Asynchronous video face search and face detection jobs on one data directory.

    ``workers`` jobs run at once; at most ``max_queued`` wait. Server paths must lie under one
    of ``path_roots`` when it is given (the HTTP API should set it; the CLI does not).
    """

    MAX_ATTEMPTS = 3

    def __init__(self, home: Path, store: Store, collections: FaceCollections,
                 search: SearchGate, *, workers: int = 1, max_queued: int = 100,
                 max_video_bytes: int = MAX_VIDEO_BYTES,
                 per_key: tuple[int, int] = (10, 1024**3),
                 path_roots: Sequence[Path] | None = None,
                 clock: Callable[[], float] = time.time,
                 keys: AccessKeys | None = None, egress: EgressPolicy = OPEN,
                 cluster: RayCluster | None = None,
                 pipeline_spec: PipelineSpec | None = None) -> None:
        if workers < 1:
            raise InvalidParameterError("video workers must be at least 1")
        self.home = home
        self.store = store
        self.collections = collections
        self.search = search
        self.workers = workers
        self.max_queued = max_queued
        self.per_key = per_key
        """(jobs, bytes of uploads) one caller's waiting jobs may hold."""
        self.max_video_bytes = max_video_bytes
        self.path_roots = None if path_roots is None else [Path(p).resolve() for p in path_roots]
        self.clock = clock
        self.uploads = home / "video" / "uploads"
        self._owner = owner_token()
        self._queue: queue.Queue[str] = queue.Queue()
        self._threads: builtins.list[threading.Thread] = []
        self._cancel: dict[str, threading.Event] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._reasons: dict[str, str] = {}
        self.keys = keys
        self.egress = egress
        self.cluster = cluster
        """Scans run as Ray tasks on it (with ``pipeline_spec``'s pipeline), else here."""
        self.pipeline_spec = pipeline_spec
        if cluster is not None and pipeline_spec is None:
            raise InvalidParameterError("video scans on a Ray cluster need a pipeline spec")
        self.sns: SnsPublisher | None = None
        """Publishes completion messages to SNS topics (the HTTP API sets it from its
        settings; None: jobs that name a topic are refused)."""
        if keys is not None:
            keys.revoke_hooks.append(self._key_revoked)

    def check_sns(self, topic_arn: str | None) -> None:
        """Refuse (:class:`InvalidParameterError`) an SNS topic this service cannot publish
        to: a malformed ARN, or no SNS endpoint configured (a topic is never accepted and
        then dropped)."""
        if topic_arn is None:
            return
        check_topic_arn(topic_arn)
        if self.sns is None:
            raise InvalidParameterError(
                "NotificationChannel: this server has no SNS endpoint configured "
                "(FACESEARCH_API_SNS_ENDPOINT_URL), so it cannot publish the completion "
                "message; poll GetFaceSearch / GetFaceDetection instead")

    def _key_revoked(self, key_id: str) -> None:
        """Cancel, at once, every job in progress that the revoked key submitted."""
        with self.store.transaction() as conn:
            ids = [r[0] for r in conn.execute(select(jobs_t.c.job_id).where(
                jobs_t.c.caller_actor == key_id,
                jobs_t.c.status == JobStatus.IN_PROGRESS.value))]
        for job_id in ids:
            self._reasons[job_id] = f"cancelled: the access key {key_id} was revoked"
            self.cancel(job_id)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, *, recover: bool = True) -> builtins.list[str]:
        """Start the worker threads; with ``recover``, take over jobs left in progress by a
        process that is gone (run again from the start, or failed when their input is gone).
        Returns the ids of the jobs taken over."""
        self._ensure_workers()
        return self.recover() if recover else []

    def _ensure_workers(self) -> None:
        with self._lock:
            if self._stop.is_set():
                raise ConflictError("the video job service is shut down")
            while len(self._threads) < self.workers:
                t = threading.Thread(target=self._work, name=f"video-job-{len(self._threads)}",
                                     daemon=True)
                self._threads.append(t)
                t.start()

    def recover(self) -> builtins.list[str]:
        """Requeue (or fail) jobs in progress whose owning process is gone: those of this host's
        processes and those without an owner. Another host's jobs are left to it (its uploads
        are in its data directory). Of several processes recovering at once, one takes a job."""
        now = self.clock()
        taken: builtins.list[str] = []
        failed: builtins.list[str] = []
        with self.store.transaction() as conn:
            rows = conn.execute(select(jobs_t).where(jobs_t.c.status == JobStatus.IN_PROGRESS.value)
                                .order_by(jobs_t.c.id)).all()
            for r in rows:
                if r.owner == self._owner or _owner_alive(r.owner):
                    continue
                values: dict[str, object]
                if r.cancel_requested:
                    values = {"status": JobStatus.CANCELLED.value, "status_message": "cancelled",
                              "finished_at": now}
                elif not Path(r.input_path).is_file():
                    values = {"status": JobStatus.FAILED.value, "finished_at": now,
                              "status_message": "the service restarted and the video input is "
                                                "no longer available"}
                elif r.attempts >= self.MAX_ATTEMPTS:
                    values = {"status": JobStatus.FAILED.value, "finished_at": now,
                              "status_message": f"gave up after {r.attempts} attempts "
                                                f"interrupted by restarts"}
                else:
                    values = {"owner": self._owner, "progress": 0.0,
                              "status_message": "resumed after a restart (analysed again from "
                                                "the start)"}
                # Compare and set: of two processes recovering at once, one takes the job.
                claimed = conn.execute(
                    update(jobs_t).where(
                        jobs_t.c.id == r.id,
                        jobs_t.c.status == JobStatus.IN_PROGRESS.value,
                        jobs_t.c.owner.is_(None) if r.owner is None
                        else jobs_t.c.owner == r.owner)
                    .values(updated_at=now, **values)).rowcount
                if claimed == 1:
                    (taken if "owner" in values else failed).append(r.job_id)
        if taken:
            self._ensure_workers()
        for job_id in taken:
            self._queue.put(job_id)
        for job_id in failed:
            self._finish_input(job_id)
            self._notify(job_id)
        return taken

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop the workers. Running jobs stop where they are and stay IN_PROGRESS, to be run
        again by the next :meth:`start`."""
        self._stop.set()
        with self._lock:
            for ev in self._cancel.values():
                ev.set()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout_s
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self.store.transaction() as conn:
            conn.execute(update(jobs_t).where(jobs_t.c.owner == self._owner,
                                              jobs_t.c.status == JobStatus.IN_PROGRESS.value)
                         .values(owner=released_token(), updated_at=self.clock()))

    # -- submitting ----------------------------------------------------------------------

    def start_face_search(self, collection: str, video: VideoInput, *,
                          settings: VideoJobSettings | None = None, job_tag: str | None = None,
                          webhook_url: str | None = None, client_request_token: str | None = None,
                          source_name: str | None = None, caller: Caller | None = None,
                          sns_topic_arn: str | None = None,
                          unreadable_fails_job: bool = False) -> str:
        """Queue a search of the faces of ``video`` against ``collection``; returns the job id.

        The same ``client_request_token`` returns the first job's id (idempotent retries).
        ``webhook_url`` gets a POST and ``sns_topic_arn`` Rekognition's completion message
        when the job ends. A video that cannot be read is refused (InvalidVideoError), or
        with ``unreadable_fails_job`` (Rekognition) accepted as a job that is FAILED at once
        with :data:`UNREADABLE_MESSAGE`.
        """
        s = settings or VideoJobSettings()
        self.check_sns(sns_topic_arn)
        # Refused (and audited) now, before the upload is kept, if the policy would refuse it;
        # the job's batches are then not rate limited again.
        self.search.admit(collection, operation="search.video", caller=caller,
                          threshold=s.threshold, max_results=s.max_results, rate_limit=False)
        return self._submit(JobKind.FACE_SEARCH, collection, video, settings, job_tag,
                            webhook_url, client_request_token, source_name, caller,
                            sns_topic_arn, unreadable_fails_job)

    def start_face_detection(self, video: VideoInput, *, settings: VideoJobSettings | None = None,
                             job_tag: str | None = None, webhook_url: str | None = None,
                             client_request_token: str | None = None,
                             source_name: str | None = None,
                             caller: Caller | None = None,
                             sns_topic_arn: str | None = None,
                             unreadable_fails_job: bool = False) -> str:
        """Queue detection (and tracking) of the faces of ``video``; returns the job id
        (``unreadable_fails_job``: as :meth:`start_face_search`)."""
        return self._submit(JobKind.FACE_DETECTION, None, video, settings, job_tag, webhook_url,
                            client_request_token, source_name, caller, sns_topic_arn,
                            unreadable_fails_job)

    def _submit(self, kind: JobKind, collection: str | None, video: VideoInput,
                settings: VideoJobSettings | None, job_tag: str | None, webhook_url: str | None,
                token: str | None, source_name: str | None, caller: Caller | None,
                sns_topic_arn: str | None = None, unreadable_fails_job: bool = False) -> str:
        settings = settings or VideoJobSettings()
        self.check_sns(sns_topic_arn)
        if webhook_url is not None:
            validate_url(webhook_url, self.egress)
        if job_tag is not None and not 1 <= len(job_tag) <= 1024:
            raise InvalidParameterError("job tag must be 1-1024 characters")
        if token is not None:
            if not 1 <= len(token) <= 64:
                raise InvalidParameterError("client request token must be 1-64 characters")
            with self.store.transaction() as conn:
                prior = conn.execute(select(jobs_t.c.job_id, jobs_t.c.kind)
                                     .where(jobs_t.c.client_token == token)).first()
            if prior is not None:
                if prior.kind != kind.value:
                    raise IdempotencyMismatchError(f"client request token {token!r} was used for "
                                             f"another kind of job")
                return str(prior.job_id)
        with self._lock:
            if self._stop.is_set():
                raise ConflictError("the video job service is shut down")
        with self.store.transaction() as conn:
            waiting = conn.execute(select(func.count()).select_from(jobs_t).where(
                jobs_t.c.status == JobStatus.IN_PROGRESS.value,
                jobs_t.c.started_at.is_(None))).scalar_one()
        if waiting >= self.max_queued:
            raise ThrottledError(f"{waiting} video jobs are waiting; try again later",
                                 retry_after=30)
        c = caller or Caller.local()
        self._parked(c.actor, 0)
        job_id = str(uuid.uuid4())
        path, owned, label = self._materialise(job_id, video, source_name)
        failed: str | None = None  # why a job is FAILED from the start
        try:
            if owned:
                self._parked(c.actor, path.stat().st_size)
            try:
                info: VideoInfo | None = probe(path, label)
            except InvalidVideoError:
                if not unreadable_fails_job:
                    raise
                info, failed = None, UNREADABLE_MESSAGE
            now = self.clock()
            with self.store.transaction() as conn:
                conn.execute(insert(jobs_t).values(
                    job_id=job_id, kind=kind.value,
                    status=(JobStatus.IN_PROGRESS if failed is None else JobStatus.FAILED).value,
                    status_message=failed, finished_at=None if failed is None else now,
                    progress=0.0, collection=collection, source=label, input_path=str(path),
                    owned_input=int(owned), settings=settings.model_dump_json(),
                    job_tag=job_tag, client_token=token, webhook_url=webhook_url,
                    sns_topic_arn=sns_topic_arn, caller_actor=c.actor, caller_role=c.role,
                    caller_purpose=c.purpose,
                    caller_case=c.case_ref, caller_client=c.client, owner=self._owner,
                    attempts=0, **_video_columns(info), created_at=now, updated_at=now))
        except BaseException:
            if owned:
                path.unlink(missing_ok=True)
            raise
        if failed is not None:
            self._finish_input(job_id)
            self._notify(job_id)
            return job_id
        self._ensure_workers()
        self._queue.put(job_id)
        return job_id

    def _parked(self, actor: str, adding: int) -> None:
        """:class:`ThrottledError` when ``actor``'s waiting jobs are :attr:`per_key`'s
        number already, or would hold more upload bytes than it allows with ``adding``
        (access keys only: the operator's own CLI and library use are not limited)."""
        if actor.startswith("local:"):
            return
        with self.store.transaction() as conn:
            rows = conn.execute(select(jobs_t.c.input_path, jobs_t.c.owned_input).where(
                jobs_t.c.status == JobStatus.IN_PROGRESS.value, jobs_t.c.started_at.is_(None),
                jobs_t.c.caller_actor == actor)).all()
        jobs, max_bytes = self.per_key
        if len(rows) >= jobs:
            raise ThrottledError(f"{len(rows)} of your video jobs are waiting (the limit per "
                                 "caller); try again when one has started", retry_after=30)
        held = sum(Path(r.input_path).stat().st_size for r in rows
                   if r.owned_input and Path(r.input_path).is_file())
        if held + adding > max_bytes:
            raise ThrottledError(f"your waiting video jobs hold {held} bytes of uploads; with "
                                 f"this one over the {max_bytes}-byte limit per caller; try "
                                 "again when one has started", retry_after=30)

    def _materialise(self, job_id: str, video: VideoInput,
                     source_name: str | None) -> tuple[Path, bool, str]:
        """``(path to read, whether the service owns that file, label)`` for an input."""
        if isinstance(video, (str, os.PathLike)):
            p = Path(video)
            if self.path_roots is not None:
                real = p.resolve()
                if not any(real.is_relative_to(root) for root in self.path_roots):
                    raise InvalidParameterError(f"{p}: not under an allowed video directory")
            if not p.is_file():
                raise InvalidVideoError(f"{p}: no such file")
            size = p.stat().st_size
            if size > self.max_video_bytes:
                raise VideoTooLargeError(f"{p}: {size / 1e9:.1f} GB is over the "
                                         f"{self.max_video_bytes / 1e9:.1f} GB video limit")
            return p.resolve(), False, source_name or str(p)
        self.uploads.mkdir(parents=True, exist_ok=True, mode=0o700)
        suffix = Path(source_name).suffix[:10] if source_name else ""
        dest = self.uploads / f"{job_id}{suffix}"
        written = 0
        try:
            with os.fdopen(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                           "wb") as f:
                if isinstance(video, (bytes, bytearray, memoryview)):
                    written = len(video)
                    if written > self.max_video_bytes:
                        raise VideoTooLargeError(self._too_large(written))
                    f.write(video)
                else:
                    while chunk := video.read(1 << 20):
                        written += len(chunk)
                        if written > self.max_video_bytes:
                            raise VideoTooLargeError(self._too_large(written))
                        f.write(chunk)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        if not written:
            dest.unlink(missing_ok=True)
            raise InvalidVideoError("the video is empty")
        return dest, True, source_name or "upload"

    def _too_large(self, n: int) -> str:
        return (f"video: more than {self.max_video_bytes / 1e9:.1f} GB (the video limit); "
                f"read {n / 1e9:.1f} GB")

    # -- reading -----------------------------------------------------------------------

    def _row(self, job_id: str, caller: Caller | None = None) -> object:
        """The job's row; a job of another case is "not found" to a case-bound ``caller``."""
        case = self._case(caller)
        with self.store.transaction() as conn:
            r = conn.execute(select(jobs_t).where(jobs_t.c.job_id == job_id)).first()
        if r is None or (case is not None and r.caller_case != case):
            raise JobNotFoundError(f"video job {job_id!r} does not exist")
        return r

    def describe(self, job_id: str, *, caller: Caller | None = None) -> VideoJob:
        """The job (``caller``: a case-bound key sees only its case's jobs)."""
        return _job_from_row(self._row(job_id, caller))

    def _audit_read(self, job: VideoJob, caller: Caller | None, what: str, n: int) -> None:
        """Record a read of a job's results (who, which job, how many entries)."""
        self.search.trail.record("video.results.read", caller, collection=job.collection,
                                 details={"job_id": job.job_id, "kind": job.kind.value,
                                          "what": what, "entries": n})

    def _key_problem(self, actor: str) -> str | None:
        return None if self.keys is None else self.keys.problem(actor)

    def _case(self, caller: Caller | None) -> str | None:
        return None if self.keys is None else self.keys.case_of(caller)

    def wait(self, job_id: str, timeout_s: float | None = None) -> VideoJob:
        """The job once it has ended (or as it is when ``timeout_s`` passes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.describe(job_id)
            if job.status in TERMINAL:
                return job
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0:
                return job
            with self._done:
                self._done.wait(left)

    def face_search_results(self, job_id: str, *, max_results: int = MAX_PAGE,
                            next_token: str | None = None, sort_by: SortBy = "TIMESTAMP",
                            matched_only: bool = False,
                            caller: Caller | None = None) -> FaceSearchPage:
        """A page of a face search job's persons (GetFaceSearch). Empty until it SUCCEEDED."""
        offset = _page_args(max_results, next_token)
        if sort_by not in ("TIMESTAMP", "INDEX"):
            raise InvalidParameterError(f"sort by must be TIMESTAMP or INDEX, got {sort_by!r}")
        row = self._row(job_id, caller)
        job = _job_from_row(row)
        if job.kind is not JobKind.FACE_SEARCH:
            raise InvalidParameterError(f"job {job_id} is a face detection job")
        if job.status is not JobStatus.SUCCEEDED:
            return FaceSearchPage(job, [], None)
        jr = row.id  # type: ignore[attr-defined]
        d = detections_t.c
        q = select(detections_t).where(d.job_row == jr)
        if matched_only:
            q = q.where(d.person.in_(select(matches_t.c.person).where(matches_t.c.job_row == jr)))
        order = ((d.timestamp_ms, d.person) if sort_by == "TIMESTAMP"
                 else (d.person, d.timestamp_ms))
        q = q.order_by(*order, d.id).limit(max_results + 1).offset(offset)
        with self.store.transaction() as conn:
            rows = conn.execute(q).all()
            persons = sorted({r.person for r in rows[:max_results]})
            matches = self._matches(conn, jr, persons)
        page = [PersonMatch(r.timestamp_ms, r.person, _video_face(r), matches.get(r.person, []))
                for r in rows[:max_results]]
        nxt = str(offset + max_results) if len(rows) > max_results else None
        self._audit_read(job, caller, "persons", len(page))
        return FaceSearchPage(job, page, nxt)

    def _matches(self, conn: object, job_row: int,
                 persons: Sequence[int]) -> dict[int, builtins.list[VideoMatch]]:
        out: dict[int, builtins.list[VideoMatch]] = {}
        m = matches_t.c
        for start in range(0, len(persons), 500):
            q = (select(matches_t).where(m.job_row == job_row,
                                         m.person.in_(list(persons[start:start + 500])))
                 .order_by(m.person, m.rank))
            for r in conn.execute(q):  # type: ignore[attr-defined]
                out.setdefault(r.person, []).append(
                    VideoMatch(r.face_id, r.external_id, r.image_id, r.user_id, r.similarity))
        return out

    def face_detection_results(self, job_id: str, *, max_results: int = MAX_PAGE,
                               next_token: str | None = None,
                               caller: Caller | None = None) -> FaceDetectionPage:
        """A page of a job's detected faces by timestamp (GetFaceDetection)."""
        offset = _page_args(max_results, next_token)
        row = self._row(job_id, caller)
        job = _job_from_row(row)
        if job.status is not JobStatus.SUCCEEDED:
            return FaceDetectionPage(job, [], None)
        d = detections_t.c
        q = (select(detections_t).where(d.job_row == row.id)  # type: ignore[attr-defined]
             .order_by(d.timestamp_ms, d.person, d.id).limit(max_results + 1).offset(offset))
        with self.store.transaction() as conn:
            rows = conn.execute(q).all()
        nxt = str(offset + max_results) if len(rows) > max_results else None
        self._audit_read(job, caller, "faces", min(len(rows), max_results))
        return FaceDetectionPage(job, [FaceDetection(r.timestamp_ms, _video_face(r))
                                       for r in rows[:max_results]], nxt)

    def persons(self, job_id: str, *,
                caller: Caller | None = None) -> builtins.list[PersonSummary]:
        """Each person of a finished job: first and last timestamp, detections, candidates."""
        row = self._row(job_id, caller)
        jr = row.id  # type: ignore[attr-defined]
        d = detections_t.c
        with self.store.transaction() as conn:
            spans = conn.execute(
                select(d.person, func.min(d.timestamp_ms), func.max(d.timestamp_ms), func.count())
                .where(d.job_row == jr).group_by(d.person).order_by(d.person)).all()
            matches = self._matches(conn, jr, [s[0] for s in spans])
        self._audit_read(_job_from_row(row), caller, "person summaries", len(spans))
        return [PersonSummary(int(p), int(a), int(b), int(n), matches.get(int(p), []))
                for p, a, b, n in spans]

    def thumbnails(self, job_id: str, *,
                   caller: Caller | None = None) -> builtins.list[PersonThumbnail]:
        """A small JPEG of each person of a finished job (the aligned face of its best view,
        and that view's time); audited as a read of the job's results."""
        row = self._row(job_id, caller)
        jr = row.id  # type: ignore[attr-defined]
        with self.store.transaction() as conn:
            rows = conn.execute(select(thumbnails_t).where(thumbnails_t.c.job_row == jr)
                                .order_by(thumbnails_t.c.person)).all()
        out = []
        for r in rows:
            jpeg = r.jpeg
            if is_sealed(jpeg):
                sealer = self.store.sealer
                if sealer is None:
                    raise EncryptionError("video thumbnails are encrypted at rest but no key "
                                          "is configured (FACESEARCH_ENCRYPTION_KEY)")
                jpeg = sealer.open(jpeg, _thumbnail_aad(jr, r.person))
            out.append(PersonThumbnail(int(r.person), int(r.timestamp_ms), jpeg))
        self._audit_read(_job_from_row(row), caller, "thumbnails", len(out))
        return out

    def frame(self, job_id: str, timestamp_ms: int, *, max_side: int = FRAME_MAX_SIDE,
              caller: Caller | None = None) -> tuple[bytes, int, int]:
        """The frame of a job's video at ``timestamp_ms`` (the first frame at or after it) as
        a JPEG at most ``max_side`` pixels a side, with its width and height: only while the
        job's video is kept (a server path; uploads are deleted when their job ends,
        NotFoundError). Audited as a read of the job's results."""
        if timestamp_ms < 0:
            raise InvalidParameterError("a frame's time is at least 0 ms")
        row = self._row(job_id, caller)
        g = row._mapping  # type: ignore[attr-defined]
        job = _job_from_row(row)
        path = Path(g["input_path"])
        if (g["owned_input"] and job.status in TERMINAL) or not path.is_file():
            raise NotFoundError(f"the video of job {job_id} is no longer kept (uploaded videos "
                                "are deleted when their job ends)")
        pixels = frame_at(path, timestamp_ms, label=job.source).pixels
        self._audit_read(job, caller, "frame", 1)
        return _jpeg_scaled(pixels, max_side)

    # -- control -----------------------------------------------------------------------

    def cancel(self, job_id: str, *, caller: Caller | None = None) -> VideoJob:
        """Cancel a waiting or running job (a no-op on a finished one)."""
        row = self._row(job_id, caller)
        with self._lock:
            ev = self._cancel.get(job_id)
            if ev is not None:
                ev.set()
        if ev is None:
            with self.store.transaction() as conn:
                n = conn.execute(update(jobs_t).where(
                    jobs_t.c.job_id == job_id, jobs_t.c.status == JobStatus.IN_PROGRESS.value,
                    jobs_t.c.started_at.is_(None)).values(
                    status=JobStatus.CANCELLED.value,
                    status_message=self._reasons.get(job_id, "cancelled before it started"),
                    finished_at=self.clock(), updated_at=self.clock())).rowcount
            if n:
                # The reason is used up only here: a job that started meanwhile reads it
                # when it stops.
                self._reasons.pop(job_id, None)
                self._finish_input(job_id)
                self._notify(job_id)
            elif _job_from_row(row).status is JobStatus.IN_PROGRESS:
                # Running in another process: ask it through the database.
                with self.store.transaction() as conn:
                    conn.execute(update(jobs_t).where(jobs_t.c.job_id == job_id).values(
                        cancel_requested=1, updated_at=self.clock()))
        return self.describe(job_id)

    def delete(self, job_id: str, *, caller: Caller | None = None) -> None:
        """Delete a finished job and its results."""
        job = self.describe(job_id, caller=caller)
        if job.status not in TERMINAL:
            raise ConflictError(f"video job {job_id} is still in progress; cancel it first")
        with self.store.transaction() as conn:
            conn.execute(delete(jobs_t).where(jobs_t.c.job_id == job_id))

    # -- running -----------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job_id = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._run(job_id)

    def _claim(self, job_id: str) -> object | None:
        now = self.clock()
        with self.store.transaction() as conn:
            n = conn.execute(update(jobs_t).where(
                jobs_t.c.job_id == job_id, jobs_t.c.status == JobStatus.IN_PROGRESS.value,
                jobs_t.c.owner == self._owner).values(
                started_at=now, updated_at=now, progress=0.0,
                attempts=jobs_t.c.attempts + 1)).rowcount
            if not n:
                return None
            return conn.execute(select(jobs_t).where(jobs_t.c.job_id == job_id)).first()

    def _run(self, job_id: str) -> None:
        row = self._claim(job_id)
        if row is None:
            return
        cancel = threading.Event()
        with self._lock:
            self._cancel[job_id] = cancel
        job = _job_from_row(row)
        g = row._mapping  # type: ignore[attr-defined]
        caller = Caller(actor=g["caller_actor"], role=g["caller_role"],
                        purpose=g["caller_purpose"], case_ref=g["caller_case"],
                        client=g["caller_client"])
        last_write = [0.0]

        def progress(fraction: float) -> None:
            now = time.monotonic()
            if now - last_write[0] < 1.0:
                return
            last_write[0] = now
            with self.store.transaction() as conn:
                conn.execute(update(jobs_t).where(jobs_t.c.job_id == job_id).values(
                    progress=round(99.0 * fraction, 2), updated_at=self.clock()))
                flag = conn.execute(select(jobs_t.c.cancel_requested)
                                    .where(jobs_t.c.job_id == job_id)).scalar()
            if flag:
                cancel.set()

        try:
            try:
                scan = self._scan(g["input_path"], job, progress, cancel)
                per_person = (self._search(job, scan, caller, cancel)
                              if job.kind is JobKind.FACE_SEARCH else {})
                self._store_results(row.id, scan, per_person)  # type: ignore[attr-defined]
            except _Stopped:
                if self._stop.is_set():
                    self._release(job_id)
                    return
                self._end(job_id, JobStatus.CANCELLED, self._reasons.pop(job_id, "cancelled"))
            except FaceSearchError as exc:
                self._end(job_id, JobStatus.FAILED, exc.message)
            except Exception as exc:  # a worker records any failure as the job's reason
                log.exception("video job %s failed", job_id)
                self._end(job_id, JobStatus.FAILED, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._cancel.pop(job_id, None)
        self._finish_input(job_id)
        self._notify(job_id)
        with self._done:
            self._done.notify_all()

    def _scan(self, path: str, job: VideoJob, progress: Callable[[float], None],
              cancel: threading.Event) -> VideoScan:
        """Scan the job's video here, or in a Ray task (no progress until it is done)."""
        embed = job.kind is JobKind.FACE_SEARCH
        if self.cluster is None:
            return scan_video(path, self.collections.pipeline.for_thread(), job.settings,
                              embed=embed, info=job.video, on_progress=progress,
                              should_stop=cancel.is_set)
        assert self.pipeline_spec is not None
        scan = self.cluster.scan_video(path, self.pipeline_spec, job.settings, embed=embed,
                                       info=job.video, should_stop=cancel.is_set)
        if scan is None:
            raise _Stopped
        return scan

    def _search(self, job: VideoJob, scan: VideoScan, caller: Caller,
                cancel: threading.Event) -> dict[int, builtins.list[Match]]:
        assert job.collection is not None
        per_vector: builtins.list[builtins.list[Match]] = []
        chunk = 1000
        for start in range(0, len(scan.embeddings), chunk):
            problem = self._key_problem(caller.actor)
            if problem is not None:
                raise AccessDeniedError(f"stopped before searching: {problem}")
            vecs = scan.embeddings[start:start + chunk]
            for attempt in range(10):
                try:
                    res = self.search.by_vectors(
                        job.collection, vecs, operation="search.video",
                        max_results=job.settings.max_results,
                        threshold=job.settings.threshold, caller=caller,
                        search_id=job.job_id)
                    per_vector.extend(r.matches for r in res.results)
                    break
                except ThrottledError as exc:
                    if attempt == 9 or cancel.wait(exc.retry_after):
                        raise
        out: dict[int, builtins.list[Match]] = {}
        tracks = scan.embedding_tracks.tolist()
        for person in sorted(set(tracks)):
            out[person] = best_matches([per_vector[i] for i, t in enumerate(tracks)
                                        if t == person], job.settings.max_results)
        return out

    def _store_results(self, job_row: int, scan: VideoScan,
                       per_person: dict[int, builtins.list[Match]]) -> None:
        import json

        f = scan.faces
        q = f.quality
        rows = []
        if len(f):
            assert q is not None
            for i in range(len(f)):
                rows.append({
                    "job_row": job_row, "person": int(scan.tracks[i]),
                    "timestamp_ms": int(scan.timestamps[i]),
                    "x1": float(f.boxes[i, 0]), "y1": float(f.boxes[i, 1]),
                    "x2": float(f.boxes[i, 2]), "y2": float(f.boxes[i, 3]),
                    "confidence": float(f.scores[i]),
                    "landmarks": json.dumps(f.landmarks[i].round(1).tolist()),
                    "q_size": float(q.size[i]), "q_sharpness": float(q.sharpness[i]),
                    "q_brightness": float(q.brightness[i]), "q_yaw": float(q.yaw[i]),
                    "q_pitch": float(q.pitch[i]), "q_roll": float(q.roll[i])})
        trows = [{"job_row": job_row, "person": int(person), "timestamp_ms": int(ts),
                  "jpeg": self._seal_thumbnail(job_row, int(person), _jpeg(chip))}
                 for person, (ts, chip) in scan.best_views.items()]
        mrows = [{"job_row": job_row, "person": person, "rank": rank, "face_id": m.face.face_id,
                  "external_id": m.face.external_id, "image_id": m.face.image.image_id,
                  "user_id": m.face.user_id, "similarity": float(m.similarity)}
                 for person, ms in per_person.items() for rank, m in enumerate(ms)]
        now = self.clock()
        with self.store.transaction() as conn:
            conn.execute(delete(detections_t).where(detections_t.c.job_row == job_row))
            conn.execute(delete(matches_t).where(matches_t.c.job_row == job_row))
            conn.execute(delete(thumbnails_t).where(thumbnails_t.c.job_row == job_row))
            if rows:
                conn.execute(insert(detections_t), rows)
            if trows:
                conn.execute(insert(thumbnails_t), trows)
            if mrows:
                conn.execute(insert(matches_t), mrows)
            conn.execute(update(jobs_t).where(jobs_t.c.id == job_row).values(
                status=JobStatus.SUCCEEDED.value, status_message=None, progress=100.0,
                frames_analysed=scan.frames, persons=scan.persons,
                matched_persons=sum(1 for ms in per_person.values() if ms),
                finished_at=now, updated_at=now))

    def _seal_thumbnail(self, job_row: int, person: int, jpeg: bytes) -> bytes:
        sealer = self.store.sealer
        return jpeg if sealer is None else sealer.seal(jpeg, _thumbnail_aad(job_row, person))

    def _end(self, job_id: str, status: JobStatus, message: str) -> None:
        now = self.clock()
        with self.store.transaction() as conn:
            conn.execute(update(jobs_t).where(jobs_t.c.job_id == job_id).values(
                status=status.value, status_message=message, finished_at=now, updated_at=now))

    def _release(self, job_id: str) -> None:
        with self.store.transaction() as conn:
            conn.execute(update(jobs_t).where(jobs_t.c.job_id == job_id).values(
                owner=released_token(), progress=0.0, updated_at=self.clock(),
                status_message="interrupted by a shutdown; runs again when the service starts"))

    def _finish_input(self, job_id: str) -> None:
        """Delete an uploaded input once its job has ended."""
        with self.store.transaction() as conn:
            r = conn.execute(select(jobs_t.c.input_path, jobs_t.c.owned_input, jobs_t.c.status)
                             .where(jobs_t.c.job_id == job_id)).first()
        if r is not None and r.owned_input and JobStatus(r.status) in TERMINAL:
            Path(r.input_path).unlink(missing_ok=True)

    def _notify(self, job_id: str) -> None:
        """Tell the job's webhook and SNS topic that it ended; record how that went."""
        job = self.describe(job_id)
        if job.status not in TERMINAL or (job.webhook_url is None and job.sns_topic_arn is None):
            return
        api = ("StartFaceSearch" if job.kind is JobKind.FACE_SEARCH else "StartFaceDetection")
        finished_ms = int((job.finished_at or self.clock()) * 1000)
        outcomes: builtins.list[tuple[str, str | None]] = []
        if job.webhook_url is not None:
            payload: dict[str, object] = {
                "JobId": job.job_id, "Status": job.status.value, "API": api,
                "JobTag": job.job_tag, "Timestamp": finished_ms,
                "StatusMessage": job.status_message, "Video": {"Source": job.source},
            }
            outcomes.append(("webhook", post_json(job.webhook_url, payload, stop=self._stop,
                                                  egress=self.egress)))
        if job.sns_topic_arn is not None:
            # Rekognition's message: a cancelled job is FAILED; the S3 object the job read.
            status = "SUCCEEDED" if job.status is JobStatus.SUCCEEDED else "FAILED"
            s3 = parse_s3_label(job.source)
            message = completion_message(job.job_id, status, api, job.job_tag, finished_ms,
                                         s3[0] if s3 else None,
                                         s3[1] if s3 else Path(job.source).name or None)
            outcomes.append(("sns", self.sns.publish(job.sns_topic_arn, message)
                             if self.sns is not None
                             else "no SNS endpoint is configured in this process"))
        texts = ["delivered" if reason is None else f"failed: {reason}" for _, reason in outcomes]
        notification = texts[0] if len(texts) == 1 else "; ".join(
            f"{what}: {text}" for (what, _), text in zip(outcomes, texts, strict=True))
        with self.store.transaction() as conn:
            conn.execute(update(jobs_t).where(jobs_t.c.job_id == job_id).values(
                notification=notification))
        for what, reason in outcomes:
            if reason is not None:
                log.warning("video job %s: %s failed: %s", job_id, what, reason)

    # Last in the class: below it, ``list`` in annotations would mean this method.
    def list(self, *, status: JobStatus | None = None, limit: int = 100,
             next_token: str | None = None,
             caller: Caller | None = None) -> tuple[builtins.list[VideoJob], str | None]:
        """Jobs, newest first, a page at a time (a case-bound ``caller``: its case's only)."""
        offset = _page_args(limit, next_token)
        q = select(jobs_t).order_by(jobs_t.c.id.desc()).limit(limit + 1).offset(offset)
        if status is not None:
            q = q.where(jobs_t.c.status == status.value)
        case = self._case(caller)
        if case is not None:
            q = q.where(jobs_t.c.caller_case == case)
        with self.store.transaction() as conn:
            rows = conn.execute(q).all()
        nxt = str(offset + limit) if len(rows) > limit else None
        return [_job_from_row(r) for r in rows[:limit]], nxt


def s3_label(bucket: str, name: str, version: str | None = None) -> str:
    """How a job names its S3 input (its ``source``); :func:`parse_s3_label` reads it back."""
    return f"s3://{bucket}/{name}" + (f"?versionId={version}" if version else "")


def parse_s3_label(source: str) -> tuple[str, str, str | None] | None:
    """``(bucket, name, version)`` of a source written by :func:`s3_label`, else None."""
    if not source.startswith("s3://"):
        return None
    bucket, _, rest = source[len("s3://"):].partition("/")
    name, _, version = rest.rpartition("?versionId=") if "?versionId=" in rest else (rest, "", "")
    return (bucket, name, version or None) if bucket and name else None


def owner_token() -> str:
    """Who runs a job: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def released_token() -> str:
    """The owner of the jobs a process of this host left at its shutdown: ``host:`` (no
    process). Only processes of this host take them again, since an uploaded input is in this
    host's data directory."""
    return f"{socket.gethostname()}:"


def _owner_alive(owner: str | None) -> bool:
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's process: not ours to judge
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True
