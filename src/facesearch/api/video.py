"""Stored-video jobs over HTTP (native API, ``/v1/video``); stream processors are
:mod:`facesearch.api.streams`'.

Routes call :attr:`FaceSearch.video <facesearch.service.FaceSearch.video>` (StartFaceSearch /
StartFaceDetection jobs) and convert their results; the Rekognition-shaped video operations
live in :mod:`facesearch.api.rekognition_video` and share this module's input helpers.

Video input is one of:

- a **server path**, only under the directories of ``FACESEARCH_API_VIDEO_PATH_ROOTS``
  (:class:`~facesearch.config.VideoApiSettings`; none by default, so server paths are
  refused). The same roots bound the video files a stream processor may play as a camera;
- a **multipart upload** (file part ``video``), at most ``FACESEARCH_API_VIDEO_MAX_UPLOAD_BYTES``;
- an **S3 object** of the configured store (``FACESEARCH_API_S3_*``), streamed to the data
  directory, at most the service's video size limit.

A key issued for a case sees only the jobs of its case (others are "not found"). Every
candidate is a lead for human review.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from facesearch.api.auth import Operation
from facesearch.api.context import ApiContext, context
from facesearch.api.errors import InvalidS3ObjectError, SerializationError
from facesearch.api.native import CallerDep, json_object, native_router, validated
from facesearch.api.paging import decode_row, encode_token
from facesearch.api.s3 import S3Images
from facesearch.config import EndpointSettings
from facesearch.errors import InvalidParameterError, VideoTooLargeError
from facesearch.limits import MAX_RESULTS
from facesearch.media.job_notify import s3_label
from facesearch.media.video_job import JobKind, JobStatus, MAX_PAGE, VideoJob
from facesearch.video.scan import VideoJobSettings
from facesearch.shapes.video import (
    PersonsOut,
    ThumbnailOut,
    ThumbnailsOut,
    VideoJobOut,
    VideoJobsPage,
    VideoResultsOut,
)

UPLOAD_PATHS = frozenset({"/v1/video/search", "/v1/video/detect"})
"""Routes whose request bodies may be as large as ``max_upload_bytes`` (video uploads)."""


# -- S3 videos --------------------------------------------------------------------------------

class S3Videos(S3Images):
    """The S3 store of :class:`S3Images`, which also streams (large) video objects."""

    def __init__(self, settings: EndpointSettings, max_bytes: int,
                 max_video_bytes: int) -> None:
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

router = native_router((400, 401, 403, 404, 409, 413, 429, 503))


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
    max_results: int = Field(default=10, ge=1, le=MAX_RESULTS, description="candidates kept per person")


# -- input checks -----------------------------------------------------------------------------

def allowed_path(ctx: ApiContext, path: str, what: str) -> None:
    """Refuse a server path outside the configured roots (all of them when none are set)."""
    roots = ctx.fs.video.path_roots or []
    real = Path(path).resolve()
    if not any(real.is_relative_to(root) for root in roots):
        raise InvalidParameterError(
            f"{what} {path!r}: server paths must lie under an allowed video directory "
            f"(FACESEARCH_API_VIDEO_PATH_ROOTS{'' if roots else ', unset on this server'})")


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
    return VideoJobOut.model_validate(await submit_job(ctx, p, upload, lambda video, source: (
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
    return VideoJobOut.model_validate(await submit_job(ctx, p, upload, lambda video, source: (
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
    jobs, nxt = await ctx.io(lambda: ctx.fs.video.list_jobs(
        status=status, limit=max_results, next_token=offset_token(kind, next_token),
        caller=caller))
    return VideoJobsPage(jobs=[VideoJobOut.model_validate(j) for j in jobs],
                         next_token=wrap_offset(kind, nxt))


@router.get("/video/jobs/{job_id}", name=Operation.DESCRIBE_VIDEO_JOB.value)
async def describe_video_job(request: Request, job_id: str, caller: CallerDep) -> VideoJobOut:
    """A job's status, progress and video metadata."""
    ctx = context(request)
    job = await ctx.io(lambda: ctx.fs.video.describe(job_id, caller=caller))
    return VideoJobOut.model_validate(job)


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
        dpage = await ctx.io(lambda: ctx.fs.video.results.face_detection_results(
            job_id, max_results=max_results, next_token=offset_token(kind, next_token),
            caller=caller))
        return VideoResultsOut.of(dpage, wrap_offset(kind, dpage.next_token))
    kind = results_kind(job_id, f"persons-{sort_by}-{int(matched_only)}")
    spage = await ctx.io(lambda: ctx.fs.video.results.face_search_results(
        job_id, max_results=max_results, next_token=offset_token(kind, next_token),
        sort_by=sort_by, matched_only=matched_only, caller=caller))
    return VideoResultsOut.of(spage, wrap_offset(kind, spage.next_token))


