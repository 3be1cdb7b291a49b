"""dlib's HOG face detector with its 68-point shape predictor (the models shipped in
``face-recognition-models``); the five landmarks are the eye centres (means of points 36-41,
42-47), the nose tip (30) and the mouth corners (48, 54), the points
:mod:`facesearch.vision.align`'s template is built from."""

from __future__ import annotations

import numpy as np

from facesearch.types import Faces, RGBImage
from facesearch.vision.modelcache import packaged_model_file

_EYE_LEFT = slice(36, 42)

_EYE_RIGHT = slice(42, 48)
_NOSE_TIP, _MOUTH_LEFT, _MOUTH_RIGHT = 30, 48, 54


def canonical_from_68(points: np.ndarray) -> np.ndarray:
    """The five canonical landmarks ((5, 2) float32) from dlib's 68 points ((68, 2))."""
    p = np.asarray(points, np.float32)
    return np.stack([
        p[_EYE_LEFT].mean(0), p[_EYE_RIGHT].mean(0), p[_NOSE_TIP], p[_MOUTH_LEFT], p[_MOUTH_RIGHT],
    ]).astype(np.float32)

class DlibHogDetector:
    """dlib's HOG + linear SVM frontal face detector and 68-point shape predictor.

    ``upsample``: times the image is doubled before detection (each finds faces about half as
    large; 1 finds faces down to about 40 px, 0 to about 80 px). ``min_score``: the SVM margin
    below which detections are dropped (0 is dlib's default). Scores are mapped to [0, 1] by a
    logistic of the margin (0.5 at margin 0).
    """

    name = "dlib-hog+sp68"

    def __init__(self, upsample: int = 1, min_score: float = 0.0) -> None:
        import dlib

        self.upsample = upsample
        self.min_score = min_score
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(
            packaged_model_file("shape_predictor_68_face_landmarks.dat"))
        self._dlib = dlib

    def detect(self, image: RGBImage, need: int | None = None) -> Faces:
        rects, margins, _ = self._detector.run(image, self.upsample, self.min_score)
        if not rects:
            return Faces.empty()
        boxes, scores, marks = [], [], []
        for rect, margin in zip(rects, margins, strict=True):
            shape = self._predictor(image, rect)
            pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float32)
            marks.append(canonical_from_68(pts))
            # dlib rectangles are inclusive; x2/y2 here are exclusive pixel edges.
            boxes.append([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1])
            scores.append(1.0 / (1.0 + np.exp(-4.0 * margin)))
        faces = Faces(
            boxes=np.asarray(boxes, np.float32),
            scores=np.asarray(scores, np.float32),
            landmarks=np.stack(marks).astype(np.float32),
        )
        return faces.largest_first()
