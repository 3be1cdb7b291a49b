"""BlazeFace + O-Net and MTCNN detectors on ONNX Runtime, and their converters."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import pytest

from facesearch.errors import InvalidParameterError, ModelError
from facesearch.types import Detector, Faces
from facesearch.vision.boxes import crop_square
from facesearch.vision.convert import blazeface, mtcnn
from facesearch.vision.convert.tflite import read_tflite
from facesearch.vision.detect import BlazeFaceDetector, plan_regions
from facesearch.vision.mtcnn import MTCNNDetector

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = REPO_ROOT.parent / "shared" / "testdata"
FACES = TESTDATA / "faces"
LFW_IMAGES = TESTDATA / "lfw-dev" / "images"


def load(name: str) -> npt.NDArray[np.uint8]:
    path = FACES / name
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        pytest.fail(f"test data missing: {path} (expected <repo root>/../shared/testdata)",
                    pytrace=False)
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def iou(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    return BlazeFaceDetector(threads=1)


@pytest.fixture(scope="module")
def dlib_reference() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """dlib's HOG box (x1, y1, x2, y2) and 68-point-derived 5 landmarks on obama.jpg."""
    import dlib
    import face_recognition_models as frm

    img = load("obama.jpg")
    rects = dlib.get_frontal_face_detector()(img, 1)
    assert len(rects) == 1
    r = rects[0]
    sp = dlib.shape_predictor(frm.pose_predictor_model_location())
    p = np.array([[q.x, q.y] for q in sp(img, r).parts()], np.float64)
    lm = np.array([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
    return np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float64), lm


def check_faces(faces: Faces) -> None:
    n = len(faces)
    assert faces.boxes.shape == (n, 4) and faces.boxes.dtype == np.float32
    assert faces.landmarks.shape == (n, 5, 2) and faces.landmarks.dtype == np.float32
    assert faces.scores.dtype == np.float32
    assert np.all((faces.scores >= 0) & (faces.scores <= 1))
    assert np.all(np.diff(faces.areas) <= 0), "largest face first"


# --- converters ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["short", "full"])
def test_blazeface_conversion_is_deterministic_and_valid(variant: str) -> None:
    data = blazeface.tflite_path(variant).read_bytes()  # type: ignore[arg-type]
    a = blazeface.build_onnx(variant, data)  # type: ignore[arg-type]
    b = blazeface.build_onnx(variant, data)  # type: ignore[arg-type]
    assert a == b
    model = onnx.load_from_string(a)
    onnx.checker.check_model(model)
    n = len(blazeface.anchors(variant))  # type: ignore[arg-type]
    dims = [[d.dim_value for d in o.type.tensor_type.shape.dim][1:] for o in model.graph.output]
    assert dims == [[n, 16], [n, 1]]


@pytest.mark.parametrize("net", ["pnet", "rnet", "onet"])
def test_mtcnn_conversion_is_deterministic(net: str) -> None:
    data = mtcnn.weights_path(net).read_bytes()
    weights = mtcnn.read_state_dict(data)
    assert all(v.dtype == np.float32 for v in weights.values())
    assert mtcnn.build_onnx(net, weights) == mtcnn.build_onnx(net, mtcnn.read_state_dict(data))


def test_bad_model_files_raise_model_error() -> None:
    with pytest.raises(ModelError):
        read_tflite(b"not a flatbuffer at all")
    with pytest.raises(ModelError):
        read_tflite(b"\x10\x00\x00\x00TFL3" + b"\xff" * 8)
    with pytest.raises(ModelError):
        mtcnn.read_state_dict(b"garbage")
    good = mtcnn.weights_path("onet").read_bytes()
    with pytest.raises(ModelError):
        mtcnn.read_state_dict(good[: len(good) // 2])


def test_state_dict_reader_refuses_arbitrary_globals() -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.system, ("echo pwned",))

    payload = b"".join(pickle.dumps(x, protocol=2) for x in
                       (0x1950A86A20F9469CFC6C, 1001, {}, Evil(), []))
    with pytest.raises(ModelError, match="refusing"):
        mtcnn.read_state_dict(payload)


def test_mtcnn_onnx_rejects_missing_weights() -> None:
    weights = mtcnn.read_state_dict(mtcnn.weights_path("onet").read_bytes())
    del weights["dense5.weight"]
    with pytest.raises(ModelError):
        mtcnn.build_onnx("onet", weights)


# --- geometry helpers ----------------------------------------------------------------------


def test_crop_square_maps_back_to_the_image() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    img[40:60, 150:170] = 255  # a white square at x 150..170, y 40..60
    crop, (ox, oy, fx, fy) = crop_square(img, 120.3, 20.7, 64.0, 32)
    ys, xs = np.nonzero(crop[:, :, 0] > 127)
    x0, x1 = ox + xs.min() * fx, ox + (xs.max() + 1) * fx
    y0, y1 = oy + ys.min() * fy, oy + (ys.max() + 1) * fy
    assert abs(x0 - 150) <= 2 and abs(x1 - 170) <= 2
    assert abs(y0 - 40) <= 2 and abs(y1 - 60) <= 2
    # Outside the image: black, and the mapping still holds.
    crop, (ox, oy, fx, _) = crop_square(img, -50, -50, 100, 50)
    assert crop[:20, :20].max() == 0
    assert ox == -50 and fx == 2.0


def test_plan_regions_cover_the_whole_image_once_per_model() -> None:
    whole = plan_regions(640, 480, "auto")
    assert [r.variant for r in whole] == ["short", "full"]
    assert all(r.side == 640 and r.x0 == 0 and r.y0 == -80 for r in whole)
    assert [r.variant for r in plan_regions(1920, 1080, "short")] == ["short"]
    # auto: the full-range model only where the short-range one cannot reach the smallest
    # face asked for (24 px inter-ocular: a 61 px box): not on a 250 px portrait
    side = 24 * 2.53
    assert [r.variant for r in plan_regions(250, 250, "auto", side)] == ["short"]
    assert [r.variant for r in plan_regions(640, 480, "auto", side)] == ["short", "full"]
    assert [r.variant for r in plan_regions(250, 250, "auto", None)] == ["short", "full"]


@pytest.mark.parametrize(("size", "model", "min_face", "scale"), [
    ((250, 250), "auto", 24.0, None),      # lfw-sized: BlazeFace sees 8 px inter-ocular
    ((640, 480), "auto", 24.0, None),      # BlazeFace full-range reaches 53 px boxes, 21 px IOD
    ((1920, 1080), "auto", 24.0, 10 / 24),  # YuNet on 800x450
    ((1920, 1080), "short", 24.0, 10 / 24),
    ((1920, 1080), "auto", 12.0, 10 / 12),
    ((1920, 1080), "auto", 4.0, 1.5),       # never more than 1.5x the image
    ((1920, 1080), "auto", None, None),     # the pass turned off
    ((4000, 3000), "auto", 200.0, None),    # only large faces asked for
])
def test_small_face_pass_runs_where_blazeface_cannot_reach(
        size: tuple[int, int], model: str, min_face: float | None, scale: float | None) -> None:
    det = BlazeFaceDetector(model=model, min_face=min_face, threads=1)  # type: ignore[arg-type]
    got = det.small_face_scale(*size)
    assert got == pytest.approx(scale) if scale is not None else got is None


def test_invalid_settings_and_images(detector: BlazeFaceDetector) -> None:
    with pytest.raises(InvalidParameterError):
        BlazeFaceDetector(model="huge")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError):
        BlazeFaceDetector(min_face=2)
    with pytest.raises(InvalidParameterError):
        BlazeFaceDetector(score_threshold=1.5)
    with pytest.raises(InvalidParameterError):
        BlazeFaceDetector(landmarks="dlib")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError):
        detector.detect(np.zeros((10, 10), np.uint8))  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError):
        detector.detect(np.zeros((10, 10, 3), np.float32))  # type: ignore[arg-type]


