"""Alignment: the similarity transform and the chips it cuts."""

from __future__ import annotations

import numpy as np
import pytest

from facesearch.vision.align import align_face, align_faces, similarity_transform, template_points
from facesearch.vision.decode import load_image

from ..conftest import face


@pytest.mark.parametrize(("angle", "scale", "shift"), [
    (0.0, 1.0, (0.0, 0.0)), (30.0, 2.5, (10.0, -4.0)), (-170.0, 0.3, (100.0, 55.0)),
])
def test_similarity_transform_recovers_a_known_transform(angle: float, scale: float,
                                                         shift: tuple[float, float]) -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    a = np.radians(angle)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    dst = src @ rot.T + np.array(shift)
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], rot, atol=1e-9)
    assert np.allclose(m[:, 2], shift, atol=1e-7)


def test_landmarks_land_on_the_template() -> None:
    """An image whose landmarks are the template itself is cut with no change of geometry."""
    img = np.zeros((150, 150, 3), np.uint8)
    pts = template_points(150, 0.25)
    for x, y in pts:
        img[int(round(y)), int(round(x))] = 255
    chip = align_face(img, pts, 150, 0.25)
    assert np.array_equal(chip, img)


def test_chip_of_a_real_face_is_scale_invariant(pipeline) -> None:  # noqa: ANN001
    """The same face at 1080p and 240p gives nearly the same chip (pyramid anti-aliasing)."""
    big, small = load_image(face("obama-1080p.jpg")), load_image(face("obama-240p.jpg"))
    fb, fs_ = pipeline.detector.detect(big.pixels), pipeline.detector.detect(small.pixels)
    cb = align_faces(big.pixels, fb.landmarks[:1]).astype(float)
    cs = align_faces(small.pixels, fs_.landmarks[:1]).astype(float)
    assert cb.shape == cs.shape == (1, 150, 150, 3)
    assert np.abs(cb - cs).mean() < 20
    ab = align_faces(big.pixels, fb.landmarks[:1], 112, 0.0, "arcface").astype(float)
    as_ = align_faces(small.pixels, fs_.landmarks[:1], 112, 0.0, "arcface").astype(float)
    assert ab.shape == as_.shape == (1, 112, 112, 3)
    assert np.abs(ab - as_).mean() < 20


def test_arcface_template_is_the_standard_112px_one() -> None:
    """SFace's chips: the five ArcFace points land on their standard 112x112 pixels."""
    want = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]])
    assert np.allclose(template_points(112, 0.0, "arcface"), want, atol=1e-4)
    img = np.zeros((300, 300, 3), np.uint8)
    pts = want * 2.0 + 40.0  # the face twice as large, shifted
    for x, y in pts:
        img[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2] = 255
    chip = align_face(img, pts, 112, 0.0, "arcface")
    for x, y in want:
        assert chip[int(round(y)), int(round(x))].max() > 100
