"""Detection on real photos: how many faces, where, in which order, with which landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from facesearch.types import Detector
from facesearch.vision.decode import load_image
from facesearch.vision.dlib_detect import DlibHogDetector

from ..conftest import face

# Hand-checked face boxes (x1, y1, x2, y2) in the test photos.
OBAMA_BOX = (349, 142, 618, 410)
TWO_PEOPLE = {"biden": (778, 57, 965, 243), "obama": (253, 47, 409, 203)}


def iou(a: np.ndarray | tuple[float, ...], b: np.ndarray | tuple[float, ...]) -> float:
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    w = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    h = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = w * h
    return inter / ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter)


@pytest.fixture(scope="module", params=["default", "dlib"])
def detector(request: pytest.FixtureRequest, pipeline) -> Detector:  # noqa: ANN001
    return pipeline.detector if request.param == "default" else DlibHogDetector()


def test_one_face_with_the_right_box_and_landmarks(detector: Detector) -> None:
    faces = detector.detect(load_image(face("obama.jpg")).pixels)
    assert len(faces) == 1
    assert iou(faces.boxes[0], OBAMA_BOX) > 0.5
    eye_l, eye_r, nose, mouth_l, mouth_r = faces.landmarks[0]
    assert eye_l[0] < eye_r[0] and mouth_l[0] < mouth_r[0]  # image-left first
    assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])  # eyes, nose, mouth
    x1, y1, x2, y2 = OBAMA_BOX
    assert np.all((faces.landmarks[0][:, 0] > x1) & (faces.landmarks[0][:, 0] < x2))
    assert np.all((faces.landmarks[0][:, 1] > y1) & (faces.landmarks[0][:, 1] < y2))
    assert 0.0 <= faces.scores[0] <= 1.0


def test_two_faces_largest_first(detector: Detector) -> None:
    faces = detector.detect(load_image(face("two_people.jpg")).pixels)
    assert len(faces) == 2
    assert faces.areas[0] >= faces.areas[1]
    assert iou(faces.boxes[0], TWO_PEOPLE["biden"]) > 0.5
    assert iou(faces.boxes[1], TWO_PEOPLE["obama"]) > 0.5


def test_no_face_in_a_blank_or_noise_image(detector: Detector) -> None:
    rng = np.random.default_rng(0)
    assert len(detector.detect(np.full((480, 640, 3), 128, np.uint8))) == 0
    assert len(detector.detect(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))) == 0


@pytest.mark.parametrize("name", ["obama-240p.jpg", "obama-480p.jpg", "obama-720p.jpg",
                                  "obama-1080p.jpg", "obama_small.jpg"])
def test_every_resolution_has_the_face(detector: Detector, name: str) -> None:
    img = load_image(face(name))
    faces = detector.detect(img.pixels)
    assert len(faces) == 1
    # Same relative position at every resolution (the 1080p frame is the reference).
    rel = faces.boxes[0] / np.array([img.width, img.height] * 2)
    ref = np.array([854, 142, 1123, 410]) / np.array([1920, 1080] * 2)
    if name != "obama_small.jpg":
        assert np.abs(rel - ref).max() < 0.03


@pytest.mark.parametrize("cut", [0.2, 0.4])
def test_face_cut_by_the_border_is_found_with_a_box_past_it(pipeline, cut: float) -> None:  # noqa: ANN001
    """A face with part of it outside the image keeps its whole box (x1 < 0)."""
    px = load_image(face("obama.jpg")).pixels
    x1, y1, x2, y2 = OBAMA_BOX
    left = int(x1 + cut * (x2 - x1))
    faces = pipeline.detector.detect(np.ascontiguousarray(px[:, left:]))
    assert len(faces) == 1
    shifted = (x1 - left, y1, x2 - left, y2)
    assert faces.boxes[0][0] < 0
    assert iou(faces.boxes[0], shifted) > 0.5
