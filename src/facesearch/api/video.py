"""Stored-video jobs and live stream processors over HTTP (native API, ``/v1``).

Routes call :attr:`FaceSearch.video <facesearch.service.FaceSearch.video>` (StartFaceSearch /
StartFaceDetection jobs) and :attr:`FaceSearch.streams <facesearch.service.FaceSearch.streams>`
(stream processors) and convert their results; the Rekognition-shaped video operations live in
:mod:`facesearch.api.rekognition` and share this module's input helpers.

Video input is one of:

- a **server path**, only under the directories of ``FACESEARCH_API_VIDEO_PATH_ROOTS``
  (:class:`VideoApiSettings`; none by default, so server paths are refused). The same roots
  bound the video files a stream processor may play as a camera;
- a **multipart upload** (file part ``video``), at most ``FACESEARCH_API_VIDEO_MAX_UPLOAD_BYTES``;
- an **S3 object** of the configured store (``FACESEARCH_API_S3_*``), streamed to the data
  directory, at most the service's video size limit.

Live feeds of a processor's events: Server-Sent Events at ``GET /v1/streams/{name}/events``
(authenticated like every ``/v1`` route), and a WebSocket at ``/v1/streams/{name}/ws`` that takes
the same keys either in the handshake's ``Authorization`` header (bearer or SigV4) or, for
clients that cannot set headers (browsers), as a first message ``{"authorization": "Bearer
<key id>:<secret>"}`` within 10 s. Every event is a candidate for human review. A feed ends
(``end`` with a reason) as soon as the key that opened it is revoked or expires; a key issued
for a case sees only the jobs and processors of its case (others are "not found").
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response, WebSocket
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import UploadFile
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ..errors import FaceSearchError, InvalidParameterError, VideoTooLargeError
from ..stream import (
    ProcessorInfo,
    StreamEvent,
    StreamMetrics,
    StreamSettings,
    Subscription,
    classify_input,
)
from ..types import Caller
from ..video import (
    MAX_PAGE,
    JobKind,
    JobStatus,
    PersonSummary,
    VideoFace,
    VideoInfo,
    VideoJob,
    VideoJobSettings,
    VideoMatch,
)
from .auth import Operation, SignedRequest, authenticate, authorize
from .context import ApiContext, context
from .errors import InvalidS3ObjectError, SerializationError, mapping
from .native import (
    DetectedFaceOut,
    ErrorOut,
    QualityOut,
    json_object,
    native_caller,
    validated,
)
from .paging import decode_row, encode_token, page_by_name
from .s3 import S3Images
from .settings import ApiSettings

UPLOAD_PATHS = frozenset({"/v1/video/search", "/v1/video/detect"})
"""Routes whose request bodies may be as large as ``max_upload_bytes`` (video uploads)."""
KEEPALIVE_S = 15.0
WS_AUTH_TIMEOUT_S = 10.0


class VideoApiSettings(BaseSettings):
    """Video settings of the HTTP server, as ``FACESEARCH_API_VIDEO_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FACESEARCH_API_VIDEO_", extra="forbid")

    path_roots: str = Field(
        default="",
        description=f"directories (separated by {os.pathsep!r}) under which server paths may be "
                    "named as video input or as a stream processor's file input; empty: server "
                    "paths are refused")
    max_upload_bytes: int = Field(default=256 * 1024**2, ge=1024,
                                  description="largest video upload (request body), in bytes")
    allow_devices: bool = Field(default=False,
                                description="whether stream processors may open local V4L2 "
                                            "cameras (/dev/videoN)")

    def roots(self) -> list[Path]:
        return [Path(p).resolve() for p in self.path_roots.split(os.pathsep) if p.strip()]


# -- S3 videos --------------------------------------------------------------------------------

