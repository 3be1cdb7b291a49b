"""What a stream processor is and shows: its definition (:class:`StreamSettings`), status,
counters (:class:`StreamMetrics`), live view (:class:`LiveView`) and stored state
(:class:`ProcessorInfo`)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from facesearch.errors import InvalidParameterError
from facesearch.video.tracking import SPLIT_SIMILARITY

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


StatusCallback = Callable[[str, ProcessorStatus, str | None], None]
"""Told a processor's name, new status and status message at each change."""


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
