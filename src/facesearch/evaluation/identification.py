"""Open-set 1:N identification: enrolled people, probes of them and of people not enrolled
(distractors); FNIR at FPIR targets and rank-k hit rates."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from facesearch.errors import InvalidParameterError
from facesearch.evaluation.embeddings import (
    Embeddings,
)
from facesearch.evaluation.verification import Curve

FPIR_TARGETS: tuple[float, ...] = (0.01, 0.001)
RANKS: tuple[int, ...] = (1, 5)



@dataclass(frozen=True, eq=False)
class IdentificationSplit:
    """An open-set 1:N split of labelled images (all paths).

    The gallery holds one image of each enrolled person (``gallery[:enrolled]``) and one of
    each distractor person (``gallery[enrolled:]``); mated probes are the other images of
    enrolled people; non-mated probes are every image of people not in the gallery.
    """

    gallery: tuple[str, ...]
    gallery_labels: tuple[str, ...]
    enrolled: int
    mated: tuple[str, ...]
    mated_labels: tuple[str, ...]
    non_mated: tuple[str, ...]
    seed: int

    @property
    def distractors(self) -> int:
        return len(self.gallery) - self.enrolled

    def images(self) -> list[str]:
        return sorted({*self.gallery, *self.mated, *self.non_mated})


def split_identification(people: Mapping[str, Sequence[str]], *, seed: int = 0,
                         enrolled_fraction: float = 0.5,
                         distractor_fraction: float = 0.5) -> IdentificationSplit:
    """A deterministic (seeded) open-set split of ``people`` (name to image paths).

    People with two or more images: ``enrolled_fraction`` of them are enrolled with one image
    (chosen at random; the rest are mated probes), the others give non-mated probes. People
    with one image: ``distractor_fraction`` of them grow the gallery, the others are
    non-mated probes.
    """
    if not (0 < enrolled_fraction <= 1 and 0 <= distractor_fraction <= 1):
        raise InvalidParameterError("enrolled fraction must be in (0, 1], distractor "
                                    "fraction in [0, 1]")
    rng = np.random.default_rng(seed)
    names = sorted(people)
    multi = [n for n in names if len(people[n]) >= 2]
    single = [n for n in names if len(people[n]) == 1]
    if not multi:
        raise InvalidParameterError("identification needs people with at least two images")
    multi_perm = [multi[i] for i in rng.permutation(len(multi))]
    n_enrolled = max(1, round(len(multi) * enrolled_fraction))
    enrolled = sorted(multi_perm[:n_enrolled])
    unenrolled = sorted(multi_perm[n_enrolled:])
    single_perm = [single[i] for i in rng.permutation(len(single))]
    n_distr = round(len(single) * distractor_fraction)
    distractors = sorted(single_perm[:n_distr])
    single_probes = sorted(single_perm[n_distr:])

    gallery, gallery_labels, mated, mated_labels = [], [], [], []
    for n in enrolled:
        files = sorted(people[n])
        g = int(rng.integers(len(files)))
        gallery.append(files[g])
        gallery_labels.append(n)
        for j, f in enumerate(files):
            if j != g:
                mated.append(f)
                mated_labels.append(n)
    for n in distractors:
        gallery.append(people[n][0])
        gallery_labels.append(n)
    non_mated = [f for n in unenrolled for f in sorted(people[n])]
    non_mated += [people[n][0] for n in single_probes]
    return IdentificationSplit(tuple(gallery), tuple(gallery_labels), len(enrolled),
                               tuple(mated), tuple(mated_labels), tuple(non_mated), seed)


@dataclass(frozen=True)
class FnirAtFpir:
    """FNIR (rank 1) at the lowest threshold whose measured FPIR is ``<= fpir``."""

    fpir: float
    fnir: float | None
    """None when there are fewer than ``1 / fpir`` non-mated searches."""
    threshold: float | None
    measured_fpir: float | None


@dataclass(frozen=True, eq=False)
class IdentificationResult:
    """Open-set 1:N figures as NIST FRTE reports them (rates are fractions).

    FPIR(T): the fraction of non-mated searches whose best candidate scores ``>= T``.
    FNIR(T): the fraction of mated searches whose mate is not the rank-1 candidate at
    ``>= T``. Rank-k hit rate: the mate among the k best candidates (no threshold).
    A search whose probe has no face returns no candidates.
    """

    method: str
    model_version: str
    metric: str
    seed: int
    gallery_size: int
    enrolled: int
    distractors: int
    mated_searches: int
    non_mated_searches: int
    failed_gallery: int
    failed_probes: int
    fnir: tuple[FnirAtFpir, ...]
    ranks: tuple[tuple[int, float], ...]
    det: Curve = field(repr=False)

    def rank(self, k: int) -> float:
        return dict(self.ranks)[k]

    def to_json(self) -> dict[str, object]:
        return {
            "method": self.method, "model_version": self.model_version, "metric": self.metric,
            "seed": self.seed, "gallery_size": self.gallery_size, "enrolled": self.enrolled,
            "distractors": self.distractors, "mated_searches": self.mated_searches,
            "non_mated_searches": self.non_mated_searches,
            "failed_gallery": self.failed_gallery, "failed_probes": self.failed_probes,
            "fnir": [{"fpir": f.fpir, "fnir": None if f.fnir is None else round(f.fnir, 5),
                      "threshold": None if f.threshold is None else round(f.threshold, 5),
                      "measured_fpir": f.measured_fpir} for f in self.fnir],
            **{f"rank{k}": round(v, 5) for k, v in self.ranks},
        }


def identify(split: IdentificationSplit, emb: Embeddings, *,
             fpir_targets: Sequence[float] = FPIR_TARGETS,
             ranks: Sequence[int] = RANKS) -> IdentificationResult:
    """Open-set 1:N on ``split`` with embeddings ``emb`` (which must cover its images)."""
    metric = emb.metric
    idx = emb.index()

    def rows(paths: Sequence[str]) -> npt.NDArray[np.int64]:
        try:
            return np.array([idx[p] for p in paths], np.int64)
        except KeyError as exc:
            raise InvalidParameterError(f"image {exc} was not embedded") from None

    g = rows(split.gallery)
    g_ok = emb.found[g]
    gallery = emb.vectors[g[g_ok]]
    labels = np.array(split.gallery_labels, object)[g_ok]
    where = {str(lab): i for i, lab in enumerate(labels)}

    m = rows(split.mated)
    m_ok = emb.found[m]
    mate_score = np.full(len(m), -np.inf)
    mate_rank = np.full(len(m), np.iinfo(np.int64).max, np.int64)
    if len(gallery) and m_ok.any():
        s = metric.matrix(emb.vectors[m[m_ok]], gallery)
        cols = np.array([where.get(lab, -1) for lab in
                         np.array(split.mated_labels, object)[m_ok]], np.int64)
        has = cols >= 0
        ms = np.full(len(cols), -np.inf)
        ms[has] = s[np.nonzero(has)[0], cols[has]]
        rk = 1 + (s > ms[:, None]).sum(1)
        rk[~has] = np.iinfo(np.int64).max
        mate_score[m_ok], mate_rank[m_ok] = ms, rk

    nm = rows(split.non_mated)
    nm_ok = emb.found[nm]
    top = np.full(len(nm), -np.inf)
    if len(gallery) and nm_ok.any():
        top[nm_ok] = metric.matrix(emb.vectors[nm[nm_ok]], gallery).max(1)

    hit1 = mate_rank == 1
    results = []
    for p in fpir_targets:
        if len(nm) < math.ceil(1.0 / p - 1e-9):
            results.append(FnirAtFpir(p, None, None, None))
            continue
        desc = np.sort(top)[::-1]
        allowed = math.floor(p * len(nm) + 1e-9)
        t = float(np.nextafter(desc[allowed], np.inf))
        if not np.isfinite(t):
            t = float(desc[-1]) if np.isfinite(desc[-1]) else -1e300
        fnir = float(np.mean(~(hit1 & (mate_score >= t))))
        results.append(FnirAtFpir(p, fnir, metric.native(t), float(np.mean(top >= t))))

    # DET: every threshold among the scores.
    ts = np.unique(np.concatenate([top[np.isfinite(top)], mate_score[np.isfinite(mate_score)]]))
    top_sorted = np.sort(top)
    fpir_curve = (len(top) - np.searchsorted(top_sorted, ts, side="left")) / max(len(top), 1)
    hit_scores = np.sort(np.where(hit1, mate_score, -np.inf))
    fnir_curve = 1.0 - (len(m) - np.searchsorted(hit_scores, ts, side="left")) / max(len(m), 1)
    return IdentificationResult(
        method=emb.method, model_version=emb.model_version, metric=metric.name,
        seed=split.seed, gallery_size=int(g_ok.sum()), enrolled=split.enrolled,
        distractors=split.distractors, mated_searches=len(m), non_mated_searches=len(nm),
        failed_gallery=int((~g_ok).sum()), failed_probes=int((~m_ok).sum() + (~nm_ok).sum()),
        fnir=tuple(results),
        ranks=tuple((k, float(np.mean(mate_rank <= k))) for k in ranks),
        det=Curve(emb.method, fpir_curve, fnir_curve))


