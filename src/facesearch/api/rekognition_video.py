"""The Rekognition endpoint's stored-video operations: StartFaceSearch, GetFaceSearch,
StartFaceDetection, GetFaceDetection.

Jobs read ``Video.S3Object`` (streamed by :mod:`facesearch.api.video`) and run on
:class:`facesearch.media.jobs.VideoJobs`; a CANCELLED job is reported as FAILED;
``NotificationChannel`` gets Rekognition's completion message through the configured SNS
endpoint, and is refused without one. Boxes and landmarks are ratios of the video's frame.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import Field

from facesearch.api.auth import Operation
from facesearch.api.context import ApiContext
from facesearch.api.rekognition_streams import In, Json
from facesearch.api.video import (
    Submit,
    offset_token,
    page_size,
    results_kind,
    submit_s3,
    wrap_offset,
)
from facesearch.errors import InvalidParameterError
from facesearch.media.sns import ROLE_ARN
from facesearch.media.candidates import VideoMatch
from facesearch.media.job_notify import parse_s3_label
from facesearch.media.video_job import JobKind, JobStatus, VideoJob
from facesearch.video.scan import VideoJobSettings
from facesearch.shapes import rekognition as shapes
from facesearch.shapes.base import public_message
from facesearch.types import Caller


class S3ObjectIn(In):
    """An S3 object of the configured store, as images (``Image.S3Object``) and videos
    (``Video.S3Object``) name it."""

    Bucket: str = Field(min_length=3, max_length=255)
    Name: str = Field(min_length=1, max_length=1024)
    Version: str | None = None



JobIdField = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")


class VideoIn(In):
    S3Object: S3ObjectIn | None = None


class NotificationChannelIn(In):
    """Where the completion message goes: an SNS topic of the server's SNS endpoint (refused
    when there is none). ``RoleArn`` is checked for form, not assumed."""

    SNSTopicArn: str = Field(min_length=1, max_length=1024)
    RoleArn: str = Field(pattern=ROLE_ARN.pattern)


class _StartVideoIn(In):
    Video: VideoIn
    ClientRequestToken: str | None = Field(None, min_length=1, max_length=64,
                                           pattern=r"^[a-zA-Z0-9_-]+$")
    NotificationChannel: NotificationChannelIn | None = None
    JobTag: str | None = Field(None, min_length=1, max_length=1024,
                               pattern=r"^[a-zA-Z0-9_.\-:+=/]+$")


class StartFaceSearchIn(_StartVideoIn):
    CollectionId: str = Field(min_length=1, max_length=255)
    FaceMatchThreshold: float | None = Field(None, ge=0, le=100)


class StartFaceDetectionIn(_StartVideoIn):
    FaceAttributes: Literal["DEFAULT", "ALL"] = "DEFAULT"


class GetFaceDetectionIn(In):
    JobId: str = JobIdField
    MaxResults: int | None = Field(None, ge=1)
    NextToken: str | None = Field(None, max_length=255)


class GetFaceSearchIn(GetFaceDetectionIn):
    SortBy: Literal["INDEX", "TIMESTAMP"] = "TIMESTAMP"


def _topic(p: _StartVideoIn) -> str | None:
    return p.NotificationChannel.SNSTopicArn if p.NotificationChannel is not None else None


async def _start_video(ctx: ApiContext, p: _StartVideoIn, submit: Submit) -> Json:
    s3 = p.Video.S3Object
    if s3 is None:
        raise InvalidParameterError("Video needs an S3Object")
    ctx.fs.video.notifier.check_sns(_topic(p))  # refused before the video is copied
    job_id = await ctx.io(lambda: submit_s3(ctx, s3.Bucket, s3.Name, s3.Version, submit))
    return {"JobId": job_id}


def _video_match(m: VideoMatch) -> Json:
    face: Json = {"FaceId": m.face_id}
    if m.image_id:
        face["ImageId"] = m.image_id
    if m.external_id:
        face["ExternalImageId"] = m.external_id
    if m.user_id:
        face["UserId"] = m.user_id
    return {"Similarity": m.similarity, "Face": face}


def _video_job(job: VideoJob) -> tuple[Json, int, int]:
    """The job's common answer fields, and its frame size."""
    status = JobStatus.FAILED if job.status is JobStatus.CANCELLED else job.status
    out: Json = {"JobId": job.job_id, "JobStatus": status.value}
    message = job.status_message
    if job.status is JobStatus.CANCELLED:
        message = f"CANCELLED: {message or 'the job was cancelled'}"
    if message and job.status is not JobStatus.SUCCEEDED:
        out["StatusMessage"] = public_message(message)
    if job.job_tag:
        out["JobTag"] = job.job_tag
    s3 = parse_s3_label(job.source)
    if s3 is not None:
        obj: Json = {"Bucket": s3[0], "Name": s3[1]}
        if s3[2]:
            obj["Version"] = s3[2]
        out["Video"] = {"S3Object": obj}
    v = job.video
    if v is None:
        return out, 1, 1
    meta: Json = {"Codec": v.codec, "Format": v.format, "FrameRate": v.fps,
                  "FrameWidth": v.width, "FrameHeight": v.height}
    if v.duration_ms is not None:
        meta["DurationMillis"] = v.duration_ms
    out["VideoMetadata"] = meta
    return out, max(v.width, 1), max(v.height, 1)


