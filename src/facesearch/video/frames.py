"""What stored video and live streams share: decoding a video file's frames and analysing one
frame.

- :func:`probe` and :func:`iter_frames`: a video file's main stream (PyAV / FFmpeg: H.264,
  H.265, MPEG-4, MJPEG... in MP4, MOV, MKV, AVI), its frames with timestamps in milliseconds
  from the first frame, optionally sampled at a frame rate; :func:`frame_at`: one frame;
- :func:`detect_frame`: faces (with quality) and aligned chips of one frame, detected on a
  scaled-down copy when the frame is large;
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import av
import av.container
import cv2
import numpy as np

from facesearch.errors import (
    InvalidVideoError,
)
from facesearch.types import Faces, Image, RGBImage
from facesearch.video.containers import open_container
from facesearch.video.shots import ShotDetector
from facesearch.vision.pipeline import Pipeline
from facesearch.vision.quality import measure


@dataclass(frozen=True)
class VideoInfo:
    """A video's main stream: size in pixels, frame rate (frames/s), duration (ms), and
    ``start_ms``: when its first frame shows on the file's own timeline (what a player's clock
    reads then; timestamps here count from that frame, so a player shows timestamp ``t`` at
    ``start_ms + t``)."""

    format: str
    codec: str
    width: int
    height: int
    fps: float
    duration_ms: int | None
    frame_count: int | None
    start_ms: int = 0


@dataclass(frozen=True, eq=False)
class VideoFrame:
    """A decoded frame: RGB pixels, time (ms from the first frame), index in decode order,
    and its shot: ``shot`` counts the cuts before it (0 in the first shot) and
    ``shot_start_ms`` is when its shot's first frame shows (see :mod:`facesearch.video.shots`;
    always 0 and 0 when shots are not detected)."""

    pixels: RGBImage
    timestamp_ms: int
    index: int
    shot: int = 0
    shot_start_ms: int = 0


def _ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's reason without the file name it names (no server path in an error)."""
    reason = exc.strerror if isinstance(exc, av.FFmpegError) else None
    return (reason or "").strip() or type(exc).__name__


def _open(path: str | os.PathLike[str], label: str) -> av.container.InputContainer:
    """:func:`~facesearch.video.containers.open_container` for a local file, its refusal
    named by ``label``."""
    try:
        return open_container(str(path))
    except InvalidVideoError as exc:
        raise InvalidVideoError(f"{label}: {exc.message}") from None


