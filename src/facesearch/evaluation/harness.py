"""Accuracy evaluation: LFW verification, open-set 1:N identification, calibration data.

Every protocol runs on per-image embeddings (:func:`embed_images`) of one face per image,
made by a facesearch pipeline (any name :func:`facesearch.vision.pipeline.load_pipeline` takes) or
by the ``face_recognition`` library (:data:`FACE_RECOGNITION`, the baseline: its own HOG
detector, 5-point chips and Euclidean distance). Which face: :class:`FaceRule`; for LFW's
250x250 crops the labelled person is the face nearest the image centre (``CENTRE``, the
default here); ``LARGEST`` is what the product searches with.

Scores are "higher means more alike" everywhere inside: similarity (0-100) for facesearch
pipelines, minus the Euclidean distance for face_recognition; results report thresholds in
the method's own unit (:class:`Metric`). Strictness: an image that cannot be read or has no
face is a failure; a pair with a failed image counts as a wrong decision in accuracy, and as
the lowest possible score in ROC / DET curves (a false non-match for a same-person pair, no
false match for a different-person pair: NIST's convention for failures to enrol).
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from facesearch.errors import FaceSearchError, InvalidParameterError
from facesearch.governance.calibration import Calibration, build_calibration, embedder_of
from facesearch.types import FloatArray, IntArray
from facesearch.vision import similarity as sim
from facesearch.vision.decode import load_image
from facesearch.vision.pipeline import pipeline_from

FACE_RECOGNITION = "face_recognition"
"""Baseline method name: the face_recognition library's pipeline and distance."""
FAR_TARGET = 1e-3
FPIR_TARGETS: tuple[float, ...] = (0.01, 0.001)
RANKS: tuple[int, ...] = (1, 5)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
Progress = Callable[[int, int], None]
"""``on_progress(done, total)`` callback."""


class FaceRule(str, enum.Enum):
    """Which face of an image is the labelled one."""

    CENTRE = "centre"
    """The face whose box centre is nearest the image centre (what LFW's crops mean)."""
    LARGEST = "largest"
    """The largest face (what ``search`` uses as the probe face)."""


class Status(enum.IntEnum):
    FOUND = 0
    NO_FACE = 1
    UNREADABLE = 2


# -- metrics --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """How a method scores two embeddings. ``name``: ``similarity`` (0-100, higher is more
    alike) or ``distance`` (Euclidean, lower is more alike).

    Internal scores rank the same way in both: cosines for ``similarity`` (the 0-100 scale is
    a monotone map of the cosine that saturates in float32, so ranks and thresholds are
    computed on cosines and shown as similarities), negated distances for ``distance``.
    """

    name: str
    model_version: str | None = None
    """The model whose similarity scale :meth:`native` and :meth:`internal` use."""

    @property
    def higher_is_same(self) -> bool:
        return self.name == "similarity"

    def scores(self, a: FloatArray, b: FloatArray) -> npt.NDArray[np.float64]:
        """Row-wise scores of ``a[i]`` and ``b[i]`` (higher is more alike)."""
        if self.higher_is_same:
            return np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))
        return -np.linalg.norm(a.astype(np.float64) - b.astype(np.float64), axis=1)

    def matrix(self, a: FloatArray, b: FloatArray) -> npt.NDArray[np.float64]:
        """All scores of rows of ``a`` against rows of ``b`` ((len(a), len(b)))."""
        if self.higher_is_same:
            return a.astype(np.float64) @ b.astype(np.float64).T
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        d2 = (a64**2).sum(1)[:, None] + (b64**2).sum(1)[None, :] - 2.0 * a64 @ b64.T
        return -np.sqrt(np.clip(d2, 0.0, None))

    def native(self, score: float) -> float:
        """A score in the metric's own unit (similarity 0-100, or distance)."""
        if self.higher_is_same:
            return float(sim.to_similarity(min(max(float(score), -1.0), 1.0),
                                            self.model_version))
        return -float(score)

    def internal(self, value: float) -> float:
        """The internal score of a threshold in the metric's own unit."""
        return (float(sim.to_cosine(value, self.model_version)) if self.higher_is_same
                else -float(value))

    def label(self, score: float) -> str:
        return f"{self.name} {self.native(score):.4g}"


SIMILARITY = Metric("similarity")
DISTANCE = Metric("distance")


def metric_for(method: str) -> Metric:
    return DISTANCE if method == FACE_RECOGNITION else SIMILARITY


