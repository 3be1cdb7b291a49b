"""1:1 verification on pairs files: accuracy with thresholds chosen on other folds (or on
training pairs), TAR at a FAR, ROC curves. Pairs with a failed image count as wrong decisions
(see :mod:`facesearch.evaluation.embeddings`)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from facesearch.errors import InvalidParameterError
from facesearch.evaluation.datasets import PairList
from facesearch.evaluation.embeddings import (
    Embeddings,
)

FAR_TARGET = 1e-3



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


