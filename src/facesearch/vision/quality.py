"""Per-face quality measures and the indexing quality filter.

Measures (see :class:`facesearch.types.Quality`): inter-ocular distance in pixels, sharpness and
brightness on a 0-100 scale from the aligned chip, and head pose in degrees from the five
landmarks (a perspective-n-point fit to a generic 3-D face).

The filter follows Rekognition's ``QualityFilter``: ``NONE`` keeps every face, ``LOW``,
``MEDIUM`` and ``HIGH`` apply progressively stricter bars (table :data:`BARS`), ``AUTO`` the
bar chosen from measured faces and junk (docs/accuracy.md). Faces below the bar are reported
with Rekognition's reasons (``SMALL_BOUNDING_BOX``, ``LOW_SHARPNESS``, ``LOW_BRIGHTNESS``,
``EXTREME_POSE``, ``LOW_CONFIDENCE`` (the detector's score or O-Net's face probability),
``LOW_FACE_QUALITY`` (recognisability)).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from facesearch.types import Faces, FloatArray, Quality, QualityFilter

# Generic face, millimetres; x to the image's right, y down, z away from the camera; nose tip at 0.
_FACE_3D = np.array(
    [
        [-31.5, -32.0, 26.0],  # eye_left
        [31.5, -32.0, 26.0],  # eye_right
        [0.0, 0.0, 0.0],  # nose tip
        [-24.0, 30.0, 20.0],  # mouth_left
        [24.0, 30.0, 20.0],  # mouth_right
    ],
    np.float64,
)


@dataclass(frozen=True)
class Bar:
    """Minimum quality to index: inter-ocular px, sharpness, brightness range, |yaw|, |pitch|,
    detector score, O-Net face probability (faceness, 0-1) and recognisability (0-100). An
    unknown faceness or recognisability (NaN) is not checked."""

    min_size: float
    min_sharpness: float
    min_brightness: float
    max_brightness: float
    max_yaw: float
    max_pitch: float
    min_score: float
    min_faceness: float = 0.0
    min_recognisability: float = 0.0


BARS: dict[QualityFilter, Bar] = {
    QualityFilter.LOW: Bar(8.0, 4.0, 5.0, 99.0, 75.0, 60.0, 0.3, 0.5, 10.0),
    QualityFilter.MEDIUM: Bar(16.0, 12.0, 10.0, 97.0, 55.0, 45.0, 0.5, 0.8, 30.0),
    QualityFilter.HIGH: Bar(30.0, 25.0, 20.0, 92.0, 35.0, 30.0, 0.7, 0.95, 50.0),
    QualityFilter.AUTO: Bar(10.0, 8.0, 5.0, 99.0, 60.0, 40.0, 0.5, 0.9, 20.0),
}
"""The bars. ``AUTO`` was chosen from the distributions of real faces and mined junk
(``bench/quality_junk.py``; figures in docs/accuracy.md, "Quality: faces versus junk")."""


def head_pose(landmarks: FloatArray, image_width: int, image_height: int) -> FloatArray:
    """Yaw, pitch, roll in degrees for each face ((N, 5, 2) landmarks to (N, 3)).

    Yaw > 0: the face turns towards the image's right; pitch > 0: chin up; roll > 0: the face
    tilts clockwise in the image. A pinhole camera with focal length = the image's larger side.
    """
    out = np.zeros((len(landmarks), 3), np.float32)
    f = float(max(image_width, image_height))
    cam = np.array([[f, 0, image_width / 2], [0, f, image_height / 2], [0, 0, 1]], np.float64)
    for i, pts in enumerate(landmarks):
        p = np.asarray(pts, np.float64)
        if not np.isfinite(p).all():
            continue
        eye = p[1] - p[0]
        roll = np.degrees(np.arctan2(eye[1], eye[0]))
        rvec = _solve_pose(p, cam)
        if rvec is None:
            out[i] = (0.0, 0.0, roll)
            continue
        r, _ = cv2.Rodrigues(rvec)
        # Face axes in camera frame: columns of r. Forward axis (towards the camera) = -z_face.
        fwd = -r[:, 2]
        yaw = np.degrees(np.arctan2(-fwd[0], -fwd[2]))
        pitch = np.degrees(np.arctan2(fwd[1], np.hypot(fwd[0], fwd[2])))
        out[i] = (yaw, pitch, roll)
    return out


_SMALL_SPREAD = 20.0
"""Landmark spread (RMS distance from their mean, pixels) below which the pose is solved on
the landmarks magnified about their mean (see :func:`_solve_pose`)."""


def _solve_pose(p: npt.NDArray[np.float64], cam: npt.NDArray[np.float64]
                ) -> npt.NDArray[np.float64] | None:
    """The face's rotation vector from five landmarks, or None where no pose fits.

    OpenCV's SQPnP refuses points that lie within a few pixels of each other (small faces:
    an inter-ocular distance of a few pixels). Such a face is far from the camera, where
    perspective is negligible, so its landmarks are magnified about their mean to a spread of
    :data:`_SMALL_SPREAD` px before solving: the rotation of a distant face is unchanged by it.
    """
    centre = p.mean(0)
    spread = float(np.sqrt(((p - centre) ** 2).sum(1).mean()))
    if not spread > 0:
        return None
    if spread < _SMALL_SPREAD:
        p = centre + (p - centre) * (_SMALL_SPREAD / spread)
    try:
        ok, rvec, _ = cv2.solvePnP(_FACE_3D, p, cam, None, flags=cv2.SOLVEPNP_SQPNP)
    except cv2.error:
        return None
    return rvec if ok else None


def measure(faces: Faces, chips: npt.NDArray[np.uint8], image_width: int,
            image_height: int) -> Quality:
    """Quality of each face from its landmarks and its aligned chip ((N, S, S, 3) uint8)."""
    n = len(faces)
    size = np.linalg.norm(faces.landmarks[:, 1] - faces.landmarks[:, 0], axis=1).astype(np.float32)
    sharp = np.zeros(n, np.float32)
    bright = np.zeros(n, np.float32)
    for i, chip in enumerate(chips):
        s = chip.shape[0]
        centre = chip[s // 5: s - s // 5, s // 5: s - s // 5]
        gray = cv2.cvtColor(centre, cv2.COLOR_RGB2GRAY)
        var = float(cv2.Laplacian(gray, cv2.CV_64F).var())
        sharp[i] = 100.0 * var / (var + 100.0)
        bright[i] = float(gray.mean()) / 255.0 * 100.0
    pose = head_pose(faces.landmarks, image_width, image_height)
    faceness = faces.extra.get("faceness")
    return Quality(size=size, sharpness=sharp, brightness=bright,
                   yaw=pose[:, 0].copy(), pitch=pose[:, 1].copy(), roll=pose[:, 2].copy(),
                   faceness=None if faceness is None else faceness.astype(np.float32))


def reasons(faces: Faces, quality_filter: QualityFilter) -> list[list[str]]:
    """For each face, the reasons it fails ``quality_filter`` (empty: it passes)."""
    q = faces.quality
    if q is None:
        raise ValueError("faces have no quality measures; run measure() first")
    out: list[list[str]] = [[] for _ in range(len(faces))]
    if quality_filter == QualityFilter.NONE:
        return out
    bar = BARS[quality_filter]
    for i in range(len(faces)):
        r = out[i]
        if q.size[i] < bar.min_size:
            r.append("SMALL_BOUNDING_BOX")
        if q.sharpness[i] < bar.min_sharpness:
            r.append("LOW_SHARPNESS")
        if not bar.min_brightness <= q.brightness[i] <= bar.max_brightness:
            r.append("LOW_BRIGHTNESS")
        if abs(q.yaw[i]) > bar.max_yaw or abs(q.pitch[i]) > bar.max_pitch:
            r.append("EXTREME_POSE")
        if faces.scores[i] < bar.min_score or q.faceness[i] < bar.min_faceness:
            r.append("LOW_CONFIDENCE")
        if q.recognisability[i] < bar.min_recognisability:
            r.append("LOW_FACE_QUALITY")
    return out
