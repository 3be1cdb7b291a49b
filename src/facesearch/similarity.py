"""The similarity scale: cosine of two unit embeddings to a monotone 0-100 score.

    similarity = 100 * exp(-ln(1.25) * ((1 - cos) / (1 - COS_AT_80)) ** SHAPE)

- 100 at cos = 1 (the same face), towards 0 as cos falls; strictly increasing in cos.
- 80 (Rekognition's default threshold) at ``COS_AT_80``: the cosine that best separates same
  from different people on LFW's development training pairs (pairsDevTrain.txt) with this
  model (dlib's ResNet).
- ``SHAPE`` spreads the strict end: 99 sits at cos 0.961, where about 2 in a million of the
  12.5 million different-person pairs of the lfw-dev images still score (each further "9"
  is a step of cosine towards 1: 99.9 at 0.980, 99.99 at 0.990).

The exact false-match rates of each threshold are measured by ``facesearch eval`` and shipped
as calibration data; thresholds are always compared on this scale, never on raw cosines.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from .types import FloatArray

COS_AT_80 = 0.905
SHAPE = 3.5
DEFAULT_THRESHOLD = 80.0
_K = math.log(1.25)


def to_similarity(cosine: npt.ArrayLike) -> FloatArray:
    """Similarity (0-100) of cosines in [-1, 1]."""
    c = np.clip(np.asarray(cosine, np.float64), -1.0, 1.0)
    r = (1.0 - c) / (1.0 - COS_AT_80)
    return (100.0 * np.exp(-_K * r**SHAPE)).astype(np.float32)


def to_cosine(similarity: npt.ArrayLike) -> FloatArray:
    """The cosine at which the similarity equals ``similarity`` (inverse of ``to_similarity``)."""
    s = np.clip(np.asarray(similarity, np.float64), 1e-12, 100.0)
    r = (np.log(100.0 / s) / _K) ** (1.0 / SHAPE)
    return np.clip(1.0 - r * (1.0 - COS_AT_80), -1.0, 1.0).astype(np.float32)


def similarity(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Similarity of two unit embeddings."""
    return float(to_similarity(float(np.dot(np.asarray(a, np.float32), np.asarray(b, np.float32)))))