class S3Videos(S3Images):
    """The S3 store of :class:`S3Images`, which also streams (large) video objects."""

    def __init__(self, settings: ApiSettings, max_bytes: int, max_video_bytes: int) -> None:
        super().__init__(settings, max_bytes)
        self.max_video_bytes = max_video_bytes

    def open_video(self, bucket: str, name: str, version: str | None = None) -> _S3Body:
        """The object's body as a readable stream (close it), or :class:`InvalidS3ObjectError`
        / :class:`VideoTooLargeError`."""
        if self._client is None:
            raise InvalidS3ObjectError("this server has no S3 store configured "
                                       "(FACESEARCH_API_S3_ENDPOINT_URL)")
        from botocore.exceptions import (  # type: ignore[import-untyped]
            BotoCoreError,
            ClientError,
        )

        where = s3_label(bucket, name, version)
        args = {"Bucket": bucket, "Key": name}
        if version:
            args["VersionId"] = version
        try:
            obj = self._client.get_object(**args)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise InvalidS3ObjectError(f"{where}: cannot be read ({code})") from None
        except BotoCoreError as exc:
            raise InvalidS3ObjectError(f"{where}: cannot be read ({exc})") from None
        size = int(obj.get("ContentLength", 0))
        if size > self.max_video_bytes:
            obj["Body"].close()
            raise VideoTooLargeError(f"{where}: {size / 1e9:.1f} GB is over the "
                                     f"{self.max_video_bytes / 1e9:.1f} GB video limit")
        return _S3Body(obj["Body"], where)


class _S3Body:
    """A streaming S3 body whose read errors are :class:`InvalidS3ObjectError`."""

    def __init__(self, body: Any, where: str) -> None:
        self._body = body
        self.where = where

    def read(self, n: int = -1) -> bytes:
        from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]

        try:
            data: bytes = self._body.read(None if n < 0 else n)
        except (BotoCoreError, OSError) as exc:
            raise InvalidS3ObjectError(f"{self.where}: reading failed ({exc})") from None
        return data

    def close(self) -> None:
        self._body.close()


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


def video_s3(ctx: ApiContext) -> S3Videos:
    """The app's S3 store (:func:`facesearch.api.app.create_app` makes an :class:`S3Videos`)."""
    s3 = ctx.s3
    assert isinstance(s3, S3Videos)
    return s3


Submit = Callable[[Any, str], str]
"""Submits a job: ``(video input, source label) -> job id``."""


def submit_s3(ctx: ApiContext, bucket: str, name: str, version: str | None,
              submit: Submit) -> str:
    """Stream an S3 object into a job (blocking: run it with ``ctx.io``)."""
    body = video_s3(ctx).open_video(bucket, name, version)
    try:
        return submit(body, s3_label(bucket, name, version))
    finally:
        body.close()


# -- tokens -------------------------------------------------------------------------------------

def results_kind(job_id: str, what: str) -> str:
    """The paging-token kind of a job's results listing (tokens name their job and order)."""
    return f"video-{what}-{job_id}".replace(":", "-")


def offset_token(kind: str, token: str | None) -> str | None:
    """The service's offset cursor inside an opaque token (None: the first page)."""
    return None if token is None else str(decode_row(kind, token))


def wrap_offset(kind: str, cursor: str | None) -> str | None:
    return None if cursor is None else encode_token(kind, cursor)


def page_size(max_results: int | None) -> int:
    """Rekognition's rule: at most 1000 per page, 1000 by default."""
    return min(max_results or MAX_PAGE, MAX_PAGE)


# -- shapes -------------------------------------------------------------------------------------

class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


router = APIRouter(prefix="/v1", dependencies=[Depends(native_caller)],
                   responses={s: {"model": ErrorOut} for s in (400, 401, 403, 404, 409, 413,
                                                                429, 503)})
ws_router = APIRouter(prefix="/v1")
"""The WebSocket route, which authenticates itself (see the module docstring)."""

CallerDep = Annotated[Caller, Depends(native_caller)]


class S3ObjectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bucket: str = Field(min_length=3, max_length=255)
    name: str = Field(min_length=1, max_length=1024)
    version: str | None = Field(default=None, min_length=1, max_length=1024)