@router.get("/video/jobs/{job_id}/persons", name=Operation.GET_VIDEO_JOB_RESULTS.value)
async def get_video_job_persons(request: Request, job_id: str, caller: CallerDep) -> PersonsOut:
    """Each person (face track) of a finished job: first and last time seen (ms), detections,
    and candidates (face search jobs)."""
    ctx = context(request)
    job = await ctx.io(lambda: ctx.fs.video.describe(job_id, caller=caller))
    persons = await ctx.io(lambda: ctx.fs.video.results.persons(job_id, caller=caller))
    return PersonsOut(job=VideoJobOut.model_validate(job), persons=persons)


@router.get("/video/jobs/{job_id}/thumbnails", name=Operation.GET_VIDEO_JOB_RESULTS.value)
async def get_video_job_thumbnails(request: Request, job_id: str,
                                   caller: CallerDep) -> ThumbnailsOut:
    """A small face image of each person of a finished job (its best view)."""
    ctx = context(request)
    thumbs = await ctx.io(lambda: ctx.fs.video.results.thumbnails(job_id, caller=caller))
    return ThumbnailsOut(job_id=job_id,
                         thumbnails=[ThumbnailOut.model_validate(t) for t in thumbs])


@router.get("/video/jobs/{job_id}/frame", name=Operation.GET_VIDEO_JOB_RESULTS.value,
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
async def get_video_job_frame(
    request: Request, job_id: str, caller: CallerDep,
    timestamp_ms: Annotated[int, Query(ge=0, description="ms from the video's first frame")],
) -> Response:
    """The video's frame at a time, as a JPEG (at most 960 px a side; headers
    ``X-Frame-Width`` and ``-Height`` give its size), while the job's video is kept (server
    paths; uploads are deleted when their job ends)."""
    ctx = context(request)
    jpeg, w, h = await ctx.infer(lambda: ctx.fs.video.results.frame(job_id, timestamp_ms,
                                                            caller=caller))
    return Response(jpeg, media_type="image/jpeg",
                    headers={"Cache-Control": "no-store", "X-Frame-Width": str(w),
                             "X-Frame-Height": str(h)})


@router.post("/video/jobs/{job_id}/cancel", name=Operation.CANCEL_VIDEO_JOB.value)
async def cancel_video_job(request: Request, job_id: str, caller: CallerDep) -> VideoJobOut:
    """Cancel a waiting or running job (a finished one is left as it is)."""
    ctx = context(request)
    job = await ctx.io(lambda: ctx.fs.video.cancel(job_id, caller=caller))
    return VideoJobOut.model_validate(job)


@router.delete("/video/jobs/{job_id}", name=Operation.DELETE_VIDEO_JOB.value, status_code=204,
               response_class=Response)
async def delete_video_job(request: Request, job_id: str, caller: CallerDep) -> Response:
    """Delete a finished job and its results (409 while it is in progress)."""
    ctx = context(request)
    await ctx.io(lambda: ctx.fs.video.delete(job_id, caller=caller))
    return Response(status_code=204)