# --- real photos ---------------------------------------------------------------------------


def test_obama_one_face_close_to_dlib(detector: BlazeFaceDetector,
                                      dlib_reference: tuple[np.ndarray, np.ndarray]) -> None:
    assert isinstance(detector, Detector)
    faces = detector.detect(load("obama.jpg"))
    check_faces(faces)
    assert len(faces) == 1
    hog_box, dlib_lm = dlib_reference
    assert iou(faces.boxes[0], hog_box) > 0.8
    assert faces.scores[0] > 0.8
    lm = faces.landmarks[0]
    iod = np.linalg.norm(dlib_lm[1] - dlib_lm[0])
    err = np.linalg.norm(lm - dlib_lm, axis=1) / iod
    assert err.max() < 0.15, err
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # image-left first
    assert lm[0, 1] < lm[2, 1] < lm[3, 1]  # eyes above nose above mouth


def test_blazeface_keypoint_landmarks(dlib_reference: tuple[np.ndarray, np.ndarray]) -> None:
    faces = BlazeFaceDetector(landmarks="blazeface", threads=1).detect(load("obama.jpg"))
    assert len(faces) == 1
    _, dlib_lm = dlib_reference
    iod = np.linalg.norm(dlib_lm[1] - dlib_lm[0])
    assert (np.linalg.norm(faces.landmarks[0] - dlib_lm, axis=1) / iod).max() < 0.3


