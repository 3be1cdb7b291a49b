"""Scanning a stored video: detect the faces of its sampled frames and follow each person.

Frames are sampled at ``sample_fps`` (the first frame of each 1/sample_fps interval), faces
are detected on each sampled frame (frames larger than ``detect_max_side`` are scaled down for
detection only), followed across frames by :class:`facesearch.video.tracking.IouTracker`.
Every decoded frame goes through the shot detector (:mod:`facesearch.video.shots`): all
tracks end at a cut. With ``embed`` (face search jobs) every face is embedded, a track is split
where a face's embedding disagrees with the track's previous one (``split_similarity``), and
each person ("track", with a per-video index) gets a template: the quality-weighted mean of its
``views_per_track`` best views (:class:`~facesearch.video.tracking.TrackTemplate`). Its best
view is kept as its thumbnail.

This is the imaging layer: it searches nothing (the video jobs of :mod:`facesearch.media.jobs`
search the templates through the search gate) and runs here or in a Ray task
(:mod:`facesearch.services.cluster`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from facesearch.limits import MAX_RESULTS
from facesearch.types import Faces, FloatArray, IntArray
from facesearch.video.frames import VideoInfo, detect_frame, iter_frames, probe
from facesearch.video.tracking import SPLIT_SIMILARITY, IouTracker, TrackTemplate, view_scores
from facesearch.vision import similarity as sim
from facesearch.vision.pipeline import Pipeline
from facesearch.vision.recognisability import recognisability


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


class ScanStopped(Exception):
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
    (:func:`~facesearch.video.tracking.view_scores`), or None where the embedder gives no
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
    ``should_stop`` is asked before each frame (True aborts with ``ScanStopped``).
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
            raise ScanStopped
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
