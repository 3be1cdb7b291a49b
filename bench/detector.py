"""Face detector speed and lfw-dev detection rate: BlazeFace (+ O-Net) with and without the
YuNet small-face pass, MTCNN and dlib HOG.

Prints the median milliseconds per 640x480 and 1920x1080 frame (real photos: obama-480p.jpg
cropped to 640x480, obama-1080p.jpg) with 1 and 2 threads (ONNX Runtime intra-op threads and
OpenCV's; dlib's HOG is single-threaded either way), then the share of the 4,992 lfw-dev
images in which each detector finds a face. Timings include everything ``detect`` does
(resizing, both stages, landmarks); dlib's include its 68-point shape predictor, which the
dlib pipeline needs for the five landmarks.

Usage::

    python bench/detector.py [--repeat 30] [--lfw-limit 0] [--skip-lfw] [--mtcnn-lfw]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = ROOT.parent / "shared" / "testdata"

Image = npt.NDArray[np.uint8]


def load(path: Path) -> Image:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"missing test data: {path}")
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def frames() -> dict[str, Image]:
    small = load(TESTDATA / "faces" / "obama-480p.jpg")
    x0 = (small.shape[1] - 640) // 2
    return {"640x480": np.ascontiguousarray(small[:, x0:x0 + 640]),
            "1920x1080": load(TESTDATA / "faces" / "obama-1080p.jpg")}


class DlibHog:
    """dlib's HOG detector + 68-point predictor (the current pipeline's detector)."""

    def __init__(self, upsample: int) -> None:
        import dlib
        import face_recognition_models as frm

        self.name = f"dlib-hog(up={upsample})+68pt"
        self._det = dlib.get_frontal_face_detector()
        self._sp = dlib.shape_predictor(frm.pose_predictor_model_location())
        self._up = upsample

    def count(self, image: Image) -> int:
        rects = self._det(image, self._up)
        for r in rects:
            self._sp(image, r)
        return len(rects)


def make_detectors(threads: int) -> dict[str, Callable[[Image], int]]:
    from facesearch.vision.detect import BlazeFaceDetector
    from facesearch.vision.mtcnn import MTCNNDetector

    dets: dict[str, Callable[[Image], int]] = {}
    for label, kw in [
        ("default (auto+onet, min_face 24)", {}),
        ("blazeface auto+onet, no small pass", {"min_face": None}),
        ("blazeface short+onet, no small pass", {"model": "short", "min_face": None}),
        ("short+onet, min_face 24", {"model": "short"}),
        ("blazeface full+onet, no small pass", {"model": "full", "min_face": None}),
        ("auto+keypoints, no small pass", {"landmarks": "blazeface", "min_face": None}),
        ("auto+onet, min_face 40", {"min_face": 40}),
        ("auto+onet, min_face 12", {"min_face": 12}),
    ]:
        d = BlazeFaceDetector(threads=threads, **kw)  # type: ignore[arg-type]
        dets[label] = lambda img, d=d: len(d.detect(img))
    mt = MTCNNDetector(threads=threads)
    dets["mtcnn (min_face=20)"] = lambda img: len(mt.detect(img))
    for up in (0, 1):
        h = DlibHog(up)
        dets[h.name] = h.count
    return dets


def time_ms(fn: Callable[[Image], int], img: Image, repeat: int) -> tuple[float, int]:
    n = fn(img)  # warm-up (and model conversion on first use)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(img)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), n


def lfw_rate(fn: Callable[[Image], int], paths: list[Path]) -> tuple[int, float]:
    found = 0
    t = time.perf_counter()
    for p in paths:
        found += fn(load(p)) > 0
    return found, (time.perf_counter() - t) * 1000 / max(1, len(paths))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--lfw-limit", type=int, default=0, help="images (0: all 4,992)")
    ap.add_argument("--skip-lfw", action="store_true")
    ap.add_argument("--mtcnn-lfw", action="store_true", help="also rate MTCNN on lfw-dev (slow)")
    args = ap.parse_args(argv)
    imgs = frames()
    print(f"{'detector':36s} {'threads':>7s} " + " ".join(f"{k + ' ms':>14s}" for k in imgs)
          + "  faces", flush=True)
    for threads in (1, 2):
        cv2.setNumThreads(threads)
        for label, fn in make_detectors(threads).items():
            if label.startswith("dlib") and threads == 2:
                continue  # single-threaded: same as threads=1
            cols, counts = [], []
            for img in imgs.values():
                ms, n = time_ms(fn, img, args.repeat)
                cols.append(f"{ms:14.1f}")
                counts.append(str(n))
            print(f"{label:36s} {threads:7d} " + " ".join(cols) + "  " + "/".join(counts),
                  flush=True)
    if args.skip_lfw:
        return 0
    cv2.setNumThreads(1)
    paths = sorted((TESTDATA / "lfw-dev" / "images").glob("*/*.jpg"))
    if args.lfw_limit:
        paths = paths[:: max(1, len(paths) // args.lfw_limit)][: args.lfw_limit]
    print(f"\nlfw-dev detection rate over {len(paths)} images (threads=1):", flush=True)
    dets = make_detectors(1)
    for label in ["default (auto+onet, min_face 24)", "blazeface short+onet, no small pass",
                  "blazeface full+onet, no small pass",
                  "dlib-hog(up=0)+68pt", "dlib-hog(up=1)+68pt"] + (
                      ["mtcnn (min_face=20)"] if args.mtcnn_lfw else []):
        found, ms = lfw_rate(dets[label], paths)
        print(f"{label:36s} {found}/{len(paths)} = {found / len(paths):.3%}  ({ms:.1f} ms/img)",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
