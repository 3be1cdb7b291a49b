"""Face tracking across video frames: IoU association with a constant-velocity prediction.

A small, deterministic tracker that works on any frame spacing (sampled stored video, live
streams that drop frames): each track predicts its box at the new frame's time from its
velocity (pixels per millisecond), detections are associated greedily by IoU with the
predictions (highest first, at least ``iou_threshold``), unmatched detections start new tracks,
and a track unseen for longer than ``max_gap_ms`` ends. Track ids count up from 0 in order of
first appearance, so they double as Rekognition's per-video person ``Index``.

A track never crosses a cut and never changes identity: the caller ends every track at a shot
boundary (:meth:`IouTracker.reset`, cuts from :mod:`facesearch.video.shots`) and splits a track
(:meth:`IouTracker.split`) when a face's embedding disagrees with the track's previous one
(:meth:`TrackTemplate.agrees`, similarity below :data:`SPLIT_SIMILARITY`). A track's
:class:`TrackTemplate` is the quality-weighted mean of its best views' embeddings
(:func:`view_scores` gives the weights), the one vector a person is searched with.

Why not norfair or supervision's ByteTrack: both assume a fixed frame rate (ages in frames,
Kalman steps per frame) while frames here arrive at irregular times, and both bring large
dependency trees for what is about a hundred lines here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from facesearch.types import FloatArray, IntArray, Quality


def iou_matrix(a: FloatArray, b: FloatArray) -> FloatArray:
    """IoU of every box of ``a`` ((N, 4) x1, y1, x2, y2) with every box of ``b`` ((M, 4))."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return (inter / np.maximum(union, 1e-6)).astype(np.float32)


@dataclass
class Track:
    """One face followed across frames. Boxes in pixels, velocity in pixels per ms."""

    track_id: int
    box: FloatArray
    first_ms: int
    last_ms: int
    hits: int = 1
    velocity: FloatArray = field(default_factory=lambda: np.zeros(4, np.float32))

    def predict(self, timestamp_ms: int, max_gap_ms: int) -> FloatArray:
        dt = float(min(max(timestamp_ms - self.last_ms, 0), max_gap_ms))
        return (self.box + self.velocity * dt).astype(np.float32)


class IouTracker:
    """Greedy IoU tracker with constant-velocity prediction (see the module docstring).

    ``smoothing`` (0-1) weighs the newest velocity measurement against the previous estimate.
    """

    def __init__(self, iou_threshold: float = 0.2, max_gap_ms: int = 1500,
                 smoothing: float = 0.5) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        self.iou_threshold = iou_threshold
        self.max_gap_ms = max_gap_ms
        self.smoothing = smoothing
        self.tracks: dict[int, Track] = {}
        self._next_id = 0

    def reset(self) -> list[int]:
        """End every track (a cut, a reconnection); returns the ids that ended."""
        ended = sorted(self.tracks)
        self.tracks.clear()
        return ended

    def split(self, track_id: int, timestamp_ms: int) -> int:
        """End ``track_id`` and start a new track at its current box (the face it follows is
        someone else from ``timestamp_ms`` on); returns the new track's id."""
        old = self.tracks.pop(track_id)
        t = Track(self._next_id, old.box.copy(), timestamp_ms, timestamp_ms)
        self.tracks[t.track_id] = t
        self._next_id += 1
        return t.track_id

    def update(self, boxes: FloatArray, timestamp_ms: int) -> tuple[IntArray, list[int]]:
        """Associate a frame's boxes ((N, 4) pixels) taken at ``timestamp_ms``.

        Returns the track id of each box and the ids of tracks that ended (unseen for longer
        than ``max_gap_ms``) as of this frame.
        """
        ended = [tid for tid, t in self.tracks.items()
                 if timestamp_ms - t.last_ms > self.max_gap_ms]
        for tid in ended:
            del self.tracks[tid]
        ids = np.full(len(boxes), -1, np.int64)
        live = list(self.tracks.values())
        if live and len(boxes):
            pred = np.stack([t.predict(timestamp_ms, self.max_gap_ms) for t in live])
            iou = iou_matrix(pred, boxes)
            order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None), iou.shape))[0]
            used_t: set[int] = set()
            for ti, di in order:
                if iou[ti, di] < self.iou_threshold:
                    break
                if ti in used_t or ids[di] >= 0:
                    continue
                used_t.add(int(ti))
                ids[di] = self._observe(live[ti], boxes[di], timestamp_ms)
        for di in np.flatnonzero(ids < 0):
            t = Track(self._next_id, boxes[di].astype(np.float32).copy(), timestamp_ms,
                      timestamp_ms)
            self.tracks[t.track_id] = t
            ids[di] = t.track_id
            self._next_id += 1
        return ids, ended

    def _observe(self, t: Track, box: FloatArray, timestamp_ms: int) -> int:
        dt = timestamp_ms - t.last_ms
        if dt > 0:
            measured = (box - t.box) / float(dt)
            a = self.smoothing if t.hits > 1 else 1.0
            t.velocity = (a * measured + (1.0 - a) * t.velocity).astype(np.float32)
        t.box = box.astype(np.float32).copy()
        t.last_ms = timestamp_ms
        t.hits += 1
        return t.track_id


