"""MTCNN (Zhang et al. 2016) on ONNX Runtime: O-Net's five landmarks for any detector's
boxes (what :class:`facesearch.vision.detect.BlazeFaceDetector` places its landmarks with),
and the full three-stage cascade (:class:`MTCNNDetector`), kept for comparison. The networks
are converted once from packaged weights by :mod:`facesearch.vision.convert.mtcnn`."""

from __future__ import annotations

import math

import cv2
import numpy as np

from facesearch.errors import InvalidParameterError
from facesearch.types import Faces, FloatArray, RGBImage
from facesearch.vision import runtime
from facesearch.vision.boxes import as_rgb, crop_square, plain_nms
from facesearch.vision.convert.mtcnn import ensure_mtcnn

# BlazeFace box -> the square box MTCNN's O-Net expects: centre shift and side, as fractions of
# the BlazeFace box side (medians over 400 lfw-dev images of MTCNN's own R-Net boxes; x left
# at 0 so that mirrored faces get mirrored landmarks).
_ONET_BOX = (0.0, -0.126, 1.14)


def onet_boxes(boxes: FloatArray) -> FloatArray:
    """Square boxes framing faces as MTCNN's O-Net expects, from BlazeFace boxes."""
    dx, dy, k = _ONET_BOX
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 + dx * side
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + dy * side
    half = k * side / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], 1).astype(np.float32)

def onet_run(session: object, image: RGBImage, boxes: FloatArray, flip: bool = False
             ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """O-Net on square ``boxes``: landmarks (N, 5, 2), face probabilities (N,), box offsets
    (N, 4, fractions of the side). ``flip``: also run on the mirrored crops and average the
    landmarks (halves their jitter, one more O-Net run per face)."""
    crops = [crop_square(image, float(b[0]), float(b[1]), float(b[2] - b[0]), 48) for b in boxes]
    batch = np.stack([c for c, _ in crops])
    n = len(batch)
    if flip:
        batch = np.concatenate([batch, batch[:, :, ::-1]])
    reg, prob, pts = session.run(  # type: ignore[attr-defined]
        ["reg", "prob", "points"], {"image": batch})
    # Points are fractions of the crop's extent (its edges at 0 and 1): with this reading the
    # landmarks of a mirrored face are the mirror of the face's landmarks.
    xs, ys = pts[:n, :5], pts[:n, 5:]
    if flip:
        swap = [1, 0, 2, 4, 3]
        xs = (xs + 1.0 - pts[n:, :5][:, swap]) / 2
        ys = (ys + pts[n:, 5:][:, swap]) / 2
    m = np.array([t for _, t in crops], np.float32)  # ox, oy, fx, fy per crop
    lm = np.stack([m[:, :1] + xs * 48 * m[:, 2:3] - 0.5,
                   m[:, 1:2] + ys * 48 * m[:, 3:4] - 0.5], axis=2)
    return lm.astype(np.float32), prob[:n].astype(np.float32), reg[:n].astype(np.float32)

class MTCNNDetector:
    """The MTCNN cascade (P-, R-, O-Net; Zhang et al. 2016) on ONNX Runtime.

    ``min_face``: smallest face side in pixels (default 20); ``factor``: pyramid scale step
    (0.709); ``thresholds``: P/R/O-Net face probabilities to pass each stage.
    """

    def __init__(self, *, min_face: float = 20.0, factor: float = 0.709,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 threads: int | None = None, device: runtime.Device = "auto") -> None:
        if min_face < 12:
            raise InvalidParameterError(f"min_face must be >= 12 pixels, got {min_face}")
        self.name = "mtcnn"
        self.min_face = float(min_face)
        self.factor = float(factor)
        self.thresholds = thresholds
        self._nets = {n: runtime.create_session(ensure_mtcnn(n), threads=threads, device=device)
                      for n in ("pnet", "rnet", "onet")}

    def detect(self, image: RGBImage, need: int | None = None) -> Faces:
        image = as_rgb(image)
        boxes = self._stage1(image)
        if len(boxes):
            boxes = self._refine(image, boxes, "rnet", 24)
        if not len(boxes):
            return Faces.empty()
        sq = _square(boxes[:, :4])
        lm, prob, reg = onet_run(self._nets["onet"], image, sq)
        ok = prob >= self.thresholds[2]
        sq, lm, prob, reg = sq[ok], lm[ok], prob[ok], reg[ok]
        side = (sq[:, 2] - sq[:, 0])[:, None]
        out = sq + reg * side
        keep = plain_nms(out, prob, 0.7, "min")
        return Faces(boxes=out[keep].astype(np.float32), scores=prob[keep],
                     landmarks=lm[keep]).largest_first()

    def _stage1(self, image: RGBImage) -> FloatArray:
        h, w = image.shape[:2]
        scale = 12.0 / self.min_face
        found = []
        while min(h, w) * scale >= 12:
            sh, sw = math.ceil(h * scale), math.ceil(w * scale)
            small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
            reg, prob = self._nets["pnet"].run(["reg", "prob"], {"image": small[None]})
            ys, xs = np.nonzero(prob[0] >= self.thresholds[0])
            if len(ys):
                sc = prob[0, ys, xs]
                x1 = np.floor((2 * xs + 1) / scale)
                y1 = np.floor((2 * ys + 1) / scale)
                x2 = np.floor((2 * xs + 12) / scale)
                y2 = np.floor((2 * ys + 12) / scale)
                b = np.stack([x1, y1, x2, y2], 1).astype(np.float32)
                r = reg[0][:, ys, xs].T
                keep = plain_nms(b, sc, 0.5)
                found.append(np.concatenate([b[keep], sc[keep, None], r[keep]], 1))
            scale *= self.factor
        if not found:
            return np.zeros((0, 5), np.float32)
        cand = np.concatenate(found).astype(np.float32)
        cand = cand[plain_nms(cand[:, :4], cand[:, 4], 0.7)]
        size = (cand[:, 2:4] - cand[:, 0:2])
        moved = cand[:, :4] + cand[:, 5:9] * np.concatenate([size, size], 1)
        return np.concatenate([_square(moved), cand[:, 4:5]], 1)

    def _refine(self, image: RGBImage, boxes: FloatArray, net: str, size: int) -> FloatArray:
        sq = _square(boxes[:, :4])
        crops = np.stack([crop_square(image, float(b[0]), float(b[1]), float(b[2] - b[0]), size)[0]
                          for b in sq])
        reg, prob = self._nets[net].run(["reg", "prob"], {"image": crops})
        ok = prob >= self.thresholds[1]
        sq, prob, reg = sq[ok], prob[ok], reg[ok]
        keep = plain_nms(sq, prob, 0.7)
        sq, prob, reg = sq[keep], prob[keep], reg[keep]
        side = (sq[:, 2] - sq[:, 0])[:, None]
        return np.concatenate([_square(sq + reg * side), prob[:, None]], 1).astype(np.float32)

def _square(boxes: FloatArray) -> FloatArray:
    """Square boxes with the same centres and the longer side."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    cx = boxes[:, 0] + w / 2
    cy = boxes[:, 1] + h / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2],
                    1).astype(np.float32)
