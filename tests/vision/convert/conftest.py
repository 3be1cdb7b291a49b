"""Fixtures for the converter tests: the lfw-dev test set and dlib-made face chips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from facesearch.vision.convert.dlib_resnet import build_resnet_onnx, dlib_resnet_dat_path

REPO_ROOT = Path(__file__).resolve().parents[3]
LFW_DEV = REPO_ROOT.parent / "shared" / "testdata" / "lfw-dev"
"""The lfw-dev test set, kept outside the repository (never copied into it)."""


@pytest.fixture(scope="session")
def lfw_dev_images() -> list[Path]:
    """Every lfw-dev JPEG, sorted by path. Fails (never skips) when the data is missing."""
    folder = LFW_DEV / "images"
    images = sorted(folder.glob("**/*.jpg"))
    if not images:
        pytest.fail(f"test data missing: no JPEG files under {folder}; the lfw-dev set must "
                    "be at <repo root>/../shared/testdata/lfw-dev/images", pytrace=False)
    return images


@pytest.fixture(scope="session")
def resnet_onnx_bytes() -> bytes:
    """The converted model, built once per test session."""
    return build_resnet_onnx(dlib_resnet_dat_path())


DLIB_CHIP_COUNT = 1000


@pytest.fixture(scope="session")
def lfw_dlib_chips(lfw_dev_images: list[Path]) -> npt.NDArray[np.uint8]:
    """At least 1,000 lfw-dev face chips cut by dlib: HOG detector, 5-point shape predictor,
    ``get_face_chip(size=150, padding=0.25)``, from images spread evenly over the set."""
    count = DLIB_CHIP_COUNT
    images = lfw_dev_images
    try:
        import dlib
    except ImportError:
        pytest.fail("dlib (the dlib-bin package) is needed to make reference chips",
                    pytrace=False)
    import face_recognition_models

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(
        face_recognition_models.pose_predictor_five_point_model_location())
    step = max(1, len(images) // (count + count // 4))
    chips: list[npt.NDArray[np.uint8]] = []
    for path in images[::step]:
        img = dlib.load_rgb_image(str(path))
        for rect in detector(img, 0):
            chips.append(dlib.get_face_chip(img, predictor(img, rect), size=150, padding=0.25))
        if len(chips) >= count:
            break
    if len(chips) < count:
        pytest.fail(f"only {len(chips)} faces found in lfw-dev, need {count}", pytrace=False)
    return np.stack(chips)