class _JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(default=None, description="a server path, under FACESEARCH_API_VIDEO_"
                                               "PATH_ROOTS")
    s3_object: S3ObjectIn | None = None
    sample_fps: float = Field(default=5.0, gt=0, le=120, description="frames analysed per second")
    job_tag: str | None = Field(default=None, min_length=1, max_length=1024)
    webhook_url: str | None = Field(default=None, description="POSTed to when the job ends")
    client_request_token: str | None = Field(default=None, min_length=1, max_length=64,
                                             description="the same token returns the same job")


J = TypeVar("J", bound=_JobIn)


class DetectJobIn(_JobIn):
    pass


class SearchJobIn(_JobIn):
    collection: str = Field(min_length=1, max_length=255)
    threshold: float | None = Field(default=None, ge=0, le=100, description="default: 80 or the "
                                                                     "collection's floor")
    max_results: int = Field(default=10, ge=1, le=4096, description="candidates kept per person")


class VideoJobOut(_Out):
    job_id: str
    kind: JobKind
    status: JobStatus
    status_message: str | None
    progress: float = Field(description="percent of the video analysed")
    collection: str | None
    source: str
    settings: dict[str, Any]
    video: VideoInfo | None
    job_tag: str | None
    webhook_url: str | None
    notification: str | None = Field(description="null, 'delivered' or 'failed: <reason>'")
    created_at: float
    started_at: float | None
    finished_at: float | None
    frames_analysed: int | None
    persons: int | None
    matched_persons: int | None
    attempts: int


class VideoJobsPage(_Out):
    jobs: list[VideoJobOut]
    next_token: str | None = None


class PersonEntryOut(_Out):
    timestamp_ms: int
    person_index: int
    face: DetectedFaceOut = Field(description="box and landmarks in video pixels")
    matches: list[VideoMatch] = Field(description="the person's candidates, best first")


class FaceEntryOut(_Out):
    timestamp_ms: int
    face: DetectedFaceOut


class VideoResultsOut(_Out):
    job: VideoJobOut
    label: str = "candidates for human review, not identifications"
    persons: list[PersonEntryOut] | None = Field(default=None, description="face search jobs")
    faces: list[FaceEntryOut] | None = Field(default=None, description="face detection jobs")
    next_token: str | None = None


class PersonsOut(_Out):
    job: VideoJobOut
    persons: list[PersonSummary]


class StreamProcessorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_.\-]+$")
    settings: StreamSettings


class StreamProcessorOut(_Out):
    name: str
    status: str
    status_message: str | None
    created_at: float
    updated_at: float
    settings: dict[str, Any] = Field(description="credentials in URLs are masked")
    metrics: StreamMetrics | None = Field(description="null unless running in this server")


class StreamProcessorsPage(_Out):
    processors: list[StreamProcessorOut]
    next_token: str | None = None


class StreamMetricsOut(_Out):
    name: str
    status: str
    metrics: StreamMetrics | None


# -- conversions ----------------------------------------------------------------------------

def redact_url(url: str | None) -> str | None:
    """``url`` with the password of its user info masked."""
    if url is None or "://" not in url:
        return url
    scheme, _, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{hostport}{slash}{tail}"


def _r(v: float, nd: int) -> float:
    return round(float(v), nd)


def video_face_out(f: VideoFace) -> DetectedFaceOut:
    return DetectedFaceOut(
        box=[_r(v, 1) for v in f.box], score=_r(f.confidence, 4),
        landmarks=[[_r(x, 1), _r(y, 1)] for x, y in f.landmarks],
        quality=QualityOut(size=_r(f.size, 1), sharpness=_r(f.sharpness, 1),
                           brightness=_r(f.brightness, 1), yaw=_r(f.yaw, 1),
                           pitch=_r(f.pitch, 1), roll=_r(f.roll, 1)))


def job_out(j: VideoJob) -> VideoJobOut:
    return VideoJobOut(
        job_id=j.job_id, kind=j.kind, status=j.status, status_message=j.status_message,
        progress=j.progress, collection=j.collection, source=j.source,
        settings=j.settings.model_dump(mode="json"), video=j.video, job_tag=j.job_tag,
        webhook_url=redact_url(j.webhook_url), notification=j.notification,
        created_at=j.created_at, started_at=j.started_at, finished_at=j.finished_at,
        frames_analysed=j.frames_analysed, persons=j.persons, matched_persons=j.matched_persons,
        attempts=j.attempts)


