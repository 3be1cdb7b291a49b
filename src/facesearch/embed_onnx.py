"""dlib's face-recognition ResNet run by ONNX Runtime (no dlib at run time).

The model is converted once from the ``.dat`` file shipped in ``face_recognition_models``
(:mod:`facesearch.convert.dlib_resnet`) and cached. Its descriptors match dlib's
``face_recognition_model_v1.compute_face_descriptor`` on the same chips (cosine >= 0.9999).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from .convert.dlib_resnet import (
    CHIP_SIZE,
    DESCRIPTOR_DIM,
    INPUT_NAME,
    MODEL_NAME,
    OUTPUT_NAME,
    resnet_onnx_path,
)
from .errors import InvalidParameterError
from .runtime import Device, create_session
from .types import FloatArray


class OnnxResNetEmbedder:
    """:class:`facesearch.types.Embedder` for dlib's ResNet v1, on ONNX Runtime.

    ``threads``: intra-op threads (default: :func:`facesearch.runtime.default_threads`);
    ``batch_size``: chips per inference call (memory grows with it); ``model``: an ONNX file
    or serialized model to use instead of the cached conversion.
    """

    name = MODEL_NAME
    dim = DESCRIPTOR_DIM
    chip_size = CHIP_SIZE
    chip_padding = 0.25

    def __init__(self, threads: int | None = None, device: Device = "auto", *,
                 batch_size: int = 32, model: Path | bytes | None = None) -> None:
        if batch_size < 1:
            raise InvalidParameterError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self._session = create_session(model if model is not None else resnet_onnx_path(),
                                       threads=threads, device=device)

    def _check(self, chips: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        s = self.chip_size
        if not isinstance(chips, np.ndarray) or chips.dtype != np.uint8 or (
                chips.ndim != 4 or chips.shape[1:] != (s, s, 3)):
            got = (f"{chips.shape} {chips.dtype}" if isinstance(chips, np.ndarray)
                   else type(chips).__name__)
            raise InvalidParameterError(f"chips must be (N, {s}, {s}, 3) uint8, got {got}")
        return chips

    def descriptors(self, chips: npt.NDArray[np.uint8]) -> FloatArray:
        """dlib's raw descriptors (not normalised): ``(N, 150, 150, 3)`` uint8 RGB to
        ``(N, 128)`` float32. Euclidean distance < 0.6 is dlib's same-person threshold."""
        chips = self._check(chips)
        out = np.empty((len(chips), self.dim), np.float32)
        for start in range(0, len(chips), self.batch_size):
            batch = np.ascontiguousarray(chips[start:start + self.batch_size])
            out[start:start + len(batch)] = self._session.run(
                [OUTPUT_NAME], {INPUT_NAME: batch})[0]
        return out

    def embed(self, chips: npt.NDArray[np.uint8]) -> FloatArray:
        """``(N, 150, 150, 3)`` uint8 RGB chips to ``(N, 128)`` float32 unit vectors."""
        raw = self.descriptors(chips)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        unit: FloatArray = (raw / np.maximum(norms, np.float32(1e-12))).astype(np.float32)
        return unit
