"""Quality measures on real faces and the quality filter's decisions."""

from __future__ import annotations

import cv2
import numpy as np

from facesearch.types import Image, QualityFilter
from facesearch.vision.decode import load_image
from facesearch.vision.quality import reasons

from ..conftest import face


def detect(pipeline, pixels: np.ndarray):  # noqa: ANN001, ANN201
    return pipeline.detect(Image(np.ascontiguousarray(pixels), "x", "RAW"))


def test_frontal_face_measures(pipeline) -> None:  # noqa: ANN001
    faces = pipeline.detect(load_image(face("obama.jpg")))
    q = faces.quality
    assert q is not None and len(q) == 1
    assert 60 < q.size[0] < 200  # inter-ocular distance of a ~270 px face
    assert q.sharpness[0] > 30
    assert 20 < q.brightness[0] < 90
    assert abs(q.yaw[0]) < 20 and abs(q.pitch[0]) < 25 and abs(q.roll[0]) < 10


def test_mirror_flips_yaw_and_roll(pipeline) -> None:  # noqa: ANN001
    px = load_image(face("obama2.jpg")).pixels
    a = detect(pipeline, px).quality
    b = detect(pipeline, px[:, ::-1]).quality
    assert a is not None and b is not None
    assert abs(a.yaw[0]) > 10  # obama2 is turned
    assert np.sign(a.yaw[0]) == -np.sign(b.yaw[0])
    assert abs(a.yaw[0] + b.yaw[0]) < 8
    assert abs(a.roll[0] + b.roll[0]) < 3


def test_rotation_shows_as_roll(pipeline) -> None:  # noqa: ANN001
    px = load_image(face("obama.jpg")).pixels
    h, w = px.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), -15, 1.0)  # 15 degrees clockwise
    rot = cv2.warpAffine(px, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    a, b = detect(pipeline, px).quality, detect(pipeline, rot).quality
    assert a is not None and b is not None
    assert 10 < b.roll[0] - a.roll[0] < 20


def test_blur_and_darkness_lower_the_measures(pipeline) -> None:  # noqa: ANN001
    px = load_image(face("obama.jpg")).pixels
    sharp = detect(pipeline, px).quality
    blurred = detect(pipeline, cv2.GaussianBlur(px, (0, 0), 4)).quality
    dark = detect(pipeline, (px * 0.35).astype(np.uint8)).quality
    assert sharp is not None and blurred is not None and dark is not None
    assert blurred.sharpness[0] < sharp.sharpness[0] / 2
    assert dark.brightness[0] < sharp.brightness[0] * 0.5


def test_filter_reasons(pipeline) -> None:  # noqa: ANN001
    """A small but clear face passes LOW and fails HIGH for its size alone."""
    px = load_image(face("obama.jpg")).pixels
    big = detect(pipeline, px)
    assert big.quality is not None
    scale = 22.0 / float(big.quality.size[0])  # inter-ocular distance becomes ~22 px
    small = cv2.resize(px, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((300, 300, 3), 255, np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small[:300, :300]
    faces = detect(pipeline, canvas)
    assert len(faces) == 1
    assert reasons(big, QualityFilter.HIGH) == [[]]
    assert reasons(faces, QualityFilter.HIGH) == [["SMALL_BOUNDING_BOX"]]
    assert reasons(faces, QualityFilter.LOW) == [[]]
    assert reasons(faces, QualityFilter.NONE) == [[]]