def processor_out(p: ProcessorInfo, jsonl_root: Path) -> StreamProcessorOut:
    s = p.settings.model_dump(mode="json")
    s["input_url"] = redact_url(p.settings.input_url)
    s["webhook_url"] = redact_url(p.settings.webhook_url)
    if p.settings.jsonl_path is not None and p.settings.jsonl_path.is_relative_to(jsonl_root):
        s["jsonl_path"] = str(p.settings.jsonl_path.relative_to(jsonl_root))
    return StreamProcessorOut(name=p.name, status=p.status.value,
                              status_message=p.status_message, created_at=p.created_at,
                              updated_at=p.updated_at, settings=s, metrics=p.metrics)


# -- input checks -----------------------------------------------------------------------------

def allowed_path(ctx: ApiContext, path: str, what: str) -> None:
    """Refuse a server path outside the configured roots (all of them when none are set)."""
    roots = ctx.fs.video.path_roots or []
    real = Path(path).resolve()
    if not any(real.is_relative_to(root) for root in roots):
        raise InvalidParameterError(
            f"{what} {path!r}: server paths must lie under an allowed video directory "
            f"(FACESEARCH_API_VIDEO_PATH_ROOTS{'' if roots else ', unset on this server'})")


def jsonl_root(ctx: ApiContext) -> Path:
    """Where the JSONL files of processors created over HTTP go."""
    return (ctx.fs.home / "streams").resolve()


def checked_stream_settings(ctx: ApiContext, s: StreamSettings) -> StreamSettings:
    """The API's limits on a processor's server-side resources: a file input must lie under
    the video roots; a JSONL file is a relative path under ``<home>/streams``."""
    target, _, is_file = classify_input(s.input_url, s.input_format,
                                        allow_devices=ctx.fs.streams.allow_devices)
    if is_file:
        allowed_path(ctx, target, "input_url")
    if s.jsonl_path is None:
        return s
    root = jsonl_root(ctx)
    dest = (root / s.jsonl_path).resolve()
    if s.jsonl_path.is_absolute() or ".." in s.jsonl_path.parts or not dest.is_relative_to(root):
        raise InvalidParameterError("jsonl_path must be a relative path (the file is written "
                                    "under the server's <home>/streams)")
    return s.model_copy(update={"jsonl_path": dest})


async def parse_job(request: Request, model: type[J]) -> tuple[J, UploadFile | None]:
    """The job's fields from JSON or multipart/form-data (file part ``video``)."""
    ctype = request.headers.get("content-type", "")
    upload: UploadFile | None = None
    data: dict[str, Any]
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=32)
        data = {}
        for k, v in form.multi_items():
            if isinstance(v, UploadFile):
                if k != "video":
                    raise InvalidParameterError(f"unexpected file part {k!r}; send the video "
                                                "as 'video'")
                upload = v
            else:
                data[k] = v
    elif ctype.startswith("application/json"):
        data = await json_object(request)
    else:
        raise SerializationError("send multipart/form-data (file part 'video') or "
                                 "application/json ('path' or 's3_object')")
    p = validated(model, data)
    if sum(x is not None for x in (upload, p.path, p.s3_object)) != 1:
        raise InvalidParameterError("give exactly one video: an upload (file part 'video'), "
                                    "'path' or 's3_object'")
    return p, upload


async def submit_job(ctx: ApiContext, p: _JobIn, upload: UploadFile | None,
                     submit: Submit) -> VideoJob:
    """Hand the job's video (upload, server path or S3 object) to ``submit``; the job."""
    def run() -> VideoJob:
        if upload is not None:
            job_id = submit(upload.file, Path(upload.filename or "upload").name or "upload")
        elif p.path is not None:
            allowed_path(ctx, p.path, "path")
            job_id = submit(p.path, p.path)
        else:
            assert p.s3_object is not None
            o = p.s3_object
            job_id = submit_s3(ctx, o.bucket, o.name, o.version, submit)
        return ctx.fs.video.describe(job_id)

    try:
        return await ctx.io(run)
    finally:
        if upload is not None:
            await upload.close()


