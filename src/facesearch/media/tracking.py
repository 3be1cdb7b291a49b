"""Face tracking across video frames: IoU association with a constant-velocity prediction.

A small, deterministic tracker that works on any frame spacing (sampled stored video, live
streams that drop frames): each track predicts its box at the new frame's time from its
velocity (pixels per millisecond), detections are associated greedily by IoU with the
predictions (highest first, at least ``iou_threshold``), unmatched detections start new tracks,
and a track unseen for longer than ``max_gap_ms`` ends. Track ids count up from 0 in order of
first appearance, so they double as Rekognition's per-video person ``Index``.

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


def view_scores(quality: Quality, scores: FloatArray) -> FloatArray:
    """How good each face view is for recognition (higher is better; no fixed scale).

    Larger (inter-ocular px, saturating at 60), sharper, more frontal, more confident faces
    score higher; used to pick which frames of a track to embed.
    """
    size = np.minimum(quality.size, 60.0) / 60.0
    sharp = 0.25 + quality.sharpness / 100.0
    yaw = np.cos(np.radians(np.clip(np.abs(quality.yaw), 0.0, 89.0)))
    pitch = np.cos(np.radians(np.clip(np.abs(quality.pitch), 0.0, 89.0)))
    return (size * sharp * yaw * pitch * scores).astype(np.float32)
