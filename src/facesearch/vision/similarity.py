"""The similarity scale: cosine of two unit embeddings to a monotone 0-100 score, per model.

    similarity = 100 * exp(-ln(1.25) * ((1 - cos) / (1 - cos_at_80)) ** shape)

- 100 at cos = 1 (the same face), towards 0 as cos falls; strictly increasing in cos.
- 80 (Rekognition's default threshold) at ``cos_at_80``: the cosine that best separates same
  from different people on LFW's development training pairs (pairsDevTrain.txt) with that
  model (the best-accuracy threshold), so the default 80 is the same operating point for every
  model.
- ``shape`` spreads the strict end so that 99 sits near a 1:1 false-match rate of about 1e-6
  on the 12.45 million different-person pairs of the lfw-dev images (measured by
  ``facesearch eval calibrate``; see ``docs/accuracy.md``).

Each embedder (the part of a model version after ``/``) has its own :class:`Scale`
(:data:`SCALES`): cosines of different models mean different things, so a score is always
converted with the scale of the model that made the vectors. Variants of an embedder
(``+flip``, ``-int8w7``) use the scale of the embedder whose name they extend. The exact
false-match rates of each threshold are shipped as calibration data; thresholds are always
compared on this scale, never on raw cosines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from facesearch.errors import InvalidParameterError
from facesearch.types import FloatArray

DEFAULT_THRESHOLD = 80.0
DEFAULT_EMBEDDER = "sface-2021dec"
"""The default pipeline's embedder (``model_version=None`` means this one)."""
_K = math.log(1.25)


@dataclass(frozen=True)
class Scale:
    """One model's cosine <-> similarity map (see the module docstring)."""

    cos_at_80: float
    shape: float

    def to_similarity(self, cosine: npt.ArrayLike) -> FloatArray:
        c = np.clip(np.asarray(cosine, np.float64), -1.0, 1.0)
        r = (1.0 - c) / (1.0 - self.cos_at_80)
        return (100.0 * np.exp(-_K * r**self.shape)).astype(np.float32)

    def to_cosine(self, similarity: npt.ArrayLike) -> FloatArray:
        s = np.clip(np.asarray(similarity, np.float64), 1e-12, 100.0)
        r = (np.log(100.0 / s) / _K) ** (1.0 / self.shape)
        return np.clip(1.0 - r * (1.0 - self.cos_at_80), -1.0, 1.0).astype(np.float32)


SCALES: dict[str, Scale] = {
    # dlib's ResNet: 80 at cos 0.905 (pairsDevTrain best accuracy), 99 at cos 0.961
    # (FMR 2.3e-6 on lfw-dev).
    "dlib-resnet-v1": Scale(cos_at_80=0.905, shape=3.5),
    # SFace: 80 at cos 0.366 (pairsDevTrain best accuracy, 0.3655), 99 at cos 0.683 (FMR
    # 1e-6 on lfw-dev, measured + tail: the law-enforcement floor).
    "sface-2021dec": Scale(cos_at_80=0.366, shape=4.5),
}


def scale_for(model_version: str | None = None) -> Scale:
    """The scale of a model version (``"<detector>/<embedder>"``) or embedder name; ``None``:
    the default embedder's. Unknown embedders are refused (a wrong scale would mislabel every
    threshold)."""
    emb = DEFAULT_EMBEDDER if model_version is None else model_version.rsplit("/", 1)[-1]
    best = max((k for k in SCALES if emb == k or emb.startswith((k + "+", k + "-"))),
               key=len, default=None)
    if best is None:
        raise InvalidParameterError(f"no similarity scale for model {model_version!r}; "
                                    f"known embedders: {', '.join(SCALES)}")
    return SCALES[best]


def to_similarity(cosine: npt.ArrayLike, model_version: str | None = None) -> FloatArray:
    """Similarity (0-100) of cosines in [-1, 1] with ``model_version``'s scale."""
    return scale_for(model_version).to_similarity(cosine)


def to_cosine(similarity: npt.ArrayLike, model_version: str | None = None) -> FloatArray:
    """The cosine at which the similarity equals ``similarity`` (inverse of ``to_similarity``)."""
    return scale_for(model_version).to_cosine(similarity)


def similarity(a: npt.ArrayLike, b: npt.ArrayLike, model_version: str | None = None) -> float:
    """Similarity of two unit embeddings of ``model_version``."""
    c = float(np.dot(np.asarray(a, np.float32), np.asarray(b, np.float32)))
    return float(to_similarity(c, model_version))