# -- video jobs -------------------------------------------------------------------------------

def _upload_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body: JSON with ``path`` or ``s3_object``, or multipart with ``video``."""
    schema = model.model_json_schema()
    schema.pop("$defs", None)
    props = {**schema["properties"], "s3_object": S3ObjectIn.model_json_schema()}
    form = {k: v for k, v in props.items() if k not in ("path", "s3_object")}
    form["video"] = {"type": "string", "format": "binary"}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {**schema, "properties": form}},
        "application/json": {"schema": {**schema, "properties": props}}}}}


@router.post("/video/search", name=Operation.START_FACE_SEARCH.value, status_code=202,
             openapi_extra=_upload_doc(SearchJobIn))
async def start_face_search(request: Request, caller: CallerDep) -> VideoJobOut:
    """Start a face search job: every person in the video against a collection."""
    ctx = context(request)
    p, upload = await parse_job(request, SearchJobIn)
    settings = VideoJobSettings(sample_fps=p.sample_fps, threshold=p.threshold,
                                max_results=p.max_results)
    return job_out(await submit_job(ctx, p, upload, lambda video, source: (
        ctx.fs.video.start_face_search(
            p.collection, video, settings=settings, job_tag=p.job_tag,
            webhook_url=p.webhook_url, client_request_token=p.client_request_token,
            source_name=source, caller=caller))))


@router.post("/video/detect", name=Operation.START_FACE_DETECTION.value, status_code=202,
             openapi_extra=_upload_doc(DetectJobIn))
async def start_face_detection(request: Request, caller: CallerDep) -> VideoJobOut:
    """Start a face detection job: the faces of the video, tracked into persons."""
    ctx = context(request)
    p, upload = await parse_job(request, DetectJobIn)
    settings = VideoJobSettings(sample_fps=p.sample_fps)
    return job_out(await submit_job(ctx, p, upload, lambda video, source: (
        ctx.fs.video.start_face_detection(
            video, settings=settings, job_tag=p.job_tag, webhook_url=p.webhook_url,
            client_request_token=p.client_request_token, source_name=source, caller=caller))))


@router.get("/video/jobs", name=Operation.LIST_VIDEO_JOBS.value)
async def list_video_jobs(request: Request, caller: CallerDep, status: JobStatus | None = None,
                          max_results: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                          next_token: str | None = None) -> VideoJobsPage:
    """Video jobs, newest first, a page at a time."""
    ctx = context(request)
    kind = f"video-jobs-{status.value if status else 'all'}"
    jobs, nxt = await ctx.io(lambda: ctx.fs.video.list(
        status=status, limit=max_results, next_token=offset_token(kind, next_token),
        caller=caller))
    return VideoJobsPage(jobs=[job_out(j) for j in jobs], next_token=wrap_offset(kind, nxt))


@router.get("/video/jobs/{job_id}", name=Operation.DESCRIBE_VIDEO_JOB.value)
async def describe_video_job(request: Request, job_id: str, caller: CallerDep) -> VideoJobOut:
    """A job's status, progress and video metadata."""
    ctx = context(request)
    return job_out(await ctx.io(lambda: ctx.fs.video.describe(job_id, caller=caller)))