SPLIT_SIMILARITY = 85.0
"""A track is split where two of its consecutive embeddings are less similar than this (the
model's 0-100 similarity scale; cosine 0.409 for sface-2021dec). Measured on the test clip's
cut-bounded tracks (docs/video.md, "Cuts and tracks"): at 5 sampled frames/s, 3 of 60
consecutive same-track pairs fall below it (two of them real identity switches of the IoU
tracker in the audience shot) and none of 44 pairs of distinct faces of one frame reach it;
at every frame, 4 of 450 and 5 of 313."""


def view_scores(quality: Quality, scores: FloatArray,
                recognisability: FloatArray | None = None) -> FloatArray:
    """How good each face view is for recognition (>= 0, higher is better; no fixed scale):
    the weight of a view in its track's template, and which view is the track's thumbnail.

    Larger (inter-ocular px, saturating at 60), sharper (0-100), more frontal (cosine of yaw
    and of pitch), more confident (detector score 0-1) faces weigh more; ``recognisability``
    (0-1 per face, when a model gives one) multiplies the weight.
    """
    size = np.minimum(quality.size, 60.0) / 60.0
    sharp = 0.25 + quality.sharpness / 100.0
    yaw = np.cos(np.radians(np.clip(np.abs(quality.yaw), 0.0, 89.0)))
    pitch = np.cos(np.radians(np.clip(np.abs(quality.pitch), 0.0, 89.0)))
    w = size * sharp * yaw * pitch * scores
    if recognisability is not None:
        w = w * np.clip(recognisability, 0.0, 1.0)
    return np.maximum(w, 0.0).astype(np.float32)


class TrackTemplate:
    """The embeddings of one track: its last one (for the identity check) and its
    ``keep`` best views by weight (:func:`view_scores`), averaged into the template."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.last: FloatArray | None = None
        self._views: list[tuple[float, int, FloatArray]] = []
        self._seq = 0

    def agrees(self, vector: FloatArray, min_cosine: float) -> bool:
        """Whether ``vector`` (unit) may be the same face as the track's last embedding:
        cosine at least ``min_cosine`` (always True for a track not embedded yet)."""
        return self.last is None or float(self.last @ vector) >= min_cosine

    def add(self, vector: FloatArray, weight: float) -> None:
        self.last = vector
        self._views.append((float(weight), self._seq, vector))
        self._seq += 1
        self._views.sort(key=lambda v: (-v[0], v[1]))
        del self._views[self.keep:]

    def __len__(self) -> int:
        return len(self._views)

    def template(self) -> FloatArray:
        """The unit-length quality-weighted mean of the best views (equal weights when every
        weight is 0); raises ValueError when the track has no embedding."""
        if not self._views:
            raise ValueError("a track without embeddings has no template")
        w = np.array([v[0] for v in self._views], np.float64)
        if w.sum() <= 0:
            w = np.ones_like(w)
        m = (np.stack([v[2] for v in self._views]).astype(np.float64) * w[:, None]).sum(0)
        n = np.linalg.norm(m)
        if n == 0:
            return self._views[0][2].astype(np.float32)
        return (m / n).astype(np.float32)
