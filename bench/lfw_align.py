"""LFW verification accuracy of face detectors + landmarkers feeding dlib's ResNet embedder.

Each pipeline finds the face nearest the image centre, cuts a 150x150 chip and embeds it with
dlib's ``face_recognition_model_v1``. Pairs are scored by cosine similarity of the L2-normalised
descriptors (the ``face_recognition`` library's own pipeline: by Euclidean distance, as it
does). The decision threshold is the one with the best accuracy on the training pairs
(``pairsDevTrain.txt``); accuracy is reported on the test pairs (``pairsDevTest.txt``), with
the ROC AUC over all pairs (train and test) as a less noisy second figure.

When a pipeline finds no face, it retries with a lower detection threshold; if it still finds
none, the pair is scored as a mismatch. Both counts are reported.

Usage::

    python bench/lfw_align.py [--pipelines a,b,...] [--workers 2] [--cache DIR]
        [--lfw ../shared/testdata/lfw-dev] [--train pairsDevTrain.txt] [--test pairsDevTest.txt]

Embeddings are cached per pipeline in ``--cache`` (default: a temporary folder per run).
Pipelines (``blazeface`` alone is the detector's default ``model="auto"``):

- ``face_recognition``: the library's own: HOG (upsampled once) + dlib 5-point + dlib chip.
- ``hog+68``: HOG + dlib 68-point -> the 5 canonical points -> ``align_faces``.
- ``hog+5pt``: HOG + dlib 5-point + ``dlib.get_face_chip`` (the library's, by cosine).
- ``blazeface+onet``, ``blazeface-short+onet``, ``blazeface-full+onet``: BlazeFaceDetector
  with O-Net landmarks -> ``align_faces``; ``blazeface+onet-flip``: O-Net also on the
  mirrored crop, landmarks averaged.
- ``blazeface+kp``: BlazeFace keypoints (mouth corners estimated) -> ``align_faces``.
- ``blazeface+68``: BlazeFace box -> dlib 68-point -> ``align_faces``.
- ``blazeface+5pt``: BlazeFace box -> dlib 5-point -> ``dlib.get_face_chip``.
- ``mtcnn``: MTCNNDetector (P-, R-, O-Net) -> ``align_faces``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LFW = ROOT.parent / "shared" / "testdata" / "lfw-dev"
ALL = ["face_recognition", "hog+68", "hog+5pt", "blazeface+onet", "blazeface+onet-flip",
       "blazeface-short+onet",
       "blazeface-full+onet", "blazeface+kp", "blazeface+68", "blazeface+5pt", "mtcnn"]

Pair = tuple[str, str, bool]


def read_pairs(path: Path) -> list[Pair]:
    """LFW pairs: ``name i j`` (same person) or ``name1 i name2 j``; header lines skipped."""
    pairs: list[Pair] = []
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) == 3:
            pairs.append((_img(f[0], f[1]), _img(f[0], f[2]), True))
        elif len(f) == 4:
            pairs.append((_img(f[0], f[1]), _img(f[2], f[3]), False))
    return pairs


def _img(name: str, num: str) -> str:
    return f"{name}/{name}_{int(num):04d}.jpg"


# --- pipelines ----------------------------------------------------------------------------------

class Pipeline:
    """image -> embedding (or None if no face even at a low threshold)."""

    def __init__(self, name: str) -> None:
        import dlib
        import face_recognition_models as frm

        self.name = name
        self.fallbacks = 0
        self._dlib = dlib
        self._rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self._hog = dlib.get_frontal_face_detector()
        self._sp68 = dlib.shape_predictor(frm.pose_predictor_model_location())
        self._sp5 = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        from facesearch.vision import detect as d
        from facesearch.vision import mtcnn

        self._d = d
        if name.startswith("blazeface"):
            model = ("full" if name.startswith("blazeface-full") else
                     "short" if name.startswith("blazeface-short") else "auto")
            lm = "blazeface" if name.endswith("+kp") else "onet"
            flip = name.endswith("-flip")
            self._bf = d.BlazeFaceDetector(model=model, landmarks=lm, flip_landmarks=flip,
                                           threads=1)
            self._bf_low = d.BlazeFaceDetector(model=model, landmarks=lm, flip_landmarks=flip,
                                               threads=1, score_threshold=0.05)
        if name == "mtcnn":
            self._mt = mtcnn.MTCNNDetector(threads=1)
            self._mt_low = mtcnn.MTCNNDetector(threads=1, thresholds=(0.3, 0.4, 0.4))

    def embed(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32] | None:
        n = self.name
        if n == "face_recognition":
            return self._face_recognition(image)
        if n.startswith("hog+"):
            rect = self._hog_rect(image)
            if rect is None:
                return None
            return self._from_rect(image, rect, n.split("+")[1])
        if n in ("blazeface+68", "blazeface+5pt"):
            faces = self._detect(image, self._bf, self._bf_low)
            if faces is None:
                return None
            return self._from_rect(image, self._bf_to_rect(faces.boxes[0]), n.split("+")[1])
        det, low = (self._mt, self._mt_low) if n == "mtcnn" else (self._bf, self._bf_low)
        faces = self._detect(image, det, low)
        if faces is None:
            return None
        return self._embed_landmarks(image, faces.landmarks[0])

    # helpers
    def _detect(self, image: npt.NDArray[np.uint8], det: object, low: object) -> object | None:
        faces = det.detect(image)  # type: ignore[attr-defined]
        if not len(faces):
            self.fallbacks += 1
            faces = low.detect(image)  # type: ignore[attr-defined]
            if not len(faces):
                return None
        return faces[np.array([_centre_index(faces.boxes, image.shape)])]

    def _hog_rect(self, image: npt.NDArray[np.uint8]) -> object | None:
        rects = list(self._hog(image, 1))
        if not rects:
            self.fallbacks += 1
            found, _, _ = self._hog.run(image, 1, -1.0)
            rects = list(found)
            if not rects:
                return None
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects],
                         np.float32)
        return rects[_centre_index(boxes, image.shape)]

    def _bf_to_rect(self, box: npt.NDArray[np.float32]) -> object:
        """A dlib rectangle framing the face as the HOG detector would (fitted on LFW)."""
        side = float(max(box[2] - box[0], box[3] - box[1]))
        cx = float(box[0] + box[2]) / 2 - 0.045 * side
        cy = float(box[1] + box[3]) / 2 - 0.059 * side
        half = side / 2
        return self._dlib.rectangle(round(cx - half), round(cy - half),
                                    round(cx + half) - 1, round(cy + half) - 1)

    def _from_rect(self, image: npt.NDArray[np.uint8], rect: object, kind: str
                   ) -> npt.NDArray[np.float32]:
        if kind == "68":
            p = np.array([[q.x, q.y] for q in self._sp68(image, rect).parts()], np.float32)
            lm = np.array([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]], np.float32)
            return self._embed_landmarks(image, lm)
        shape = self._sp5(image, rect)
        chip = self._dlib.get_face_chip(image, shape, size=150, padding=0.25)
        return _unit(np.array(self._rec.compute_face_descriptor(chip), np.float32))

    def _embed_landmarks(self, image: npt.NDArray[np.uint8], lm: npt.NDArray[np.float32]
                         ) -> npt.NDArray[np.float32]:
        from facesearch.vision.align import align_faces

        chip = align_faces(image, lm[None].astype(np.float32), 150, 0.25)[0]
        return _unit(np.array(self._rec.compute_face_descriptor(chip), np.float32))

    def _face_recognition(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32] | None:
        import face_recognition

        locs = face_recognition.face_locations(image)
        if not locs:
            self.fallbacks += 1
            found, _, _ = self._hog.run(image, 1, -1.0)
            locs = [(r.top(), r.right(), r.bottom(), r.left()) for r in found]
            if not locs:
                return None
        boxes = np.array([[lf, t, r, b] for t, r, b, lf in locs], np.float32)
        loc = locs[_centre_index(boxes, image.shape)]
        return np.array(face_recognition.face_encodings(image, [loc])[0], np.float32)


def _centre_index(boxes: npt.NDArray[np.float32], shape: Sequence[int]) -> int:
    c = (boxes[:, :2] + boxes[:, 2:4]) / 2
    centre = np.array([shape[1] / 2, shape[0] / 2], np.float32)
    return int(np.argmin(((c - centre) ** 2).sum(1)))


def _unit(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


_WORKER: Pipeline | None = None


def _init(name: str) -> None:
    global _WORKER
    cv2.setNumThreads(1)
    _WORKER = Pipeline(name)


def _run(path: str) -> tuple[str, npt.NDArray[np.float32] | None, int]:
    assert _WORKER is not None
    before = _WORKER.fallbacks
    img = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return path, _WORKER.embed(img), _WORKER.fallbacks - before


def embeddings(name: str, images: list[str], root: Path, cache: Path, workers: int
               ) -> tuple[dict[str, npt.NDArray[np.float32] | None], int, float]:
    """Embeddings of ``images`` (relative paths) by pipeline ``name``; fallbacks; seconds."""
    file = cache / f"{name}.npz"
    if file.is_file():
        z = np.load(file, allow_pickle=False)
        vecs = {k: (v if v.size else None) for k, v in zip(z["names"], z["vectors_or_empty"])}
        if set(images) <= set(vecs):
            return vecs, int(z["fallbacks"]), float(z["seconds"])
    t = time.perf_counter()
    out: dict[str, npt.NDArray[np.float32] | None] = {}
    fallbacks = 0
    paths = [str(root / "images" / i) for i in images]
    with multiprocessing.get_context("spawn").Pool(workers, _init, (name,)) as pool:
        for k, (_, v, fb) in enumerate(pool.imap(_run, paths, chunksize=16)):
            out[images[k]] = v
            fallbacks += fb
    secs = time.perf_counter() - t
    arr = np.array([v if v is not None else np.full(128, np.nan, np.float32)
                    for v in out.values()], np.float32)
    np.savez(file, names=np.array(list(out)), vectors_or_empty=arr, fallbacks=fallbacks,
             seconds=secs)
    return out, fallbacks, secs


def scores(pairs: list[Pair], vecs: dict[str, npt.NDArray[np.float32] | None],
           metric: Callable[[npt.NDArray[np.float32], npt.NDArray[np.float32]], float]
           ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], int]:
    """Similarity per pair (higher = more alike; -inf when a face is missing), labels, misses."""
    s, y, missing = [], [], 0
    for a, b, same in pairs:
        va, vb = vecs.get(a), vecs.get(b)
        if va is None or vb is None or np.isnan(va).any() or np.isnan(vb).any():
            missing += 1
            s.append(-np.inf)
        else:
            s.append(metric(va, vb))
        y.append(same)
    return np.array(s), np.array(y), missing


def best_threshold(s: npt.NDArray[np.float64], y: npt.NDArray[np.bool_]) -> float:
    """Threshold (same if score >= t) with the best accuracy; midpoint between scores."""
    finite = np.unique(s[np.isfinite(s)])
    cands = np.concatenate([[finite[0] - 1], (finite[1:] + finite[:-1]) / 2, [finite[-1] + 1]])
    accs = [((s >= t) == y).mean() for t in cands]
    return float(cands[int(np.argmax(accs))])


def auc(s: npt.NDArray[np.float64], y: npt.NDArray[np.bool_]) -> float:
    """Area under the ROC curve: the chance a same-person pair scores above a different one."""
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    pos = int(y.sum())
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * (len(s) - pos)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pipelines", default=",".join(ALL))
    ap.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    ap.add_argument("--train", default="pairsDevTrain.txt")
    ap.add_argument("--test", default="pairsDevTest.txt")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args(argv)
    train = read_pairs(args.lfw / args.train)
    test = read_pairs(args.lfw / args.test)
    images = sorted({p for a, b, _ in train + test for p in (a, b)})
    cache = args.cache or Path(tempfile.mkdtemp(prefix="lfw_align_"))
    cache.mkdir(parents=True, exist_ok=True)
    print(f"{len(train)} train pairs, {len(test)} test pairs, {len(images)} images; "
          f"cache {cache}", flush=True)
    print(f"{'pipeline':22s} {'test acc':>8s} {'train acc':>9s} {'threshold':>9s} "
          f"{'AUC all':>7s} {'retried':>7s} {'no face':>7s} {'ms/img':>7s}", flush=True)
    for name in args.pipelines.split(","):
        if name not in ALL:
            print(f"unknown pipeline {name}", file=sys.stderr)
            return 2
        vecs, fallbacks, secs = embeddings(name, images, args.lfw, cache, args.workers)
        if name == "face_recognition":
            def metric(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
                return -float(np.linalg.norm(a - b))
        else:
            def metric(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
                return float(a @ b)
        s_tr, y_tr, _ = scores(train, vecs, metric)
        s_te, y_te, _ = scores(test, vecs, metric)
        t = best_threshold(s_tr, y_tr)
        no_face = sum(v is None or bool(np.isnan(v).any()) for v in vecs.values())
        thr = -t if name == "face_recognition" else t
        ms = 1000 * secs * args.workers / len(images)
        area = auc(np.concatenate([s_tr, s_te]), np.concatenate([y_tr, y_te]))
        print(f"{name:22s} {((s_te >= t) == y_te).mean():8.3%} {((s_tr >= t) == y_tr).mean():9.3%}"
              f" {thr:9.4f} {area:7.4f} {fallbacks:7d} {no_face:7d} {ms:7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
