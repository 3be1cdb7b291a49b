"""Small faces in stills, by default: a group photo made of lfw-dev people on a 1080p canvas,
a collage of passport-size photos, and the head pose of faces a few pixels wide."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from facesearch.vision import similarity as sim
from facesearch.vision.decode import load_image
from facesearch.vision.pipeline import Pipeline
from facesearch.vision.quality import head_pose

from ..conftest import LFW

IMAGES = LFW / "images"


def read(path: Path) -> npt.NDArray[np.uint8]:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        pytest.fail(f"test data missing: {path}", pytrace=False)
    return np.ascontiguousarray(img[:, :, ::-1])


def people_with_two_images(n: int, seed: int) -> list[tuple[Path, Path]]:
    folders = sorted(p for p in IMAGES.iterdir() if len(list(p.glob("*.jpg"))) >= 2)
    if len(folders) < n:
        pytest.fail(f"lfw-dev has {len(folders)} people with two images", pytrace=False)
    pick = np.random.default_rng(seed).choice(len(folders), n, replace=False)
    return [tuple(sorted(folders[i].glob("*.jpg"))[:2]) for i in sorted(pick)]  # type: ignore[misc]


def centre_face(pipeline: Pipeline, img: npt.NDArray[np.uint8]) -> int:
    faces = pipeline.detector.detect(img)
    assert len(faces), "no face in an lfw-dev image"
    centre = np.array(img.shape[1::-1]) / 2
    return int(np.argmin(np.linalg.norm(faces.landmarks.mean(1) - centre, axis=1)))


@pytest.fixture(scope="module")
def group(pipeline: Pipeline) -> tuple[npt.NDArray[np.uint8], list[npt.NDArray[np.float32]],
                                       list[Path], list[Path]]:
    """A 1920x1080 'group photo': 24 lfw-dev people, the middle of each person's first image
    scaled so the inter-ocular distance is 24 to 40 px, on a blurred, darkened background. Returns the
    canvas, each pasted face's expected landmarks and the people's first and second images."""
    pairs = people_with_two_images(24, seed=7)
    rng = np.random.default_rng(7)
    bg = read(pairs[0][1])
    canvas = (cv2.resize(cv2.GaussianBlur(bg, (0, 0), 8), (1920, 1080)) * 0.5).astype(np.uint8)
    truth = []
    for k, (first, _) in enumerate(pairs):
        img = read(first)
        faces = pipeline.detector.detect(img)
        lm = faces.landmarks[centre_face(pipeline, img)]
        iod = 24 + 16 * rng.random()
        scale = iod / float(np.linalg.norm(lm[1] - lm[0]))
        side = round(170 * scale)  # the middle 170 px of the photo: the face and some context
        small = cv2.resize(img[40:210, 40:210], (side, side), interpolation=cv2.INTER_AREA)
        row, col = divmod(k, 6)
        x0 = 40 + col * 310 + int(rng.integers(0, 310 - side))
        y0 = 30 + row * 260 + int(rng.integers(0, 260 - side))
        canvas[y0:y0 + side, x0:x0 + side] = small
        truth.append(((lm - 40 + 0.5) * (side / 170) - 0.5 + [x0, y0]).astype(np.float32))
    return canvas, truth, [a for a, _ in pairs], [b for _, b in pairs]


def test_group_photo_small_faces_are_found(pipeline: Pipeline, group) -> None:  # noqa: ANN001
    canvas, truth, _, _ = group
    faces = pipeline.detector.detect(canvas)
    for want in truth:
        iod = float(np.linalg.norm(want[1] - want[0]))
        err = np.linalg.norm(faces.landmarks - want, axis=2).mean(1) / iod
        assert err.min() < 0.25, f"the face at {want.mean(0)} ({iod:.0f} px) was not found"
        box = faces.boxes[int(err.argmin())]
        assert box[0] < want[:, 0].min() and box[2] > want[:, 0].max()  # the right box
        assert box[1] < want[:, 1].min() and box[3] > want[:, 1].max()
    # BlazeFace alone (the detector before the YuNet pass) misses most of them.
    from facesearch.vision.detect import BlazeFaceDetector

    alone = BlazeFaceDetector(min_face=None, threads=1).detect(canvas)
    seen = sum(bool(len(alone)) and float((np.linalg.norm(alone.landmarks - w, axis=2).mean(1)
                                           / np.linalg.norm(w[1] - w[0])).min()) < 0.25
               for w in truth)
    assert seen <= 12


def test_group_photo_faces_match_their_other_photos(pipeline: Pipeline, group) -> None:  # noqa: ANN001
    """Each small face finds the same person's other lfw-dev photo first among the 24, and
    scores above the default threshold with it."""
    canvas, truth, _, seconds = group
    faces = pipeline.analyze(load_image(canvas))
    assert faces.embeddings is not None
    gallery = np.concatenate([pipeline.analyze(load_image(read(p))).embeddings[
        centre_face(pipeline, read(p))][None] for p in seconds])
    right = above = 0
    for k, want in enumerate(truth):
        i = int(np.linalg.norm(faces.landmarks - want, axis=2).mean(1).argmin())
        scores = gallery @ faces.embeddings[i]
        right += int(scores.argmax() == k)
        above += int(float(sim.to_similarity(scores[k], pipeline.model_version))
                     >= sim.DEFAULT_THRESHOLD)
    assert right >= 22, f"rank-1 {right} of 24"
    assert above >= 20, f"{above} of 24 at the default threshold"


def test_collage_of_100_passport_photos(pipeline: Pipeline) -> None:
    """A 10 x 10 collage of 130 px passport-style photos (lfw-dev, distinct people): every
    photo's face is found (before the YuNet pass: 2)."""
    folders = sorted(IMAGES.iterdir())[::30][:100]
    canvas = np.zeros((1300, 1300, 3), np.uint8)
    for k, folder in enumerate(folders):
        img = cv2.resize(read(sorted(folder.glob("*.jpg"))[0]), (130, 130),
                         interpolation=cv2.INTER_AREA)
        r, c = divmod(k, 10)
        canvas[r * 130:(r + 1) * 130, c * 130:(c + 1) * 130] = img
    faces = pipeline.detector.detect(canvas)
    centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
    cells = {(int(y // 130), int(x // 130)) for x, y in centres
             if abs(x % 130 - 65) < 25 and abs(y % 130 - 65) < 25}
    assert len(cells) == 100


@pytest.mark.parametrize("spread", [40.0, 8.0, 2.0, 0.5])
def test_head_pose_of_tiny_faces(spread: float) -> None:
    """Landmarks a few pixels apart (faces far away) give the same pose as the same face
    large, instead of OpenCV's SQPnP assertion (a 500 before)."""
    from facesearch.vision.align import TEMPLATE

    big = (TEMPLATE - TEMPLATE.mean(0)) * 100
    ref = head_pose((big + [900, 500])[None].astype(np.float32), 1920, 1080)[0]
    lm = (big * spread / 100 + [900, 500])[None].astype(np.float32)
    got = head_pose(lm, 1920, 1080)[0]
    assert np.all(np.isfinite(got))
    assert np.abs(got - ref).max() < 1.0


def test_a_probes_largest_face_skips_the_small_face_pass(pipeline: Pipeline, group) -> None:  # noqa: ANN001
    """When only the largest face matters (a 1:N probe) and BlazeFace found one larger than
    anything the YuNet pass could add, the pass is skipped; otherwise it still runs."""
    canvas, truth, _, _ = group
    det = pipeline.detector
    everything = det.detect(canvas)
    largest = det.detect(canvas, need=1)
    assert np.allclose(largest.boxes[0], everything.boxes[0])
    assert len(largest) < len(everything)  # the small faces were not looked for
    small_only = canvas.copy()
    small_only[:] = 80  # a canvas with one small face only: the pass must run
    w = truth[0]
    x0, y0 = (w.min(0) - 40).astype(int)
    x1, y1 = (w.max(0) + 40).astype(int)
    small_only[y0:y1, x0:x1] = canvas[y0:y1, x0:x1]
    assert len(det.detect(small_only, need=1)) == 1
