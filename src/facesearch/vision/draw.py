"""Annotated copies of images: face boxes, landmarks and labels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image as PILImage

from facesearch.types import Faces, RGBImage


def draw_faces(pixels: RGBImage, faces: Faces, labels: list[str] | None = None) -> RGBImage:
    """A copy of ``pixels`` with each face's box, landmarks and optional label drawn."""
    img = np.ascontiguousarray(pixels.copy())
    thick = max(1, round(max(img.shape[:2]) / 500))
    for i in range(len(faces)):
        x1, y1, x2, y2 = (int(round(v)) for v in faces.boxes[i])
        cv2.rectangle(img, (x1, y1), (x2, y2), (0, 220, 0), thick)
        for x, y in faces.landmarks[i]:
            cv2.circle(img, (int(round(x)), int(round(y))), thick + 1, (255, 40, 40), -1)
        text = labels[i] if labels else f"{i + 1}: {faces.scores[i]:.2f}"
        cv2.putText(img, text, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, (0, 220, 0), thick, cv2.LINE_AA)
    return img


def annotate_faces(pixels: RGBImage, faces: Faces, path: Path) -> None:
    """Write :func:`draw_faces`'s result to ``path`` (format from its suffix)."""
    PILImage.fromarray(draw_faces(pixels, faces)).save(path)