@router.get("/video/jobs/{job_id}/results", name=Operation.GET_VIDEO_JOB_RESULTS.value)
async def get_video_job_results(
    request: Request, job_id: str, caller: CallerDep,
    max_results: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
    next_token: str | None = None, sort_by: Literal["TIMESTAMP", "INDEX"] = "TIMESTAMP",
    matched_only: Annotated[bool, Query(description="face search: matched persons only")] = False,
) -> VideoResultsOut:
    """A page of a finished job's results (empty until it SUCCEEDED): for a face search job,
    each person at each sampled timestamp with the person's candidates; for a face detection
    job, each face."""
    ctx = context(request)
    job = await ctx.io(lambda: ctx.fs.video.describe(job_id, caller=caller))
    if job.kind is JobKind.FACE_DETECTION:
        kind = results_kind(job_id, "faces")
        dpage = await ctx.io(lambda: ctx.fs.video.face_detection_results(
            job_id, max_results=max_results, next_token=offset_token(kind, next_token),
            caller=caller))
        return VideoResultsOut(
            job=job_out(dpage.job), next_token=wrap_offset(kind, dpage.next_token),
            faces=[FaceEntryOut(timestamp_ms=f.timestamp_ms, face=video_face_out(f.face))
                   for f in dpage.faces])
    kind = results_kind(job_id, f"persons-{sort_by}-{int(matched_only)}")
    spage = await ctx.io(lambda: ctx.fs.video.face_search_results(
        job_id, max_results=max_results, next_token=offset_token(kind, next_token),
        sort_by=sort_by, matched_only=matched_only, caller=caller))
    return VideoResultsOut(
        job=job_out(spage.job), next_token=wrap_offset(kind, spage.next_token),
        persons=[PersonEntryOut(timestamp_ms=e.timestamp_ms, person_index=e.person_index,
                                face=video_face_out(e.face), matches=e.matches)
                 for e in spage.persons])


@router.get("/video/jobs/{job_id}/persons", name=Operation.GET_VIDEO_JOB_RESULTS.value)
async def get_video_job_persons(request: Request, job_id: str, caller: CallerDep) -> PersonsOut:
    """Each person (face track) of a finished job: first and last time seen (ms), detections,
    and candidates (face search jobs)."""
    ctx = context(request)
    job = await ctx.io(lambda: ctx.fs.video.describe(job_id, caller=caller))
    persons = await ctx.io(lambda: ctx.fs.video.persons(job_id, caller=caller))
    return PersonsOut(job=job_out(job), persons=persons)


@router.post("/video/jobs/{job_id}/cancel", name=Operation.CANCEL_VIDEO_JOB.value)
async def cancel_video_job(request: Request, job_id: str, caller: CallerDep) -> VideoJobOut:
    """Cancel a waiting or running job (a finished one is left as it is)."""
    ctx = context(request)
    return job_out(await ctx.io(lambda: ctx.fs.video.cancel(job_id, caller=caller)))


@router.delete("/video/jobs/{job_id}", name=Operation.DELETE_VIDEO_JOB.value, status_code=204,
               response_class=Response)
async def delete_video_job(request: Request, job_id: str, caller: CallerDep) -> Response:
    """Delete a finished job and its results (409 while it is in progress)."""
    ctx = context(request)
    await ctx.io(lambda: ctx.fs.video.delete(job_id, caller=caller))
    return Response(status_code=204)


# -- stream processors ----------------------------------------------------------------------

@router.post("/streams", name=Operation.CREATE_STREAM_PROCESSOR.value, status_code=201)
async def create_stream_processor(request: Request, body: StreamProcessorIn,
                                  caller: CallerDep) -> StreamProcessorOut:
    """Define a processor (STOPPED until started). Its searches run, and are audited, on
    behalf of the key that creates it, with this request's purpose and case."""
    ctx = context(request)
    settings = checked_stream_settings(ctx, body.settings)
    info = await ctx.io(lambda: ctx.fs.streams.create(body.name, settings, caller=caller))
    return processor_out(info, jsonl_root(ctx))


@router.get("/streams", name=Operation.LIST_STREAM_PROCESSORS.value)
async def list_stream_processors(request: Request, caller: CallerDep,
                                 max_results: Annotated[int, Query(ge=1, le=1000)] = 100,
                                 next_token: str | None = None) -> StreamProcessorsPage:
    """Processors in name order, a page at a time."""
    ctx = context(request)
    infos = {p.name: p for p in await ctx.io(lambda: ctx.fs.streams.list(caller=caller))}
    names, nxt = page_by_name(list(infos), next_token, max_results, "streams")
    root = jsonl_root(ctx)
    return StreamProcessorsPage(processors=[processor_out(infos[n], root) for n in names],
                                next_token=nxt)


