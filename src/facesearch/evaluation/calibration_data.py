"""Calibration data from labelled embeddings: every genuine and impostor pair's score, the
highest impostor pairs, and the calibration built from them
(:func:`facesearch.governance.calibration.build_calibration`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from facesearch.errors import InvalidParameterError
from facesearch.evaluation.embeddings import (
    Embeddings,
    Metric,
)
from facesearch.governance.calibration import Calibration, build_calibration, embedder_of


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
