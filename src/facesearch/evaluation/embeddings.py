"""Per-image face embeddings for the accuracy protocols, and how their scores compare.

Every protocol (:mod:`~facesearch.evaluation.verification`,
:mod:`~facesearch.evaluation.identification`, :mod:`~facesearch.evaluation.calibration_data`)
runs on per-image embeddings (:func:`embed_images`) of one face per image, made by a facesearch
pipeline (any name :func:`facesearch.vision.pipeline.load_pipeline` takes) or by the
``face_recognition`` library (:data:`FACE_RECOGNITION`, the baseline: its own HOG detector,
5-point chips and Euclidean distance). Which face: :class:`FaceRule`; for LFW's 250x250 crops
the labelled person is the face nearest the image centre (``CENTRE``, the default here);
``LARGEST`` is what the product searches with.

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
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from facesearch.errors import FaceSearchError, InvalidParameterError
from facesearch.types import FloatArray, IntArray
from facesearch.vision import similarity as sim
from facesearch.vision.decode import load_image
from facesearch.vision.pipeline import pipeline_from

FACE_RECOGNITION = "face_recognition"
"""Baseline method name: the face_recognition library's pipeline and distance."""
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