@router.get("/streams/{name}", name=Operation.DESCRIBE_STREAM_PROCESSOR.value)
async def describe_stream_processor(request: Request, name: str,
                                    caller: CallerDep) -> StreamProcessorOut:
    """A processor's definition, status and (when it runs here) metrics."""
    ctx = context(request)
    return processor_out(await ctx.io(lambda: ctx.fs.streams.describe(name, caller=caller)),
                         jsonl_root(ctx))


@router.post("/streams/{name}/start", name=Operation.START_STREAM_PROCESSOR.value)
async def start_stream_processor(request: Request, name: str,
                                 caller: CallerDep) -> StreamProcessorOut:
    """Start a processor in this server (409 if it already runs)."""
    ctx = context(request)
    info = await ctx.io(lambda: ctx.fs.streams.start(name, caller=caller))
    return processor_out(info, jsonl_root(ctx))


@router.post("/streams/{name}/stop", name=Operation.STOP_STREAM_PROCESSOR.value)
async def stop_stream_processor(request: Request, name: str,
                                caller: CallerDep) -> StreamProcessorOut:
    """Stop a processor (a no-op when it is not running)."""
    ctx = context(request)
    return processor_out(await ctx.io(lambda: ctx.fs.streams.stop(name, caller=caller)),
                         jsonl_root(ctx))


@router.delete("/streams/{name}", name=Operation.DELETE_STREAM_PROCESSOR.value, status_code=204,
               response_class=Response)
async def delete_stream_processor(request: Request, name: str, caller: CallerDep) -> Response:
    """Stop and delete a processor; its live feeds end."""
    ctx = context(request)
    await ctx.io(lambda: ctx.fs.streams.delete(name, caller=caller))
    return Response(status_code=204)


@router.get("/streams/{name}/metrics", name=Operation.GET_STREAM_PROCESSOR_METRICS.value)
async def get_stream_processor_metrics(request: Request, name: str,
                                       caller: CallerDep) -> StreamMetricsOut:
    """A processor's status and, when it runs here, its counters, rates and latencies."""
    ctx = context(request)
    info = await ctx.io(lambda: ctx.fs.streams.describe(name, caller=caller))
    return StreamMetricsOut(name=info.name, status=info.status.value, metrics=info.metrics)


def _sse(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _next_event(ctx: ApiContext, sub: Subscription, actor: str) -> StreamEvent | str | None:
    """The feed's next event; None on a keep-alive tick; a reason (str) when the feed must end
    (closed, or the reader's key revoked or expired: checked before every delivery, and at
    the moment the key expires)."""
    info = await ctx.io(lambda: ctx.fs.keys.describe(actor)) if actor.startswith("FSAK") \
        else None
    wait = KEEPALIVE_S
    if info is not None and info.expires_at is not None:
        wait = max(0.0, min(wait, info.expires_at - ctx.fs.keys.clock()))
    ev = await sub.aget(wait)
    if ev is None and sub.closed:
        return sub.end_reason or "the processor was deleted or the server stops"
    problem = await ctx.io(lambda: ctx.fs.streams.key_problem(actor))
    if problem is not None:
        sub.close(problem, discard=True)
        return problem
    return ev


@router.get("/streams/{name}/events", name=Operation.GET_STREAM_PROCESSOR_EVENTS.value,
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: `subscribed`, then one "
                                            "`face_match` per event, `end` when the processor "
                                            "is deleted; `: keep-alive` comments every 15 s"}})