# -- embeddings -----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Embeddings:
    """One embedding per image (columnar). ``vectors`` rows are zero where ``status`` is not
    FOUND; ``faces`` counts the faces detected in each image."""

    paths: tuple[str, ...]
    vectors: FloatArray
    status: npt.NDArray[np.int8]
    faces: IntArray
    method: str
    model_version: str
    rule: FaceRule

    def __post_init__(self) -> None:
        n = len(self.paths)
        if self.vectors.shape[0] != n or self.status.shape != (n,) or self.faces.shape != (n,):
            raise ValueError("Embeddings columns must all have one row per path")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def found(self) -> npt.NDArray[np.bool_]:
        return self.status == Status.FOUND

    @property
    def metric(self) -> Metric:
        m = metric_for(self.method)
        return Metric(m.name, self.model_version) if m.higher_is_same else m

    def index(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.paths)}

    def failures(self) -> list[str]:
        return [p for p, s in zip(self.paths, self.status, strict=True) if s != Status.FOUND]


class _Encoded(NamedTuple):
    status: int
    faces: int
    vector: FloatArray | None


def pick_face(boxes: npt.NDArray[np.floating], width: int, height: int, rule: FaceRule) -> int:
    """Index of the face ``rule`` picks among ``boxes`` ((N, 4) x1, y1, x2, y2; N >= 1)."""
    b = np.asarray(boxes, np.float64)
    if rule is FaceRule.LARGEST:
        areas = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
        return int(np.argmax(areas))
    cx, cy = (b[:, 0] + b[:, 2]) / 2.0, (b[:, 1] + b[:, 3]) / 2.0
    return int(np.argmin((cx - width / 2.0) ** 2 + (cy - height / 2.0) ** 2))


class _PipelineEncoder:
    def __init__(self, name: str, rule: FaceRule, threads: int | None, device: str) -> None:
        from facesearch.config import Settings

        # The other pipeline settings (detector model, precision, flip) come from the
        # environment, as for the service.
        self.pipeline = pipeline_from(Settings(pipeline=name, device=device), threads=threads)
        self.model_version = self.pipeline.model_version
        self.rule = rule

    def encode(self, data: bytes) -> _Encoded:
        try:
            image = load_image(data)
        except FaceSearchError:
            return _Encoded(Status.UNREADABLE, 0, None)
        faces = self.pipeline.analyze(image)
        if not len(faces) or faces.embeddings is None:
            return _Encoded(Status.NO_FACE, 0, None)
        i = pick_face(faces.boxes, image.width, image.height, self.rule)
        return _Encoded(Status.FOUND, len(faces), faces.embeddings[i].astype(np.float32))


class _FaceRecognitionEncoder:
    def __init__(self, rule: FaceRule) -> None:
        import face_recognition

        self.fr = face_recognition
        self.model_version = (f"face_recognition-{face_recognition.__version__}"
                              "/hog+5pt/dlib-resnet-v1")
        self.rule = rule

    def encode(self, data: bytes) -> _Encoded:
        import io

        from PIL import UnidentifiedImageError

        try:
            pixels = self.fr.load_image_file(io.BytesIO(data))
        except (UnidentifiedImageError, OSError, ValueError):
            return _Encoded(Status.UNREADABLE, 0, None)
        locations = self.fr.face_locations(pixels)  # (top, right, bottom, left)
        if not locations:
            return _Encoded(Status.NO_FACE, 0, None)
        boxes = np.array([[left, top, right, bottom] for top, right, bottom, left in locations],
                         np.float64)
        i = pick_face(boxes, pixels.shape[1], pixels.shape[0], self.rule)
        enc = self.fr.face_encodings(pixels, known_face_locations=[locations[i]])
        return _Encoded(Status.FOUND, len(locations), np.asarray(enc[0], np.float32))


_Encoder = _PipelineEncoder | _FaceRecognitionEncoder


def _make_encoder(method: str, rule: FaceRule, threads: int | None, device: str) -> _Encoder:
    if method == FACE_RECOGNITION:
        return _FaceRecognitionEncoder(rule)
    return _PipelineEncoder(method, rule, threads, device)


_worker: _Encoder | None = None


def _init_worker(method: str, rule: FaceRule, device: str) -> None:
    global _worker
    from facesearch.vision.runtime import exit_with_parent

    exit_with_parent()
    _worker = _make_encoder(method, rule, 1, device)


def _encode_chunk(chunk: list[bytes]) -> list[_Encoded]:
    assert _worker is not None
    return [_worker.encode(d) for d in chunk]