def job_token(caller: Caller, kind: JobKind, token: str | None) -> str | None:
    """The video service's token for a request's ``ClientRequestToken``: one per key and
    operation (another key's same token is another job; the API's own record,
    :mod:`facesearch.api.replay`, answers a repeat with the first JobId and refuses other
    parameters)."""
    if token is None:
        return None
    return hashlib.sha256(f"{caller.actor}:{kind.value}:{token}".encode()).hexdigest()


async def start_face_search(ctx: ApiContext, caller: Caller, p: StartFaceSearchIn) -> Json:
    settings = VideoJobSettings(threshold=p.FaceMatchThreshold)
    return await _start_video(ctx, p, lambda video, source: ctx.fs.video.start_face_search(
        p.CollectionId, video, settings=settings, job_tag=p.JobTag,
        client_request_token=job_token(caller, JobKind.FACE_SEARCH, p.ClientRequestToken),
        source_name=source, caller=caller, sns_topic_arn=_topic(p), unreadable_fails_job=True))


async def start_face_detection(ctx: ApiContext, caller: Caller, p: StartFaceDetectionIn) -> Json:
    return await _start_video(ctx, p, lambda video, source: ctx.fs.video.start_face_detection(
        video, job_tag=p.JobTag,
        client_request_token=job_token(caller, JobKind.FACE_DETECTION, p.ClientRequestToken),
        source_name=source, caller=caller, sns_topic_arn=_topic(p), unreadable_fails_job=True))


async def get_face_search(ctx: ApiContext, caller: Caller, p: GetFaceSearchIn) -> Json:
    kind = results_kind(p.JobId, f"persons-{p.SortBy}-0")
    page = await ctx.io(lambda: ctx.fs.video.results.face_search_results(
        p.JobId, max_results=page_size(p.MaxResults), next_token=offset_token(kind, p.NextToken),
        sort_by=p.SortBy, caller=caller))
    out, w, h = _video_job(page.job)
    out["Persons"] = [{"Timestamp": e.timestamp_ms,
                       "Person": {"Index": e.person_index,
                                  "BoundingBox": shapes.bounding_box(e.face.box, w, h),
                                  "Face": shapes.rekognition_detail(e.face.view(), w, h)},
                       "FaceMatches": [_video_match(m) for m in e.matches]}
                      for e in page.persons]
    if page.next_token is not None:
        out["NextToken"] = wrap_offset(kind, page.next_token)
    return out


async def get_face_detection(ctx: ApiContext, caller: Caller, p: GetFaceDetectionIn) -> Json:
    kind = results_kind(p.JobId, "faces")
    page = await ctx.io(lambda: ctx.fs.video.results.face_detection_results(
        p.JobId, max_results=page_size(p.MaxResults), next_token=offset_token(kind, p.NextToken),
        caller=caller))
    if page.job.kind is not JobKind.FACE_DETECTION:
        raise InvalidParameterError(f"job {p.JobId} is a face search job; call GetFaceSearch")
    out, w, h = _video_job(page.job)
    out["Faces"] = [{"Timestamp": f.timestamp_ms, "Face": shapes.rekognition_detail(f.face.view(), w, h)}
                    for f in page.faces]
    if page.next_token is not None:
        out["NextToken"] = wrap_offset(kind, page.next_token)
    return out


Handler = Callable[[ApiContext, Caller, Any], Awaitable[Json]]
VIDEO_HANDLERS: dict[Operation, tuple[type[In], Handler]] = {
    Operation.START_FACE_SEARCH: (StartFaceSearchIn, start_face_search),
    Operation.GET_FACE_SEARCH: (GetFaceSearchIn, get_face_search),
    Operation.START_FACE_DETECTION: (StartFaceDetectionIn, start_face_detection),
    Operation.GET_FACE_DETECTION: (GetFaceDetectionIn, get_face_detection),
}
"""The operations of this module, joined into :data:`facesearch.api.rekognition.HANDLERS`."""