async def stream_events(request: Request, name: str, caller: CallerDep) -> StreamingResponse:
    """The processor's events as they happen (Server-Sent Events), across its stops and
    starts, until it is deleted, the key that opened the feed is revoked or expires, or the
    client goes away."""
    ctx = context(request)
    loop = asyncio.get_running_loop()
    sub = await ctx.io(lambda: ctx.fs.streams.subscribe(name, loop=loop, caller=caller))
    hub = ctx.fs.streams.hub(name)

    async def feed() -> AsyncIterator[bytes]:
        try:
            yield _sse("subscribed", {"processor": name})
            while True:
                ev = await _next_event(ctx, sub, caller.actor)
                if isinstance(ev, StreamEvent):
                    yield _sse("face_match", ev.to_json(), ev.event_id)
                elif isinstance(ev, str):
                    yield _sse("end", {"processor": name, "reason": ev})
                    return
                else:
                    yield b": keep-alive\n\n"
        finally:
            hub.unsubscribe(sub)

    return StreamingResponse(feed(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# -- WebSocket feed -------------------------------------------------------------------------

async def _ws_caller(websocket: WebSocket, ctx: ApiContext) -> Caller:
    """Authenticate a WebSocket (handshake header, else a first message) and authorise
    :attr:`Operation.GET_STREAM_PROCESSOR_EVENTS` through the role table."""
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1"))
               for k, v in websocket.scope["headers"]]
    if not any(k == "authorization" for k, _ in headers):
        try:
            msg = await asyncio.wait_for(websocket.receive(), WS_AUTH_TIMEOUT_S)
            if msg["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(msg.get("code", 1000))
            first = json.loads(msg.get("text") or msg.get("bytes") or b"")
        except TimeoutError:
            raise InvalidParameterError("send {\"authorization\": \"Bearer <key id>:<secret>\"} "
                                        "first (or an Authorization header)") from None
        except ValueError:
            raise SerializationError("the first message must be JSON") from None
        auth = first.get("authorization") if isinstance(first, dict) else None
        headers = [("authorization", str(auth or ""))]
    signed = SignedRequest(
        method="GET",
        path=websocket.scope.get("raw_path", websocket.url.path.encode()).decode("latin-1"),
        query=websocket.scope.get("query_string", b"").decode("latin-1"),
        headers=headers, body=b"")
    key = await ctx.io(lambda: authenticate(
        signed, ctx.fs.keys, service="facesearch", max_skew_s=ctx.settings.clock_skew_s,
        allow_bearer=True, now=time.time()))
    authorize(key, Operation.GET_STREAM_PROCESSOR_EVENTS)
    client = websocket.client
    return Caller(actor=key.key_id, role=key.role.value, client=client.host if client else None)


@ws_router.websocket("/streams/{name}/ws", name=Operation.GET_STREAM_PROCESSOR_EVENTS.value)
async def stream_websocket(websocket: WebSocket, name: str) -> None:
    """The processor's events as JSON text messages: ``{"type": "subscribed"}``, then each
    event (``"type": "face_match"``), then ``{"type": "end"}`` when the processor is deleted.
    Errors are ``{"type": "error", "code", "message"}`` followed by a close with code 4000 +
    the native HTTP status (4401, 4403, 4404, ...)."""
    ctx: ApiContext = websocket.app.state.ctx
    await websocket.accept()
    try:
        caller = await _ws_caller(websocket, ctx)
        loop = asyncio.get_running_loop()
        sub = await ctx.io(lambda: ctx.fs.streams.subscribe(name, loop=loop, caller=caller))
    except WebSocketDisconnect:
        return
    except FaceSearchError as exc:
        await websocket.send_json({"type": "error", "code": exc.code, "message": exc.message})
        await websocket.close(code=4000 + mapping(exc).status)
        return
    hub = ctx.fs.streams.hub(name)

    async def pump() -> None:
        await websocket.send_json({"type": "subscribed", "processor": name})
        while True:
            ev = await _next_event(ctx, sub, caller.actor)
            if isinstance(ev, StreamEvent):
                await websocket.send_json(ev.to_json())
            elif isinstance(ev, str):
                await websocket.send_json({"type": "end", "processor": name, "reason": ev})
                await websocket.close()
                return

    async def listen() -> None:
        while True:  # client messages are ignored; this notices the client going away
            if (await websocket.receive())["type"] == "websocket.disconnect":
                return

    tasks = [asyncio.create_task(pump()), asyncio.create_task(listen())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if not t.cancelled() and isinstance(t.exception(), WebSocketDisconnect):
                continue
            t.result()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        hub.unsubscribe(sub)
        if websocket.application_state is WebSocketState.CONNECTED and \
                websocket.client_state is WebSocketState.CONNECTED:
            await websocket.close()
