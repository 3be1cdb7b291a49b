"""Box geometry and square crops shared by the detectors (:mod:`facesearch.vision.detect`,
:mod:`facesearch.vision.mtcnn`): boxes are ``(x1, y1, x2, y2)`` in image pixels."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from facesearch.errors import InvalidParameterError
from facesearch.types import FloatArray, RGBImage


def as_rgb(image: RGBImage) -> RGBImage:
    """``image`` as a contiguous (H, W, 3) uint8 array; InvalidParameterError otherwise."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidParameterError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} "
                                    f"{image.dtype}")
    return np.ascontiguousarray(image)

def crop_square(image: RGBImage, x0: float, y0: float, side: float, size: int
                ) -> tuple[RGBImage, tuple[float, float, float, float]]:
    """The square ``[x0, x0 + side) x [y0, y0 + side)`` (rounded to whole pixels), resized to
    ``size`` x ``size``; parts outside the image are black. Shrinking averages areas,
    enlarging is bilinear.

    Also returns ``(ox, oy, fx, fy)``: output position ``(u, v)`` (pixel edges) lies at image
    position ``(ox + u * fx, oy + v * fy)``.
    """
    h, w = image.shape[:2]
    out = np.zeros((size, size, 3), np.uint8)
    n = max(1, round(side))
    bx, by = round(x0), round(y0)
    scale = size / n
    ix0, iy0, ix1, iy1 = max(0, bx), max(0, by), min(w, bx + n), min(h, by + n)
    dx0, dy0 = round((ix0 - bx) * scale), round((iy0 - by) * scale)
    dx1, dy1 = round((ix1 - bx) * scale), round((iy1 - by) * scale)
    if ix1 <= ix0 or iy1 <= iy0 or dx1 <= dx0 or dy1 <= dy0:
        return out, (float(bx), float(by), 1.0 / scale, 1.0 / scale)
    part = image[iy0:iy1, ix0:ix1]
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    out[dy0:dy1, dx0:dx1] = cv2.resize(part, (dx1 - dx0, dy1 - dy0), interpolation=interp)
    fx = (ix1 - ix0) / (dx1 - dx0)
    fy = (iy1 - iy0) / (dy1 - dy0)
    return out, (ix0 - dx0 * fx, iy0 - dy0 * fy, fx, fy)

def box_iou(box: FloatArray, boxes: FloatArray) -> FloatArray:
    """Intersection over union of ``box`` with each of ``boxes`` ((N,) float32)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return (inter / np.maximum(area + areas - inter, 1e-9)).astype(np.float32)

def weighted_nms(boxes: FloatArray, scores: FloatArray, points: FloatArray,
                 iou: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """MediaPipe's weighted non-maximum suppression.

    Each cluster of boxes overlapping the best remaining one by more than ``iou`` is replaced
    by the score-weighted mean of its boxes and points, with the best score.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores, points = boxes[order], scores[order], points[order]
    keep_b, keep_s, keep_p = [], [], []
    alive = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        idx = np.flatnonzero(alive)
        member = idx[box_iou(boxes[i], boxes[idx]) > iou]
        member = np.union1d(member, [i])
        wts = scores[member][:, None]
        keep_b.append((boxes[member] * wts).sum(0) / wts.sum())
        keep_p.append((points[member].reshape(len(member), -1) * wts).sum(0) / wts.sum())
        keep_s.append(scores[i])
        alive[member] = False
    if not keep_b:
        return (np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                np.zeros((0, *points.shape[1:]), np.float32))
    return (np.array(keep_b, np.float32), np.array(keep_s, np.float32),
            np.array(keep_p, np.float32).reshape(len(keep_b), *points.shape[1:]))

def plain_nms(boxes: FloatArray, scores: FloatArray, iou: float,
              mode: Literal["union", "min"] = "union") -> npt.NDArray[np.int64]:
    """Indices kept by greedy NMS, best first (``mode="min"``: overlap over the smaller area)."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while len(order):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        x1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        if mode == "min":
            ov = inter / np.maximum(np.minimum(areas[i], areas[rest]), 1e-9)
        else:
            ov = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[ov <= iou]
    return np.array(keep, np.int64)
