"""Recognisability: how much identity the embedder found in a face, 0-100.

The score is the magnitude of the embedder's raw descriptor (before L2 normalisation). A
network trained with a margin-based softmax (SFace, like ArcFace) gives confident, typical
faces long features and ambiguous inputs short ones; MagFace (Meng et al., 2021) makes this
explicit, and it holds for SFace as measured here. On lfw-dev (``bench/quality_junk.py``,
figures in docs/accuracy.md, "Quality: faces versus junk") the norm tells faces from junk
(median 12.8 for real faces, 4.0-4.9 for detections on backgrounds and text) and, over
degraded probes, predicts how well a face matches its own mate (Spearman 0.66 with the
genuine cosine). The alternative asked for first, the cosine to the centroid of
"unrecognisable identity" embeddings (Deng et al.'s ERS), was measured on the same data and
predicts much worse (Spearman 0.11, and it does not see blur or resolution loss); it is not
used.

The norm ``n`` is mapped linearly onto 0-100: ``100 * (n - n_u) / (n_r - n_u)`` clipped to
[0, 100], with ``n_u`` the median norm of lfw-dev faces made unrecognisable (shrunk so the eyes
are 3-6 px apart and enlarged back, or blurred with sigma 6-10 px; score 0) and ``n_r`` the
median norm of real lfw-dev faces (score 100). The anchors per embedder are in
``facesearch/data/recognisability.json`` (made by ``bench/quality_junk.py``). An embedder
without anchors, or that gives no raw norms (dlib's ResNet), has no score (NaN). Cost: one
128-d norm per face, under a microsecond (the descriptor is computed anyway).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from facesearch.types import FloatArray

DATA_FILE = Path(__file__).resolve().parents[1] / "data" / "recognisability.json"


@dataclass(frozen=True)
class Anchors:
    """The raw-descriptor norms at which one embedder's score is 0 and 100."""

    embedder: str
    norm_unrecognisable: float
    norm_recognisable: float

    def score(self, norms: npt.ArrayLike) -> FloatArray:
        """Recognisability 0-100 of raw-descriptor norms."""
        n = np.asarray(norms, np.float64)
        span = self.norm_recognisable - self.norm_unrecognisable
        return np.clip(100.0 * (n - self.norm_unrecognisable) / span, 0.0, 100.0
                       ).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _load(path: Path) -> dict[str, Anchors]:
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    return {name: Anchors(name, float(d["norm_unrecognisable"]), float(d["norm_recognisable"]))
            for name, d in raw["embedders"].items()}


def anchors_for(embedder: str, path: Path = DATA_FILE) -> Anchors | None:
    """The anchors of an embedder name (its ``+flip`` variant uses the plain one's), or None
    where none are shipped."""
    known = _load(path)
    return known.get(embedder) or known.get(embedder.removesuffix("+flip"))


def recognisability(norms: FloatArray | None, count: int, embedder: str) -> FloatArray:
    """Recognisability 0-100 of ``count`` faces from their raw-descriptor ``norms`` (NaN
    where the embedder gives no norms or has no anchors)."""
    a = anchors_for(embedder)
    if norms is None or a is None:
        return np.full(count, np.nan, np.float32)
    return a.score(norms)