def test_flipped_landmarks_agree(detector: BlazeFaceDetector,
                                 dlib_reference: tuple[np.ndarray, np.ndarray]) -> None:
    img = load("obama.jpg")
    plain = detector.detect(img)
    flip = BlazeFaceDetector(flip_landmarks=True, threads=1).detect(img)
    assert len(flip) == 1
    _, dlib_lm = dlib_reference
    iod = np.linalg.norm(dlib_lm[1] - dlib_lm[0])
    assert (np.linalg.norm(flip.landmarks[0] - plain.landmarks[0], axis=1) / iod).max() < 0.05
    # A mirrored photo gives mirrored landmarks (image-left first still).
    mirrored = detector.detect(np.ascontiguousarray(img[:, ::-1]))
    back = mirrored.landmarks[0][[1, 0, 2, 4, 3]].copy()
    back[:, 0] = img.shape[1] - 1 - back[:, 0]
    assert (np.linalg.norm(back - plain.landmarks[0], axis=1) / iod).max() < 0.05


def test_small_and_strided_images(detector: BlazeFaceDetector) -> None:
    assert len(detector.detect(np.zeros((5, 7, 3), np.uint8))) == 0
    img = load("two_people.jpg")
    view = img[:, 500:]  # a non-contiguous view: only Biden, on the right
    faces = detector.detect(view)
    assert len(faces) == 1 and faces.boxes[0, 0] > 200


def test_two_people(detector: BlazeFaceDetector) -> None:
    img = load("two_people.jpg")
    faces = detector.detect(img)
    check_faces(faces)
    assert len(faces) == 2
    assert iou(faces.boxes[0], faces.boxes[1]) == 0.0
    centres = sorted(float(b[0] + b[2]) / 2 for b in faces.boxes)
    assert centres[0] < img.shape[1] / 2 < centres[1]  # one person on each side
    for box, lm in zip(faces.boxes, faces.landmarks):
        assert np.all((lm[:, 0] > box[0]) & (lm[:, 0] < box[2]))
        assert np.all((lm[:, 1] > box[1]) & (lm[:, 1] < box[3]))


@pytest.mark.parametrize("name", ["obama-240p.jpg", "obama-480p.jpg", "obama-720p.jpg",
                                  "obama-1080p.jpg", "obama_small.jpg", "obama2.jpg",
                                  "biden.jpg", "alex-lacamoire.png", "lin-manuel-miranda.png"])
