"""Face crops for human review: a small JPEG of each face, the same framing for every face.

A crop is the square around the face box's centre whose side is the box's longer side plus
:data:`CROP_MARGIN` of it on each side (so 1.5 x the box), scaled to at most
:data:`CROP_MAX_PX` pixels a side (never enlarged) and saved as JPEG (quality
:data:`CROP_QUALITY`). Parts of the square outside the image are grey. Because every crop is
framed the same way, two crops shown at the same size show their faces at the same scale
(the web page crops the probe by the same rule). :func:`to_crop` maps points of the image
(landmarks, boxes) into a crop's pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

from facesearch.types import Faces, RGBImage

CROP_MARGIN = 0.25
"""Margin around the face box on each side, as a fraction of the box's longer side."""
CROP_MAX_PX = 160
"""Largest side of a crop, in pixels."""
CROP_QUALITY = 85
"""JPEG quality of a crop (1-95)."""
_FILL = (128, 128, 128)


@dataclass(frozen=True)
class FaceCrop:
    """A face's crop: ``jpeg`` bytes, ``size`` x ``size`` pixels, of the square of side
    ``side`` image pixels whose top-left corner is (``x0``, ``y0``) in the source image."""

    jpeg: bytes
    x0: float
    y0: float
    side: float
    size: int


def crop_square(box: tuple[float, float, float, float] | np.ndarray) -> tuple[float, float, float]:
    """``(x0, y0, side)``: the square (image pixels) a face box's crop shows."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + 2.0 * CROP_MARGIN)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    return cx - side / 2.0, cy - side / 2.0, side


def crop_face(pixels: RGBImage, box: tuple[float, float, float, float] | np.ndarray
              ) -> FaceCrop:
    """The crop of the face in ``box`` (x1, y1, x2, y2 pixels of ``pixels``)."""
    x0, y0, side = crop_square(box)
    h, w = pixels.shape[:2]
    l, t = int(np.floor(x0)), int(np.floor(y0))
    n = max(1, int(np.ceil(side)))
    region = PILImage.new("RGB", (n, n), _FILL)
    sl, st, sr, sb = max(l, 0), max(t, 0), min(l + n, w), min(t + n, h)
    if sr > sl and sb > st:
        region.paste(PILImage.fromarray(np.ascontiguousarray(pixels[st:sb, sl:sr])),
                     (sl - l, st - t))
    size = min(CROP_MAX_PX, n)
    if size != n:
        region = region.resize((size, size), PILImage.Resampling.LANCZOS)
    buf = io.BytesIO()
    region.save(buf, "JPEG", quality=CROP_QUALITY)
    # The crop starts at the whole pixel (l, t) and spans n pixels.
    return FaceCrop(buf.getvalue(), float(l), float(t), float(n), size)


def face_crops(pixels: RGBImage, faces: Faces) -> list[FaceCrop]:
    """One crop per face, in the order of ``faces``."""
    return [crop_face(pixels, faces.boxes[i]) for i in range(len(faces))]


def to_crop(points: list[list[float]] | list[tuple[float, float]], crop: FaceCrop
            ) -> list[list[float]]:
    """Points ``[x, y]`` in image pixels as pixels of ``crop``."""
    k = crop.size / crop.side
    return [[round((x - crop.x0) * k, 1), round((y - crop.y0) * k, 1)] for x, y in points]
