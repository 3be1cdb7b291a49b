"""Pure 5-point face alignment: image + landmarks to the embedder's square face chip.

Two templates (:data:`TEMPLATES`): ``arcface``, the standard 112x112 ArcFace 5-point template
(SFace's, used unpadded), and ``dlib``: dlib's mean face shape (the one
``dlib.get_face_chip_details`` uses): eye centres (means of points 36-41 and 42-47), nose tip
(30) and mouth corners (48, 54), in the unit square, padded by ``padding`` on each side and
scaled to ``size`` pixels. A least-squares similarity transform (rotation, uniform scale,
translation) maps the landmarks onto it. When the chip is more than 2x smaller than the face,
the image is first reduced with a Gaussian pyramid (as dlib does) so the chip is not aliased.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from facesearch.types import FloatArray, RGBImage

_MEAN_FACE_X = np.array([
    0.121737, 0.187122, 0.265825, 0.334606, 0.260918, 0.182743,  # 36-41: image-left eye
    0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335,   # 42-47: image-right eye
])
_MEAN_FACE_Y = np.array([
    0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077,
    0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
])

#: Canonical 5-point template in the unit square (before padding), LANDMARK_NAMES order.
TEMPLATE: FloatArray = np.array(
    [
        [_MEAN_FACE_X[:6].mean(), _MEAN_FACE_Y[:6].mean()],
        [_MEAN_FACE_X[6:].mean(), _MEAN_FACE_Y[6:].mean()],
        [0.490127, 0.515625],
        [0.254149, 0.780233],
        [0.726104, 0.780233],
    ],
    dtype=np.float32,
)


#: The standard ArcFace / InsightFace 112x112 5-point template (the one SFace was trained on),
#: in the unit square (pixels / 112), LANDMARK_NAMES order; used with ``padding=0``.
ARCFACE_TEMPLATE: FloatArray = (np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
) / 112.0).astype(np.float32)

TEMPLATES: dict[str, FloatArray] = {"dlib": TEMPLATE, "arcface": ARCFACE_TEMPLATE}
"""Templates by name (an embedder's ``chip_template``)."""


def template_points(size: int, padding: float, template: str = "dlib") -> FloatArray:
    """The template landmarks in chip pixel coordinates (``template``: a :data:`TEMPLATES`
    name)."""
    t = TEMPLATES[template]
    return ((t + padding) / (1.0 + 2.0 * padding) * size).astype(np.float32)


def similarity_transform(src: npt.ArrayLike, dst: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Least-squares 2x3 similarity transform mapping ``src`` points onto ``dst`` (Umeyama)."""
    s = np.asarray(src, np.float64)
    d = np.asarray(dst, np.float64)
    ms, md = s.mean(0), d.mean(0)
    sc, dc = s - ms, d - md
    var = (sc**2).sum() / len(s)
    cov = dc.T @ sc / len(s)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    rot = u @ e @ vt
    scale = (sig * np.diag(e)).sum() / var if var > 0 else 1.0
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = md - m[:, :2] @ ms
    return m


def align_face(image: RGBImage, landmarks: npt.ArrayLike, size: int = 150,
               padding: float = 0.25, template: str = "dlib") -> RGBImage:
    """One ``(size, size, 3)`` uint8 chip for a face's five landmarks ((5, 2) pixels)."""
    pts = np.asarray(landmarks, np.float64)
    m = similarity_transform(pts, template_points(size, padding, template))
    scale = float(np.hypot(m[0, 0], m[0, 1]))  # chip pixels per image pixel
    src = image
    if scale < 0.5:
        # Crop the chip's footprint (with a margin) and reduce it by halves, as dlib does.
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64)
        foot = corners @ inv.T
        margin = 4.0 / scale
        x0 = int(max(0, np.floor(foot[:, 0].min() - margin)))
        y0 = int(max(0, np.floor(foot[:, 1].min() - margin)))
        x1 = int(min(image.shape[1], np.ceil(foot[:, 0].max() + margin)))
        y1 = int(min(image.shape[0], np.ceil(foot[:, 1].max() + margin)))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            src = image[y0:y1, x0:x1]
            m = m.copy()
            m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)
            while scale < 0.5 and min(src.shape[:2]) >= 4:
                src = cv2.pyrDown(src)
                m[:, :2] *= 2.0
                scale *= 2.0
    chip = cv2.warpAffine(
        np.ascontiguousarray(src), m, (size, size), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
    )
    return chip


def align_faces(image: RGBImage, landmarks: FloatArray, size: int = 150,
                padding: float = 0.25, template: str = "dlib") -> npt.NDArray[np.uint8]:
    """Chips for every face: ``(N, 5, 2)`` landmarks to ``(N, size, size, 3)`` uint8."""
    out = np.empty((len(landmarks), size, size, 3), np.uint8)
    for i, pts in enumerate(landmarks):
        out[i] = align_face(image, pts, size, padding, template)
    return out