def test_one_face_at_every_resolution(detector: BlazeFaceDetector, name: str) -> None:
    img = load(name)
    faces = detector.detect(img)
    check_faces(faces)
    assert len(faces) == 1
    if name.startswith("obama-"):
        # The same photo: the box is at the same place relative to the frame.
        ref = np.array([862, 140, 1128, 406]) / 1920.0
        assert iou(faces.boxes[0] / img.shape[1], ref) > 0.85


def paste_face(canvas: npt.NDArray[np.uint8], side: int, at: tuple[int, int]
               ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float64]]:
    """``canvas`` with obama.jpg's face (and surroundings) pasted at ``at``, scaled so its box
    is ``side`` pixels wide; and the pasted face's expected box."""
    src = load("obama.jpg")
    box = np.array([348.0, 138.0, 627.0, 416.0])  # the detector's box on obama.jpg
    x0, y0 = 260, 60
    crop = src[y0:500, x0:720]
    scale = side / (box[2] - box[0])
    small = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out = canvas.copy()
    out[at[1]:at[1] + small.shape[0], at[0]:at[0] + small.shape[1]] = small
    expect = (box - [x0, y0, x0, y0]) * scale + [at[0], at[1], at[0], at[1]]
    return out, expect


@pytest.mark.parametrize("background", ["natural", "blank"])
@pytest.mark.parametrize("iod", [24, 30])
def test_small_face_in_1080p_by_default(background: str, iod: int) -> None:
    """Faces of 24 px inter-ocular and up in a 1080p still are found without any setting."""
    if background == "natural":
        canvas = load("obama-1080p.jpg")  # has Obama's own face near the top centre
    else:
        canvas = np.full((1080, 1920, 3), 128, np.uint8)
    img, expect = paste_face(canvas, round(iod * 2.53), (1500, 820))
    found = BlazeFaceDetector(threads=1).detect(img)
    check_faces(found)
    hits = [i for i, b in enumerate(found.boxes) if iou(b, expect) > 0.4]
    assert len(hits) == 1, (found.boxes, expect)
    assert len(found) == (2 if background == "natural" else 1)
    lm = found.landmarks[hits[0]]
    assert abs(np.linalg.norm(lm[1] - lm[0]) - iod) < 0.25 * iod
    # BlazeFace alone (the small-face pass off) does not see faces this small.
    alone = BlazeFaceDetector(min_face=None, threads=1).detect(img)
    assert not any(iou(b, expect) > 0.4 for b in alone.boxes)


@pytest.mark.parametrize("min_face", [None, 24])
def test_no_face_in_blank_images(min_face: float | None) -> None:
    det = BlazeFaceDetector(min_face=min_face, threads=1)
    for img in (np.zeros((1080, 1920, 3), np.uint8), np.full((480, 640, 3), 200, np.uint8)):
        faces = det.detect(img)
        check_faces(faces)
        assert len(faces) == 0


def test_mtcnn_agrees_with_blazeface_onet(detector: BlazeFaceDetector) -> None:
    img = load("obama-480p.jpg")
    mt = MTCNNDetector(min_face=40, threads=1)
    assert isinstance(mt, Detector)
    a, b = mt.detect(img), detector.detect(img)
    check_faces(a)
    assert len(a) == 1 and len(b) == 1
    iod = np.linalg.norm(b.landmarks[0, 1] - b.landmarks[0, 0])
    assert (np.linalg.norm(a.landmarks[0] - b.landmarks[0], axis=1) / iod).max() < 0.1


@pytest.mark.slow
def test_lfw_dev_detection_rate() -> None:
    """At least 99.9 % of the 4,992 lfw-dev images have a face (default settings)."""
    paths = sorted(LFW_IMAGES.glob("*/*.jpg"))
    if len(paths) < 4992:
        pytest.fail(f"test data missing: expected 4,992 images under {LFW_IMAGES}",
                    pytrace=False)
    det = BlazeFaceDetector(landmarks="blazeface", threads=1)  # landmarks don't affect finding
    missed = []
    for p in paths:
        img = cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        if len(det.detect(img)) == 0:
            missed.append(p.name)
    assert len(missed) <= 0.001 * len(paths), missed