class _Cache:
    """Per-method embedding cache: ``<dir>/<model_version>.<rule>.npz`` keyed by SHA-256."""

    def __init__(self, directory: Path | None, model_version: str, rule: FaceRule) -> None:
        from facesearch.governance.calibration import safe_name

        self.path = None if directory is None else (
            directory / f"{safe_name(model_version)}.{rule.value}.npz")
        self.entries: dict[str, _Encoded] = {}
        self.dirty = 0
        if self.path is not None and self.path.is_file():
            with np.load(self.path) as z:
                for key, st, nf, vec in zip(z["keys"], z["status"], z["faces"], z["vectors"],
                                            strict=True):
                    self.entries[str(key)] = _Encoded(
                        int(st), int(nf), vec.astype(np.float32) if st == Status.FOUND else None)

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.entries)
        dim = next((len(e.vector) for e in self.entries.values() if e.vector is not None), 0)
        vectors = np.zeros((len(keys), dim), np.float32)
        for i, k in enumerate(keys):
            v = self.entries[k].vector
            if v is not None:
                vectors[i] = v
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, keys=np.array(keys), vectors=vectors,
                 status=np.array([self.entries[k].status for k in keys], np.int8),
                 faces=np.array([self.entries[k].faces for k in keys], np.int64))
        tmp.replace(self.path)
        self.dirty = 0


def default_cache_dir() -> Path:
    """``$FACESEARCH_CACHE/eval`` (default ``~/.cache/facesearch/eval``)."""
    root = os.environ.get("FACESEARCH_CACHE") or str(Path.home() / ".cache" / "facesearch")
    return Path(root) / "eval"


def embed_images(paths: Sequence[str | Path], method: str, *, rule: FaceRule = FaceRule.CENTRE,
                 workers: int = 1, cache_dir: Path | None = None, device: str = "cpu",
                 on_progress: Progress | None = None, chunk: int = 8) -> Embeddings:
    """Embeddings of the ``rule`` face of each image, by ``method`` (a pipeline name or
    :data:`FACE_RECOGNITION`), with ``workers`` processes; results are cached by image
    content in ``cache_dir`` (None: no cache), so a rerun only embeds new images."""
    if workers < 1:
        raise InvalidParameterError(f"workers must be at least 1, got {workers}")
    local = _make_encoder(method, rule, 1, device)
    model_version = local.model_version
    cache = _Cache(cache_dir, model_version, rule)
    keys: list[str | None] = []
    todo: dict[str, bytes] = {}
    for p in paths:
        try:
            data = Path(p).read_bytes()
        except OSError:
            keys.append(None)
            continue
        key = hashlib.sha256(data).hexdigest()
        keys.append(key)
        if key not in cache.entries and key not in todo:
            todo[key] = data
    total, done = len(paths), len(paths) - len(todo)
    if on_progress is not None:
        on_progress(done, total)
    items = list(todo.items())
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]

    def record(part: list[tuple[str, bytes]], results: list[_Encoded]) -> None:
        nonlocal done
        for (key, _), r in zip(part, results, strict=True):
            cache.entries[key] = r
        cache.dirty += len(part)
        done += len(part)
        if cache.dirty >= 256:
            cache.save()
        if on_progress is not None:
            on_progress(done, total)

    try:
        if workers == 1 or len(chunks) <= 1:
            for part in chunks:
                record(part, [local.encode(d) for _, d in part])
        else:
            del local  # free the parent's models while the workers run
            with ProcessPoolExecutor(workers, initializer=_init_worker,
                                     initargs=(method, rule, device)) as pool:
                pending: dict[Future[list[_Encoded]], list[tuple[str, bytes]]] = {}
                it: Iterator[list[tuple[str, bytes]]] = iter(chunks)
                for part in it:
                    pending[pool.submit(_encode_chunk, [d for _, d in part])] = part
                    if len(pending) >= 2 * workers:
                        break
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        record(pending.pop(fut), fut.result())
                    for part in it:
                        pending[pool.submit(_encode_chunk, [d for _, d in part])] = part
                        if len(pending) >= 2 * workers:
                            break
    finally:
        cache.save()

    n = len(paths)
    dim = next((len(e.vector) for e in cache.entries.values() if e.vector is not None), 128)
    vectors = np.zeros((n, dim), np.float32)
    status = np.full(n, Status.UNREADABLE, np.int8)
    faces = np.zeros(n, np.int64)
    for i, k in enumerate(keys):
        if k is None:
            continue
        e = cache.entries[k]
        status[i], faces[i] = e.status, e.faces
        if e.vector is not None:
            vectors[i] = e.vector
    return Embeddings(paths=tuple(str(p) for p in paths), vectors=vectors, status=status,
                      faces=faces, method=method, model_version=model_version, rule=rule)


# -- image folders and pairs files ----------------------------------------------------------

def images_root(directory: Path) -> Path:
    """The folder holding one sub-folder per person: ``directory`` or ``directory/images``."""
    d = Path(directory)
    if not d.is_dir():
        raise InvalidParameterError(f"{d}: no such folder")
    sub = d / "images"
    return sub if sub.is_dir() else d


def lfw_image(name: str, number: int) -> str:
    """LFW's relative image path: ``Name/Name_NNNN.jpg``."""
    return f"{name}/{name}_{number:04d}.jpg"