def probe(path: str | os.PathLike[str], label: str | None = None) -> VideoInfo:
    """The video's :class:`VideoInfo`, or :class:`InvalidVideoError` naming the problem."""
    label = label or str(path)
    try:
        with _open(path, label) as c:
            if not c.streams.video:
                raise InvalidVideoError(f"{label}: has no video stream")
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate or s.base_rate
            duration: int | None = None
            if s.duration is not None and s.time_base is not None:
                duration = round(float(s.duration * s.time_base) * 1000)
            elif c.duration is not None:
                duration = int(c.duration // 1000)
            start = 0
            if s.start_time is not None and s.time_base is not None:
                start = max(0, round(float(s.start_time * s.time_base) * 1000))
            return VideoInfo(format=c.format.name, codec=s.codec_context.name,
                             width=s.codec_context.width, height=s.codec_context.height,
                             fps=float(rate) if rate else 0.0, duration_ms=duration,
                             frame_count=int(s.frames) or None, start_ms=start)
    except av.FFmpegError as exc:
        raise InvalidVideoError(
            f"{label}: not a video FFmpeg can read ({_ffmpeg_reason(exc)})") from None
    except OSError as exc:
        raise InvalidVideoError(f"{label}: cannot read ({exc.strerror or exc})") from None


def iter_frames(path: str | os.PathLike[str], *, sample_fps: float | None = None,
                label: str | None = None, shots: bool = False) -> Iterator[VideoFrame]:
    """Decode the first video stream; with ``sample_fps``, only the first frame of each
    1/sample_fps interval is converted to RGB and yielded. With ``shots``, every decoded
    frame (sampled or not) goes through a :class:`~facesearch.video.shots.ShotDetector`, so
    each yielded frame knows its shot."""
    label = label or str(path)
    step = 1000.0 / sample_fps if sample_fps else 0.0
    last_bucket = -1
    shot_start = 0
    try:
        with _open(path, label) as c:
            if not c.streams.video:
                raise InvalidVideoError(f"{label}: has no video stream")
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            tb = float(s.time_base) if s.time_base is not None else 0.0
            rate = float(s.average_rate or s.guessed_rate or 25)
            origin: int | None = s.start_time
            detector = ShotDetector(rate) if shots else None
            for i, frame in enumerate(c.decode(s)):
                if frame.pts is None or not tb:
                    ts = i * 1000.0 / rate
                else:
                    if origin is None:
                        origin = frame.pts
                    ts = (frame.pts - origin) * tb * 1000.0
                ts = max(ts, 0.0)
                if detector is not None and detector.feed(frame):
                    shot_start = round(ts)
                if step:
                    bucket = int(ts // step)
                    if bucket <= last_bucket:
                        continue
                    last_bucket = bucket
                yield VideoFrame(np.ascontiguousarray(frame.to_ndarray(format="rgb24")),
                                 round(ts), i, detector.shot if detector else 0, shot_start)
    except av.FFmpegError as exc:
        raise InvalidVideoError(f"{label}: decoding failed ({_ffmpeg_reason(exc)})") from None


def frame_at(path: str | os.PathLike[str], timestamp_ms: int, *,
             label: str | None = None) -> VideoFrame:
    """The first frame at or after ``timestamp_ms`` (ms from the first frame, as
    :func:`iter_frames` counts), or the last frame when the video ends before it."""
    label = label or str(path)
    try:
        with _open(path, label) as c:
            if not c.streams.video:
                raise InvalidVideoError(f"{label}: has no video stream")
            s = c.streams.video[0]
            tb = float(s.time_base) if s.time_base is not None else 0.0
            origin = s.start_time or 0
            if tb and timestamp_ms > 0:
                c.seek(origin + int(timestamp_ms / 1000.0 / tb), stream=s, backward=True)
            rate = float(s.average_rate or s.guessed_rate or 25)
            last = None
            for i, frame in enumerate(c.decode(s)):
                ts = (frame.pts - origin) * tb * 1000.0 if frame.pts is not None and tb \
                    else i * 1000.0 / rate
                last = (frame, ts, i)
                if ts + 0.5 >= timestamp_ms:
                    break
            if last is None:
                raise InvalidVideoError(f"{label}: no frame could be decoded")
            frame, ts, i = last
            return VideoFrame(np.ascontiguousarray(frame.to_ndarray(format="rgb24")),
                              round(max(ts, 0.0)), i)
    except av.FFmpegError as exc:
        raise InvalidVideoError(f"{label}: decoding failed ({_ffmpeg_reason(exc)})") from None


def detect_frame(pipeline: Pipeline, pixels: RGBImage,
                 detect_max_side: int | None = None) -> tuple[Faces, np.ndarray]:
    """Faces (with quality; boxes and landmarks in ``pixels``' coordinates) and their aligned
    chips ((N, S, S, 3) uint8, cut from the full-resolution frame) for one video frame.

    Frames whose longest side exceeds ``detect_max_side`` are scaled down for detection only.
    """
    h, w = pixels.shape[:2]
    scale = 1.0
    if detect_max_side is not None and max(h, w) > detect_max_side:
        scale = detect_max_side / max(h, w)
        small = np.asarray(cv2.resize(pixels, (max(1, round(w * scale)),
                                               max(1, round(h * scale))),
                                      interpolation=cv2.INTER_AREA), np.uint8)
        found = pipeline.detector.detect(small)
        faces = Faces(boxes=(found.boxes / scale).astype(np.float32), scores=found.scores,
                      landmarks=(found.landmarks / scale).astype(np.float32))
    else:
        faces = pipeline.detector.detect(pixels)
    # A frame has no encoded content of its own, hence no content hash.
    chips = pipeline.chips(Image(pixels=pixels, sha256="", format="VIDEO"), faces)
    return faces.with_quality(measure(faces, chips, w, h)), chips
