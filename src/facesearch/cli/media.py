"""``facesearch video ...``, ``stream ...`` and ``cameras ...``: stored video, live streams and
the cameras processors may name."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from facesearch.cli.common import (
    CaseOpt,
    HomeOpt,
    JsonOpt,
    MaxOpt,
    PurposeOpt,
    SearchThresholdOpt,
    emit,
    emit_json,
    err,
    out,
    service,
    ts,
)
from facesearch.service import FaceSearch
from facesearch.shapes.base import rnd
from facesearch.types import Caller

if TYPE_CHECKING:
    from facesearch.shapes.video import VideoResultsOut

video_app = typer.Typer(no_args_is_help=True, help="Find faces in stored video files.")


stream_app = typer.Typer(no_args_is_help=True, help="Watch live streams for watchlist faces.")


cameras_app = typer.Typer(no_args_is_help=True, help="The cameras stream processors may name "
                                                     "(Rekognition clients: by the stream name "
                                                     "of a Kinesis video stream ARN).")


FpsOpt = Annotated[float, typer.Option("--fps", min=0.01, max=120,
                                       help="Frames analysed per second of video.")]


def _video_match_json(m: Any) -> dict[str, Any]:
    return {"face_id": m.face_id, "external_id": m.external_id, "image_id": m.image_id,
            "user_id": m.user_id, "similarity": rnd(m.similarity, 3)}


def _run_video_job(fs: FaceSearch, job_id: str, quiet: bool) -> Any:
    """Wait for an in-process video job with a progress bar; Ctrl-C cancels it."""
    from facesearch.errors import FaceSearchError as _Error
    from facesearch.media.video_job import JobStatus

    progress = Progress(TextColumn("analysing"), BarColumn(),
                        TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=err, disable=quiet or not err.is_terminal)
    try:
        with progress:
            task = progress.add_task("video", total=100.0)
            while True:
                job = fs.video.wait(job_id, timeout_s=0.5)
                progress.update(task, completed=job.progress)
                if job.status is not JobStatus.IN_PROGRESS:
                    break
    except KeyboardInterrupt:
        fs.video.cancel(job_id)
        fs.video.wait(job_id, timeout_s=30)
        err.print("cancelled")
        raise typer.Exit(130) from None
    if job.status is not JobStatus.SUCCEEDED:
        raise _Error(f"video job {job.status.value.lower()}: {job.status_message}")
    return job


def _video_results(fs: FaceSearch, job: Any) -> VideoResultsOut:
    """Every result of a finished job, all pages in one (``GET /v1/video/jobs/{id}/results``
    with every page's persons or faces)."""
    from facesearch.media.video_job import JobKind
    from facesearch.shapes.video import (
        FaceEntryOut,
        PersonEntryOut,
        VideoJobOut,
        VideoResultsOut,
    )

    detection = job.kind is JobKind.FACE_DETECTION
    persons: list[PersonEntryOut] = []
    faces: list[FaceEntryOut] = []
    token = None
    while True:
        if detection:
            dpage = fs.video.results.face_detection_results(job.job_id, next_token=token)
            faces += [FaceEntryOut.model_validate(f) for f in dpage.faces]
            job, token = dpage.job, dpage.next_token
        else:
            spage = fs.video.results.face_search_results(job.job_id, next_token=token)
            persons += [PersonEntryOut.model_validate(p) for p in spage.persons]
            job, token = spage.job, spage.next_token
        if token is None:
            break
    return VideoResultsOut(job=VideoJobOut.model_validate(job),
                           faces=faces if detection else None,
                           persons=None if detection else persons)


def _video_persons(fs: FaceSearch, job: Any) -> list[dict[str, Any]]:
    """Every person of a finished job with its timestamps and boxes (all result pages)."""
    from facesearch.media.video_job import JobKind

    people: dict[int, dict[str, Any]] = {
        p.person_index: {"index": p.person_index, "first_ms": p.first_ms,
                         "last_ms": p.last_ms, "detections": p.detections,
                         "matches": [_video_match_json(m) for m in p.matches],
                         "timestamps": []} for p in fs.video.results.persons(job.job_id)}
    if job.kind is JobKind.FACE_SEARCH:
        token = None
        while True:
            page = fs.video.results.face_search_results(job.job_id, next_token=token, sort_by="INDEX")
            for pm in page.persons:
                people[pm.person_index]["timestamps"].append(
                    {"timestamp_ms": pm.timestamp_ms, "box": [rnd(v, 1) for v in pm.face.box],
                     "confidence": rnd(pm.face.confidence, 4)})
            token = page.next_token
            if token is None:
                break
    return list(people.values())


def _print_persons(persons: list[dict[str, Any]], title: str, with_matches: bool) -> None:
    cols = ["person", "from (s)", "to (s)", "seen"]
    if with_matches:
        cols += ["best candidate", "similarity", "others"]
    t = Table(*cols, title=title)
    for p in persons:
        row = [str(p["index"]), f"{p['first_ms'] / 1000:.2f}", f"{p['last_ms'] / 1000:.2f}",
               str(p["detections"])]
        if with_matches:
            ms = p["matches"]
            best = ms[0] if ms else None
            row += [(best["external_id"] or best["face_id"]) if best else "",
                    f"{best['similarity']:.2f}" if best else "",
                    ", ".join(f"{m['external_id'] or m['face_id']} {m['similarity']:.1f}"
                              for m in ms[1:4])]
        t.add_row(*row)
    out.print(t)


@video_app.command("search")
def video_search(
    collection: str,
    file: Path,
    home: HomeOpt = None,
    fps: FpsOpt = 5.0,
    threshold: SearchThresholdOpt = None,
    max_results: MaxOpt = 10,
    purpose: PurposeOpt = None,
    case: CaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the faces of a video file against a collection (candidates for human review).

    Reports each person (a face tracked across frames), when it was seen, and its candidates.
    """
    from facesearch.video.scan import VideoJobSettings

    settings = VideoJobSettings(sample_fps=fps, threshold=threshold, max_results=max_results)
    with service(home) as fs:
        job_id = fs.video.start_face_search(collection, file, settings=settings,
                                            caller=Caller.local(purpose, case))
        job = _run_video_job(fs, job_id, as_json)
        if as_json:
            emit(_video_results(fs, job))
            return
        persons = _video_persons(fs, job)
    matched = sum(1 for p in persons if p["matches"])
    _print_persons(persons, f"{file}: {len(persons)} person(s), {matched} with candidates "
                            f"for human review", True)


@video_app.command("detect")
def video_detect(
    file: Path,
    home: HomeOpt = None,
    fps: FpsOpt = 5.0,
    as_json: JsonOpt = False,
) -> None:
    """Detect and track the faces of a video file."""
    from facesearch.video.scan import VideoJobSettings

    with service(home) as fs:
        job_id = fs.video.start_face_detection(
            file, settings=VideoJobSettings(sample_fps=fps), caller=Caller.local())
        job = _run_video_job(fs, job_id, as_json)
        if as_json:
            emit(_video_results(fs, job))
            return
        persons = _video_persons(fs, job)
        faces = 0
        token = None
        while True:
            page = fs.video.results.face_detection_results(job_id, next_token=token)
            faces += len(page.faces)
            token = page.next_token
            if token is None:
                break
    _print_persons(persons, f"{file}: {faces} face(s) in {job.frames_analysed} analysed "
                            f"frames, {len(persons)} person(s)", False)


@stream_app.command("run")
def stream_run(
    collection: str,
    url: Annotated[str, typer.Argument(help="rtsp://, http(s):// (MJPEG, HLS), /dev/videoN, or "
                                            "a video file (looped as a camera).")],
    home: HomeOpt = None,
    threshold: SearchThresholdOpt = None,
    jsonl: Annotated[Path | None, typer.Option(help="Append each event to this JSONL "
                                                    "file.")] = None,
    webhook: Annotated[str | None, typer.Option(help="POST each event to this URL.")] = None,
    duration: Annotated[float | None, typer.Option(min=0, help="Stop after S seconds "
                                                               "(default: Ctrl-C).")] = None,
    max_fps: Annotated[float | None, typer.Option(min=0.01, help="Most frames processed per "
                                                                 "second.")] = None,
    snapshots: Annotated[bool, typer.Option(help="Save a JPEG crop of each matched "
                                                 "face.")] = False,
    loop: Annotated[bool, typer.Option(help="Loop a file input.")] = True,
    purpose: PurposeOpt = None,
    case: CaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Watch a live stream in the foreground and print one event per person and watchlist
    identity (candidates for human review). Ctrl-C stops."""
    from facesearch.media.stream.model import ProcessorStatus, StreamSettings

    settings = StreamSettings(input_url=url, collection=collection, threshold=threshold,
                              jsonl_path=jsonl, webhook_url=webhook, max_fps=max_fps,
                              snapshots=snapshots, loop=loop)
    with service(home) as fs:
        # Fails fast on an unknown collection or a search its policy refuses.
        proc = fs.streams.foreground(settings, caller=Caller.local(purpose, case))
        _ = fs.pipeline  # load the models before the clock starts
        sub = proc.hub.subscribe()
        proc.start()
        end = None if duration is None else time.monotonic() + duration
        try:
            while end is None or time.monotonic() < end:
                ev = sub.get(timeout_s=0.5)
                if ev is not None:
                    if as_json:
                        emit_json(ev.to_json())
                    else:
                        out.print(f"{ts(ev.captured_at)} track {ev.track_id}: "
                                  f"[bold]{ev.identity}[/] similarity {ev.match.similarity:.1f} "
                                  f"(latency {ev.latency_ms:.0f} ms)"
                                  + (f" {ev.snapshot}" if ev.snapshot else ""))
                if proc.status in (ProcessorStatus.FAILED, ProcessorStatus.STOPPED):
                    break
        except KeyboardInterrupt:
            pass
        finally:
            proc.shutdown()
        m = proc.metrics()
    err.print(f"{m.frames_in} frames in, {m.frames_processed} processed, {m.frames_dropped} "
              f"dropped, {m.events} events, {m.reconnects} reconnects; latency p50 "
              f"{m.latency_p50_ms} ms, p99 {m.latency_p99_ms} ms", highlight=False)
    if m.status is ProcessorStatus.FAILED:
        from facesearch.errors import FaceSearchError as _Error

        raise _Error(m.last_error or "the stream processor failed")


def _camera_json(c: Any) -> dict[str, Any]:
    return {"name": c.name, "url": c.shown_url, "input_format": c.input_format,
            "label": c.label, "added_by": c.added_by, "created_at": c.created_at}


@cameras_app.command("add")
def cameras_add(
    name: Annotated[str, typer.Argument(help="The camera's name (a Kinesis video stream name: "
                                             "1-256 of letters, digits, '_', '.', '-').")],
    url: Annotated[str, typer.Argument(help="rtsp://, http(s):// (MJPEG, HLS), /dev/videoN or a "
                                            "video file (played as a camera).")],
    input_format: Annotated[str | None, typer.Option(
        "--format", help="FFmpeg input format, when it cannot be guessed (mpjpeg, "
                         "v4l2...).")] = None,
    label: Annotated[str | None, typer.Option(help="What or where the camera is.")] = None,
    home: HomeOpt = None, as_json: JsonOpt = False,
) -> None:
    """Configure a camera. Only this command names a camera's URL: API clients name the camera
    (a Rekognition client as arn:aws:kinesisvideo:REGION:ACCOUNT:stream/NAME/1), so its host is
    not held to the egress allow-list, and local devices and files are allowed."""
    with service(home) as fs:
        cam = fs.cameras.add(name, url, input_format=input_format, label=label)
    if as_json:
        emit_json(_camera_json(cam))
    else:
        out.print(f"camera {cam.name}: {cam.shown_url}", highlight=False, soft_wrap=True)


@cameras_app.command("list")
def cameras_list(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """List the cameras (passwords in URLs masked)."""
    with service(home) as fs:
        cams = fs.cameras.list_cameras()
    if as_json:
        emit_json({"cameras": [_camera_json(c) for c in cams]})
        return
    t = Table("name", "url", "format", "label", "added by", "added")
    for c in cams:
        t.add_row(c.name, c.shown_url, c.input_format or "", c.label or "", c.added_by,
                  ts(c.created_at))
    out.print(t)


@cameras_app.command("remove")
def cameras_remove(name: str, home: HomeOpt = None) -> None:
    """Remove a camera (processors that name it fail to start until it is added again)."""
    with service(home) as fs:
        fs.cameras.remove(name)
    err.print(f"removed camera {name}")