def labelled_images(directory: Path) -> dict[str, list[str]]:
    """Person (folder name) to the sorted image paths in it, for a folder of person folders."""
    root = images_root(directory)
    people: dict[str, list[str]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(str(f) for f in d.iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            people[d.name] = files
    if not people:
        raise InvalidParameterError(f"{root}: no person folders with images")
    return people


@dataclass(frozen=True, eq=False)
class PairList:
    """Image pairs of an LFW-format pairs file (columnar). ``left``/``right``: image paths
    relative to the images folder; ``fold``: 0-based fold of each pair."""

    left: tuple[str, ...]
    right: tuple[str, ...]
    same: npt.NDArray[np.bool_]
    fold: IntArray
    folds: int
    source: str = ""

    def __len__(self) -> int:
        return len(self.left)


def read_pairs(path: Path) -> PairList:
    """Read an LFW pairs file: a header ``N`` (one set of N matched + N mismatched pairs) or
    ``F<TAB>N`` (F folds of N matched then N mismatched), then ``name n1 n2`` (same person)
    or ``name1 n1 name2 n2`` (different people) lines."""
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines:
        raise InvalidParameterError(f"{path}: empty pairs file")
    head = lines[0]
    try:
        folds, per = (1, int(head[0])) if len(head) == 1 else (int(head[0]), int(head[1]))
    except ValueError:
        raise InvalidParameterError(f"{path}: first line must be 'N' or 'FOLDS<TAB>N', got "
                                    f"{' '.join(head)!r}") from None
    body = lines[1:]
    if len(body) != folds * 2 * per:
        raise InvalidParameterError(f"{path}: header promises {folds * 2 * per} pairs, "
                                    f"found {len(body)}")
    left, right, same, fold = [], [], [], []
    for i, f in enumerate(body):
        try:
            if len(f) == 3:
                a, b, s = lfw_image(f[0], int(f[1])), lfw_image(f[0], int(f[2])), True
            elif len(f) == 4:
                a, b, s = lfw_image(f[0], int(f[1])), lfw_image(f[2], int(f[3])), False
            else:
                raise ValueError
        except ValueError:
            raise InvalidParameterError(f"{path}: line {i + 2} is not a pair: "
                                        f"{' '.join(f)!r}") from None
        left.append(a)
        right.append(b)
        same.append(s)
        fold.append(i // (2 * per))
    return PairList(tuple(left), tuple(right), np.array(same, bool), np.array(fold, np.int64),
                    folds, str(path))


def pair_images(pairs: Sequence[PairList], root: Path) -> list[str]:
    """The distinct image paths (under ``root``) that ``pairs`` name, sorted."""
    names = sorted({n for p in pairs for n in (*p.left, *p.right)})
    return [str(root / n) for n in names]


# -- verification ---------------------------------------------------------------------------

def best_threshold(scores: npt.ArrayLike, same: npt.ArrayLike) -> float:
    """The threshold with the highest accuracy of "same iff score >= threshold" (the lowest
    one among ties): a midpoint between consecutive distinct scores, or just past an end."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(same, bool)
    if len(s) == 0:
        raise InvalidParameterError("no scored pairs to choose a threshold on")
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    uniq, first = np.unique(s, return_index=True)
    # Threshold at uniq[k]: pairs before first[k] are "different", the rest "same".
    neg_below = np.concatenate([[0], np.cumsum(~y)])[first]
    pos_at_or_above = y.sum() - np.concatenate([[0], np.cumsum(y)])[first]
    correct = np.concatenate([neg_below + pos_at_or_above, [(~y).sum()]])
    k = int(np.argmax(correct))
    if k == len(uniq):
        return float(uniq[-1] + 1e-6)
    if k == 0:
        return float(uniq[0] - 1e-6)
    return float((uniq[k - 1] + uniq[k]) / 2.0)


@dataclass(frozen=True, eq=False)
class Curve:
    """A rate curve for plotting: ``x``, ``y`` arrays (fractions), one legend ``label``."""

    label: str
    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]


def roc_curve(genuine: npt.ArrayLike, impostor: npt.ArrayLike,
              label: str = "") -> Curve:
    """ROC: false accept rate (x) against true accept rate (y) over every threshold."""
    g = np.sort(np.asarray(genuine, np.float64))
    m = np.sort(np.asarray(impostor, np.float64))
    t = np.unique(np.concatenate([g, m]))
    t = t[np.isfinite(t)]
    far = (len(m) - np.searchsorted(m, t, side="left")) / max(len(m), 1)
    tar = (len(g) - np.searchsorted(g, t, side="left")) / max(len(g), 1)
    return Curve(label, far[::-1].astype(np.float64), tar[::-1].astype(np.float64))


def tar_at_far(genuine: npt.ArrayLike, impostor: npt.ArrayLike,
               far: float = FAR_TARGET) -> tuple[float, float] | None:
    """``(TAR, threshold score)`` at the lowest threshold whose FAR is ``<= far``, or None if
    there are fewer than ``1 / far`` impostor pairs (the rate cannot be measured)."""
    m = np.sort(np.asarray(impostor, np.float64))[::-1]
    if len(m) < math.ceil(1.0 / far - 1e-9):
        return None
    allowed = math.floor(far * len(m) + 1e-9)
    t = float(np.nextafter(m[allowed], np.inf)) if allowed < len(m) else float(m[-1])
    g = np.asarray(genuine, np.float64)
    return float(np.mean(g >= t)), t


@dataclass(frozen=True, eq=False)
class VerificationResult:
    """LFW-protocol verification. Accuracies in percent; thresholds in the metric's unit."""

    method: str
    model_version: str
    metric: str
    protocol: str
    pairs: int
    matched: int
    mismatched: int
    folds: int
    accuracy: float
    accuracy_std: float
    """Standard deviation over folds, or for one test set the binomial standard error."""
    accuracy_sem: float
    """Standard error of the mean accuracy (LFW's S_E = std / sqrt(folds))."""
    threshold: float
    fold_thresholds: tuple[float, ...]
    fold_accuracies: tuple[float, ...]
    failed_pairs: int
    failed_images: tuple[str, ...]
    tar_at_far: float | None
    far: float
    tar_threshold: float | None
    roc: Curve = field(repr=False)

    def to_json(self) -> dict[str, object]:
        return {
            "method": self.method, "model_version": self.model_version, "metric": self.metric,
            "protocol": self.protocol, "pairs": self.pairs, "matched": self.matched,
            "mismatched": self.mismatched, "folds": self.folds,
            "accuracy": round(self.accuracy, 3), "accuracy_std": round(self.accuracy_std, 3),
            "accuracy_sem": round(self.accuracy_sem, 3),
            "threshold": round(self.threshold, 5),
            "fold_thresholds": [round(t, 5) for t in self.fold_thresholds],
            "fold_accuracies": [round(a, 3) for a in self.fold_accuracies],
            "failed_pairs": self.failed_pairs, "failed_images": len(self.failed_images),
            "failed_image_paths": list(self.failed_images),
            "far": self.far,
            "tar_at_far": None if self.tar_at_far is None else round(self.tar_at_far * 100, 3),
            "tar_threshold": None if self.tar_threshold is None else round(self.tar_threshold, 5),
        }


def pair_scores(pairs: PairList, emb: Embeddings, root: Path) -> tuple[
        npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Scores of each pair (``-inf`` where an image failed) and whether both images had a face."""
    idx = emb.index()
    try:
        li = np.array([idx[str(root / n)] for n in pairs.left], np.int64)
        ri = np.array([idx[str(root / n)] for n in pairs.right], np.int64)
    except KeyError as exc:
        raise InvalidParameterError(f"image {exc} was not embedded") from None
    ok = emb.found[li] & emb.found[ri]
    scores = np.full(len(pairs), -np.inf)
    scores[ok] = emb.metric.scores(emb.vectors[li[ok]], emb.vectors[ri[ok]])
    return scores, ok


def verify(pairs: PairList, emb: Embeddings, root: Path, *,
           train: PairList | None = None, far: float = FAR_TARGET) -> VerificationResult:
    """LFW verification, strict: ``pairs`` with folds are cross-validated (each fold's
    threshold is the best on the other folds); one set needs ``train`` pairs to choose the
    threshold. A pair with a failed image is an error."""
    metric = emb.metric
    scores, ok = pair_scores(pairs, emb, root)
    same = pairs.same
    fold_t: list[float] = []
    fold_acc: list[float] = []
    if pairs.folds > 1:
        protocol = f"{pairs.folds}-fold cross-validation"
        for k in range(pairs.folds):
            test = pairs.fold == k
            tr = ~test & ok
            t = best_threshold(scores[tr], same[tr])
            correct = ok[test] & ((scores[test] >= t) == same[test])
            fold_t.append(t)
            fold_acc.append(100.0 * float(np.mean(correct)))
        acc = float(np.mean(fold_acc))
        std = float(np.std(fold_acc, ddof=1))
        sem = std / math.sqrt(pairs.folds)
    else:
        if train is None:
            raise InvalidParameterError(
                f"{pairs.source or 'the pairs file'} has no folds: give training pairs "
                "(--train FILE) to choose the threshold on")
        tscores, tok = pair_scores(train, emb, root)
        t = best_threshold(tscores[tok], train.same[tok])
        correct = ok & ((scores >= t) == same)
        acc = 100.0 * float(np.mean(correct))
        std = sem = 100.0 * math.sqrt(acc / 100.0 * (1 - acc / 100.0) / len(pairs))
        fold_t, fold_acc = [t], [acc]
        protocol = f"threshold chosen on {Path(train.source).name or 'training pairs'}"
    gen, imp = scores[same], scores[~same]
    tat = tar_at_far(gen, imp, far)
    names = {*pairs.left, *pairs.right}
    failed = tuple(sorted(p for p in emb.failures() if os.path.relpath(p, root) in names))
    return VerificationResult(
        method=emb.method, model_version=emb.model_version, metric=metric.name,
        protocol=protocol, pairs=len(pairs), matched=int(same.sum()),
        mismatched=int((~same).sum()), folds=pairs.folds, accuracy=acc, accuracy_std=std,
        accuracy_sem=sem, threshold=metric.native(float(np.mean(fold_t))),
        fold_thresholds=tuple(metric.native(t) for t in fold_t),
        fold_accuracies=tuple(fold_acc), failed_pairs=int((~ok).sum()),
        failed_images=failed, tar_at_far=None if tat is None else tat[0], far=far,
        tar_threshold=None if tat is None else metric.native(tat[1]),
        roc=roc_curve(gen, imp, emb.method))


# -- identification -------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class IdentificationSplit:
    """An open-set 1:N split of labelled images (all paths).

    The gallery holds one image of each enrolled person (``gallery[:enrolled]``) and one of
    each distractor person (``gallery[enrolled:]``); mated probes are the other images of
    enrolled people; non-mated probes are every image of people not in the gallery.
    """

    gallery: tuple[str, ...]
    gallery_labels: tuple[str, ...]
    enrolled: int
    mated: tuple[str, ...]
    mated_labels: tuple[str, ...]
    non_mated: tuple[str, ...]
    seed: int

    @property
    def distractors(self) -> int:
        return len(self.gallery) - self.enrolled

    def images(self) -> list[str]:
        return sorted({*self.gallery, *self.mated, *self.non_mated})


def split_identification(people: Mapping[str, Sequence[str]], *, seed: int = 0,
                         enrolled_fraction: float = 0.5,
                         distractor_fraction: float = 0.5) -> IdentificationSplit:
    """A deterministic (seeded) open-set split of ``people`` (name to image paths).

    People with two or more images: ``enrolled_fraction`` of them are enrolled with one image
    (chosen at random; the rest are mated probes), the others give non-mated probes. People
    with one image: ``distractor_fraction`` of them grow the gallery, the others are
    non-mated probes.
    """
    if not (0 < enrolled_fraction <= 1 and 0 <= distractor_fraction <= 1):
        raise InvalidParameterError("enrolled fraction must be in (0, 1], distractor "
                                    "fraction in [0, 1]")
    rng = np.random.default_rng(seed)
    names = sorted(people)
    multi = [n for n in names if len(people[n]) >= 2]
    single = [n for n in names if len(people[n]) == 1]
    if not multi:
        raise InvalidParameterError("identification needs people with at least two images")
    multi_perm = [multi[i] for i in rng.permutation(len(multi))]
    n_enrolled = max(1, round(len(multi) * enrolled_fraction))
    enrolled = sorted(multi_perm[:n_enrolled])
    unenrolled = sorted(multi_perm[n_enrolled:])
    single_perm = [single[i] for i in rng.permutation(len(single))]
    n_distr = round(len(single) * distractor_fraction)
    distractors = sorted(single_perm[:n_distr])
    single_probes = sorted(single_perm[n_distr:])

    gallery, gallery_labels, mated, mated_labels = [], [], [], []
    for n in enrolled:
        files = sorted(people[n])
        g = int(rng.integers(len(files)))
        gallery.append(files[g])
        gallery_labels.append(n)
        for j, f in enumerate(files):
            if j != g:
                mated.append(f)
                mated_labels.append(n)
    for n in distractors:
        gallery.append(people[n][0])
        gallery_labels.append(n)
    non_mated = [f for n in unenrolled for f in sorted(people[n])]
    non_mated += [people[n][0] for n in single_probes]
    return IdentificationSplit(tuple(gallery), tuple(gallery_labels), len(enrolled),
                               tuple(mated), tuple(mated_labels), tuple(non_mated), seed)


@dataclass(frozen=True)
class FnirAtFpir:
    """FNIR (rank 1) at the lowest threshold whose measured FPIR is ``<= fpir``."""

    fpir: float
    fnir: float | None
    """None when there are fewer than ``1 / fpir`` non-mated searches."""
    threshold: float | None
    measured_fpir: float | None


@dataclass(frozen=True, eq=False)
class IdentificationResult:
    """Open-set 1:N figures as NIST FRTE reports them (rates are fractions).

    FPIR(T): the fraction of non-mated searches whose best candidate scores ``>= T``.
    FNIR(T): the fraction of mated searches whose mate is not the rank-1 candidate at
    ``>= T``. Rank-k hit rate: the mate among the k best candidates (no threshold).
    A search whose probe has no face returns no candidates.
    """

    method: str
    model_version: str
    metric: str
    seed: int
    gallery_size: int
    enrolled: int
    distractors: int
    mated_searches: int
    non_mated_searches: int
    failed_gallery: int
    failed_probes: int
    fnir: tuple[FnirAtFpir, ...]
    ranks: tuple[tuple[int, float], ...]
    det: Curve = field(repr=False)

    def rank(self, k: int) -> float:
        return dict(self.ranks)[k]

    def to_json(self) -> dict[str, object]:
        return {
            "method": self.method, "model_version": self.model_version, "metric": self.metric,
            "seed": self.seed, "gallery_size": self.gallery_size, "enrolled": self.enrolled,
            "distractors": self.distractors, "mated_searches": self.mated_searches,
            "non_mated_searches": self.non_mated_searches,
            "failed_gallery": self.failed_gallery, "failed_probes": self.failed_probes,
            "fnir": [{"fpir": f.fpir, "fnir": None if f.fnir is None else round(f.fnir, 5),
                      "threshold": None if f.threshold is None else round(f.threshold, 5),
                      "measured_fpir": f.measured_fpir} for f in self.fnir],
            **{f"rank{k}": round(v, 5) for k, v in self.ranks},
        }


def identify(split: IdentificationSplit, emb: Embeddings, *,
             fpir_targets: Sequence[float] = FPIR_TARGETS,
             ranks: Sequence[int] = RANKS) -> IdentificationResult:
    """Open-set 1:N on ``split`` with embeddings ``emb`` (which must cover its images)."""
    metric = emb.metric
    idx = emb.index()

    def rows(paths: Sequence[str]) -> npt.NDArray[np.int64]:
        try:
            return np.array([idx[p] for p in paths], np.int64)
        except KeyError as exc:
            raise InvalidParameterError(f"image {exc} was not embedded") from None

    g = rows(split.gallery)
    g_ok = emb.found[g]
    gallery = emb.vectors[g[g_ok]]
    labels = np.array(split.gallery_labels, object)[g_ok]
    where = {str(lab): i for i, lab in enumerate(labels)}

    m = rows(split.mated)
    m_ok = emb.found[m]
    mate_score = np.full(len(m), -np.inf)
    mate_rank = np.full(len(m), np.iinfo(np.int64).max, np.int64)
    if len(gallery) and m_ok.any():
        s = metric.matrix(emb.vectors[m[m_ok]], gallery)
        cols = np.array([where.get(lab, -1) for lab in
                         np.array(split.mated_labels, object)[m_ok]], np.int64)
        has = cols >= 0
        ms = np.full(len(cols), -np.inf)
        ms[has] = s[np.nonzero(has)[0], cols[has]]
        rk = 1 + (s > ms[:, None]).sum(1)
        rk[~has] = np.iinfo(np.int64).max
        mate_score[m_ok], mate_rank[m_ok] = ms, rk

    nm = rows(split.non_mated)
    nm_ok = emb.found[nm]
    top = np.full(len(nm), -np.inf)
    if len(gallery) and nm_ok.any():
        top[nm_ok] = metric.matrix(emb.vectors[nm[nm_ok]], gallery).max(1)

    hit1 = mate_rank == 1
    results = []
    for p in fpir_targets:
        if len(nm) < math.ceil(1.0 / p - 1e-9):
            results.append(FnirAtFpir(p, None, None, None))
            continue
        desc = np.sort(top)[::-1]
        allowed = math.floor(p * len(nm) + 1e-9)
        t = float(np.nextafter(desc[allowed], np.inf))
        if not np.isfinite(t):
            t = float(desc[-1]) if np.isfinite(desc[-1]) else -1e300
        fnir = float(np.mean(~(hit1 & (mate_score >= t))))
        results.append(FnirAtFpir(p, fnir, metric.native(t), float(np.mean(top >= t))))

    # DET: every threshold among the scores.
    ts = np.unique(np.concatenate([top[np.isfinite(top)], mate_score[np.isfinite(mate_score)]]))
    top_sorted = np.sort(top)
    fpir_curve = (len(top) - np.searchsorted(top_sorted, ts, side="left")) / max(len(top), 1)
    hit_scores = np.sort(np.where(hit1, mate_score, -np.inf))
    fnir_curve = 1.0 - (len(m) - np.searchsorted(hit_scores, ts, side="left")) / max(len(m), 1)
    return IdentificationResult(
        method=emb.method, model_version=emb.model_version, metric=metric.name,
        seed=split.seed, gallery_size=int(g_ok.sum()), enrolled=split.enrolled,
        distractors=split.distractors, mated_searches=len(m), non_mated_searches=len(nm),
        failed_gallery=int((~g_ok).sum()), failed_probes=int((~m_ok).sum() + (~nm_ok).sum()),
        fnir=tuple(results),
        ranks=tuple((k, float(np.mean(mate_rank <= k))) for k in ranks),
        det=Curve(emb.method, fpir_curve, fnir_curve))


# -- calibration data -----------------------------------------------------------------------

def pair_score_sets(emb: Embeddings, labels: Sequence[str]) -> tuple[
        npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``(impostor, genuine)`` internal scores (cosines, or negated distances) of every pair
    of images with a face: different labels and same labels respectively."""
    ok = np.nonzero(emb.found)[0]
    v = emb.vectors[ok]
    lab = np.unique(np.asarray(labels, object)[ok], return_inverse=True)[1]
    imp_parts, gen_parts = [], []
    block = 1024
    for start in range(0, len(v), block):
        a = v[start:start + block]
        s = emb.metric.matrix(a, v)
        rows = np.arange(start, start + len(a))[:, None]
        upper = np.arange(len(v))[None, :] > rows
        same = lab[start:start + len(a)][:, None] == lab[None, :]
        imp_parts.append(s[upper & ~same])
        gen_parts.append(s[upper & same])
    return np.concatenate(imp_parts), np.concatenate(gen_parts)


def top_impostor_pairs(emb: Embeddings, labels: Sequence[str],
                       k: int = 5) -> list[tuple[float, str, str]]:
    """The ``k`` highest-scoring different-label pairs: ``(internal score, path, path)``.
    Worth a look: on LFW they are mostly labelling errors (one person under two names)."""
    ok = np.nonzero(emb.found)[0]
    v = emb.vectors[ok]
    lab = np.unique(np.asarray(labels, object)[ok], return_inverse=True)[1]
    best: list[tuple[float, int, int]] = []
    for start in range(0, len(v), 1024):
        s = emb.metric.matrix(v[start:start + 1024], v)
        rows = np.arange(start, start + len(s))[:, None]
        s[(np.arange(len(v))[None, :] <= rows) | (lab[start:start + len(s)][:, None] == lab)] = (
            -np.inf)
        flat = np.argpartition(s.ravel(), -k)[-k:] if s.size > k else np.arange(s.size)
        best += [(float(s.flat[f]), start + int(f // len(v)), int(f % len(v))) for f in flat]
    best = sorted((b for b in best if np.isfinite(b[0])), reverse=True)[:k]
    return [(sc, emb.paths[ok[i]], emb.paths[ok[j]]) for sc, i, j in best]


def calibrate(emb: Embeddings, labels: Sequence[str], *, dataset: str,
              command: str) -> Calibration:
    """A :class:`~facesearch.governance.calibration.Calibration` from labelled embeddings (cosine
    methods only; face_recognition's distances go through :func:`score_table`)."""
    if not emb.metric.higher_is_same:
        raise InvalidParameterError("calibration files are for facesearch pipelines (cosine); "
                                    f"{emb.method} uses a distance")
    imp, gen = pair_score_sets(emb, labels)
    cal = build_calibration(imp, gen, embedder=embedder_of(emb.model_version),
                            measured_with=emb.model_version, dataset=dataset, command=command,
                            images=len(emb), images_without_face=int((~emb.found).sum()))
    top = "; ".join(f"{c:.4f} {Path(a).name} / {Path(b).name}"
                    for c, a, b in top_impostor_pairs(emb, labels))
    return replace(cal, notes=(f"highest impostor cosines: {top}",))


@dataclass(frozen=True)
class ScoreRow:
    """FMR and FNMR (fractions) at one threshold in a metric's own unit."""

    threshold: float
    false_match_rate: float
    false_matches: int
    false_non_match_rate: float


def score_table(impostor: npt.ArrayLike, genuine: npt.ArrayLike, thresholds: Sequence[float],
                metric: Metric) -> list[ScoreRow]:
    """Measured FMR / FNMR at ``thresholds`` (native units) from scores (higher = alike)."""
    m = np.sort(np.asarray(impostor, np.float64))
    g = np.sort(np.asarray(genuine, np.float64))
    rows = []
    for t in thresholds:
        s = metric.internal(t)
        fm = int(len(m) - np.searchsorted(m, s, side="left"))
        fnm = int(np.searchsorted(g, s, side="left"))
        rows.append(ScoreRow(float(t), fm / max(len(m), 1), fm, fnm / max(len(g), 1)))
    return rows
