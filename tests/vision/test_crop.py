"""Review crops: one framing for every face (the box and half of it around, square, at most
160 px), grey where the square leaves the image, points mapped into the crop."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage

from facesearch.vision.crop import CROP_MAX_PX, crop_face, crop_square, to_crop


def test_a_big_face_is_scaled_down_to_160_px() -> None:
    pixels = np.zeros((1000, 1000, 3), np.uint8)
    pixels[300:700, 300:700] = (200, 30, 30)  # the "face"
    crop = crop_face(pixels, (300.0, 300.0, 700.0, 700.0))
    assert crop_square((300, 300, 700, 700)) == (200.0, 200.0, 600.0)
    assert (crop.x0, crop.y0, crop.side, crop.size) == (200.0, 200.0, 600.0, CROP_MAX_PX)
    img = np.asarray(PILImage.open(io.BytesIO(crop.jpeg)).convert("RGB"))
    assert img.shape == (160, 160, 3)
    # The face fills the middle two thirds; the margin is the image around it.
    assert img[80, 80, 0] > 150 and img[5, 5].max() < 40
    assert to_crop([[300, 300], [700, 700]], crop) == [[26.7, 26.7], [133.3, 133.3]]


def test_a_small_face_is_not_enlarged_and_a_cut_one_is_padded_grey() -> None:
    pixels = np.full((100, 100, 3), 250, np.uint8)
    small = crop_face(pixels, (40.0, 40.0, 60.0, 60.0))
    assert small.size == small.side == 30
    cut = crop_face(pixels, (-20.0, 10.0, 20.0, 50.0))  # half out of the image on the left
    img = np.asarray(PILImage.open(io.BytesIO(cut.jpeg)).convert("RGB"))
    assert img.shape == (60, 60, 3)
    assert abs(int(img[30, 5, 0]) - 128) < 12  # grey outside the image
    assert img[30, 55, 0] > 235  # the image inside
