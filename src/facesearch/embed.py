"""Face embedders: aligned 150x150 chips to L2-normalised 128-d vectors.

Every embedder satisfies :class:`facesearch.types.Embedder`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .detect import _models_file
from .types import EMBEDDING_DIM, FloatArray


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
            _models_file("dlib_face_recognition_resnet_model_v1.dat")
        )

    def embed(self, chips: npt.NDArray[np.uint8]) -> FloatArray:
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        batch = [np.ascontiguousarray(c) for c in chips]
        raw = np.array([np.array(d) for d in self._net.compute_face_descriptor(batch)])
        return l2_normalise(raw)
