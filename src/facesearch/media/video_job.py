"""A video job as stored: its kind, status and state (:class:`VideoJob`), what it may read,
and how a job row and a page token are read.

Semantics follow Rekognition Video's StartFaceSearch / GetFaceSearch and StartFaceDetection /
GetFaceDetection; a job is a row of the service's database (``jobs_t``).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import BinaryIO, Literal

from facesearch.errors import InvalidParameterError
from facesearch.types import Caller
from facesearch.video.frames import VideoInfo
from facesearch.video.scan import VideoJobSettings

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


UNREADABLE_MESSAGE = "Unsupported codec/format."
"""The StatusMessage of a Rekognition job whose video cannot be read (as AWS's)."""


def video_columns(info: VideoInfo | None) -> dict[str, object]:
    """A job row's video columns (all null for a video that could not be read)."""
    if info is None:
        return {}
    return {"video_format": info.format, "video_codec": info.codec, "video_width": info.width,
            "video_height": info.height, "video_fps": info.fps,
            "video_duration_ms": info.duration_ms, "video_frames": info.frame_count,
            "video_start_ms": info.start_ms}


def job_from_row(r: object) -> VideoJob:
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


def page_args(max_results: int, next_token: str | None) -> int:
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


def caller_of_row(r: object) -> Caller:
    """Who submitted the job of row ``r`` (its searches are made on that caller's behalf)."""
    g = r._mapping  # type: ignore[attr-defined]
    return Caller(actor=g["caller_actor"], role=g["caller_role"], purpose=g["caller_purpose"],
                  case_ref=g["caller_case"], client=g["caller_client"])
