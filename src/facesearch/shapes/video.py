"""Stored-video jobs as shown: a job, pages of jobs, its results (persons with candidates, or
faces), its persons and their thumbnails."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field

from facesearch.media.inputs import redact_url
from facesearch.media.candidates import VideoMatch
from facesearch.media.job_results import FaceDetectionPage, FaceSearchPage, PersonSummary
from facesearch.media.video_job import JobKind, JobStatus
from facesearch.video.frames import VideoInfo
from facesearch.shapes.base import Out, PublicMessage
from facesearch.shapes.faces import DetectedFaceOut


def _dumped(settings: Any) -> Any:
    return settings.model_dump(mode="json") if isinstance(settings, BaseModel) else settings


def _viewed(face: Any) -> Any:
    """A face seen in a video (``VideoFace``) as plain numbers."""
    view = getattr(face, "view", None)
    return face if view is None else view()


SeenFace = Annotated[DetectedFaceOut, BeforeValidator(_viewed)]


class VideoJobOut(Out):
    """A job's state, from a :class:`~facesearch.media.video_job.VideoJob` (credentials in its
    webhook URL masked, no server path in its message)."""

    job_id: str
    kind: JobKind
    status: JobStatus
    status_message: PublicMessage
    progress: float = Field(description="percent of the video analysed")
    collection: str | None
    source: str
    settings: Annotated[dict[str, Any], BeforeValidator(_dumped)]
    video: VideoInfo | None
    job_tag: str | None
    webhook_url: Annotated[str | None, BeforeValidator(redact_url)]
    sns_topic_arn: str | None = Field(description="SNS topic of a Rekognition client's "
                                                  "NotificationChannel")
    notification: str | None = Field(description="null, 'delivered' or 'failed: <reason>' "
                                                  "(both channels: 'webhook: ...; sns: ...')")
    created_at: float
    started_at: float | None
    finished_at: float | None
    frames_analysed: int | None
    persons: int | None
    matched_persons: int | None
    attempts: int


class VideoJobsPage(Out):
    jobs: list[VideoJobOut]
    next_token: str | None = None


class PersonEntryOut(Out):
    """A person at a timestamp, from a :class:`~facesearch.media.job_results.PersonMatch`."""

    timestamp_ms: int
    person_index: int
    face: SeenFace = Field(description="box and landmarks in video pixels")
    matches: list[VideoMatch] = Field(description="the person's candidates, best first")


class FaceEntryOut(Out):
    """A face at a timestamp, from a :class:`~facesearch.media.job_results.FaceDetection`."""

    timestamp_ms: int
    face: SeenFace


class VideoResultsOut(Out):
    job: VideoJobOut
    label: str = "candidates for human review, not identifications"
    persons: list[PersonEntryOut] | None = Field(default=None, description="face search jobs")
    faces: list[FaceEntryOut] | None = Field(default=None, description="face detection jobs")
    next_token: str | None = None

    @classmethod
    def of(cls, page: FaceSearchPage | FaceDetectionPage,
           next_token: str | None) -> VideoResultsOut:
        """A page of a job's results (``next_token``: the page's token as shown)."""
        if isinstance(page, FaceDetectionPage):
            return cls(job=VideoJobOut.model_validate(page.job), next_token=next_token,
                       faces=[FaceEntryOut.model_validate(f) for f in page.faces])
        return cls(job=VideoJobOut.model_validate(page.job), next_token=next_token,
                   persons=[PersonEntryOut.model_validate(e) for e in page.persons])


class PersonsOut(Out):
    job: VideoJobOut
    persons: list[PersonSummary]


class ThumbnailOut(Out):
    """A person's best view, from a :class:`~facesearch.media.job_results.PersonThumbnail`."""

    person_index: int
    timestamp_ms: int = Field(description="when the person's best view was seen")
    content_type: Literal["image/jpeg"] = "image/jpeg"
    data: Annotated[str, BeforeValidator(
        lambda v: base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v)] = Field(
        validation_alias="jpeg", description="the JPEG of the person's aligned face, base64")


class ThumbnailsOut(Out):
    job_id: str
    thumbnails: list[ThumbnailOut]
