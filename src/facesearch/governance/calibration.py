"""Calibration: what a similarity threshold means, as false-match rates measured on real faces.

For a threshold ``s`` on the 0-100 similarity scale (:mod:`facesearch.vision.similarity`):

- ``FMR(s)`` (1:1 false match rate): the fraction of different-person (impostor) pairs that
  score ``>= s``. Measured on every cross-identity image pair of a labelled face set (lfw-dev:
  about 12.4 million pairs), so rates down to about ``min_false_matches / impostor_pairs``
  (~1e-6) are observed. Below that, FMR comes from an exponential tail fitted to the highest
  impostor cosines (peaks over threshold with shape 0): ``FMR(c) = FMR(u) * exp(-(c - u) /
  scale)`` for cosines ``c >= u``, where ``u`` has :data:`TAIL_EXCEEDANCES` impostor pairs
  above it and ``scale`` is the upper 95 % confidence bound of their mean excess. Impostor
  cosines are bounded by 1, so their true tail falls faster than any exponential; the fit is
  meant to over-state FMR, and values from it are flagged ``extrapolated``. Above ``u`` the
  larger of the fit and the measurement is used.
- ``FNMR(s)`` (1:1 false non-match rate): the fraction of same-person (genuine) pairs that
  score ``< s``.
- Expected FPIR for a gallery of ``N`` faces (a search for someone not enrolled returns at
  least one candidate at ``>= s``): ``1 - (1 - FMR(s)) ** N``, assuming the ``N`` comparisons
  are independent. Look-alikes and several faces of one person make real searches correlated;
  treat the figure as an estimate.

Calibration files (``facesearch/data/calibration/*.json``) are made by
``facesearch eval calibrate`` (the file records its command, data and method). One is keyed by
the embedder that makes the vectors (FMR is a property of the vector space) and records the
full pipeline ``model_version`` it was measured with: a pipeline with another detector but the
same embedder uses it, and :attr:`Calibration.exact` says whether it matched exactly.

:func:`find_calibration` takes ``model_version`` (``"<detector>/<embedder>"``, as a
collection or pipeline reports it); ``None`` means the default model's embedder
(:data:`DEFAULT_EMBEDDER`). The calibrations per probe quality band are in
:mod:`facesearch.governance.bands`.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from facesearch.errors import InvalidParameterError, NotFoundError
from facesearch.vision import similarity as sim

CALIBRATION_DIR = Path(__file__).resolve().parents[1] / "data" / "calibration"
DEFAULT_EMBEDDER = sim.DEFAULT_EMBEDDER
FORMAT = 1
MIN_FALSE_MATCHES = 10
"""False matches below which an FMR counts as not measured (extrapolated)."""
TAIL_EXCEEDANCES = 1000
"""Impostor pairs above the tail fit's anchor cosine (the fit uses exactly these)."""
TAIL_CONFIDENCE_Z = 1.645
"""One-sided normal quantile of the confidence bound on the tail's scale (95 %)."""
RESOLUTION = 0.0001
"""Thresholds are answered in steps of this much similarity (the scale saturates near 100:
99.99 is cosine 0.9895, 99.999 is 0.9946, 99.9999 is 0.9972)."""
GRID = np.round(np.concatenate([[-1.0], np.arange(0.0, 1.0 + 1e-9, 0.0005)]), 4)
"""Cosines at which the counts are stored."""


class CalibrationNotFoundError(NotFoundError):
    code = "calibration_not_found"


def safe_name(model_version: str) -> str:
    """A file-name-safe form of a model version or embedder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_version).strip("_")


def embedder_of(model_version: str) -> str:
    """The embedder part of ``"<detector>/<embedder>"`` (the whole string if it has no ``/``)."""
    return model_version.rsplit("/", 1)[-1]


def fmr_for_fpir(target_fpir: float, gallery_size: int) -> float:
    """The 1:1 FMR at which the expected FPIR over ``gallery_size`` faces is ``target_fpir``."""
    _check_rate(target_fpir, "target FPIR")
    n = _check_gallery(gallery_size)
    return float(-math.expm1(math.log1p(-target_fpir) / n))


def fpir_for_fmr(fmr: float, gallery_size: int) -> float:
    """Expected FPIR ``1 - (1 - fmr) ** N`` (independent comparisons)."""
    n = _check_gallery(gallery_size)
    if fmr >= 1.0:
        return 1.0
    return float(-math.expm1(n * math.log1p(-max(fmr, 0.0))))


def _check_rate(rate: float, what: str) -> None:
    if not 0.0 < float(rate) < 1.0:
        raise InvalidParameterError(f"{what} must be between 0 and 1 (exclusive), got {rate}")


def _check_gallery(gallery_size: int) -> int:
    if int(gallery_size) < 1:
        raise InvalidParameterError(f"gallery size must be at least 1, got {gallery_size}")
    return int(gallery_size)


def _check_similarity(similarity: float) -> float:
    if not 0.0 <= float(similarity) <= 100.0:
        raise InvalidParameterError(f"similarity must be between 0 and 100, got {similarity}")
    return float(similarity)


@dataclass(frozen=True)
class TailFit:
    """Exponential tail of impostor cosines above ``anchor_cosine``.

    ``FMR(c) = anchor_fmr * exp(-(c - anchor_cosine) / scale)``. ``mean_excess`` (cosine
    units) is the mean of ``c - anchor_cosine`` over the ``exceedances`` impostor cosines
    ``>= anchor_cosine`` (the maximum likelihood scale of an exponential); ``scale`` is its
    upper one-sided 95 % confidence bound (chi-square, Wilson-Hilferty), which is used.
    """

    anchor_cosine: float
    anchor_fmr: float
    scale: float
    exceedances: int
    mean_excess: float = 0.0

    def fmr(self, cosine: npt.ArrayLike) -> npt.NDArray[np.float64]:
        c = np.asarray(cosine, np.float64)
        return self.anchor_fmr * np.exp(-(c - self.anchor_cosine) / self.scale)


@dataclass(frozen=True)
class ThresholdRisk:
    """What a similarity threshold means (rates are fractions, not percent)."""

    similarity: float
    cosine: float
    false_match_rate: float
    """1:1: the fraction of different-person pairs at or above the threshold."""
    false_non_match_rate: float
    """1:1: the fraction of same-person pairs below the threshold (on the calibration data)."""
    gallery_size: int | None
    expected_fpir: float | None
    """Expected fraction of searches for someone not enrolled that return a candidate."""
    extrapolated: bool
    """True when fewer than ``min_false_matches`` false matches were observed at this
    threshold: the FMR comes from the fitted tail, not from a measurement."""
    measurable_fmr: float
    """The lowest FMR the calibration data measures (``min_false_matches / impostor_pairs``)."""
    measured_with: str
    quality_band: str | None = None
    """The probe's quality band whose calibration gave these rates (:data:`BANDS`; None: the
    all-pairs calibration, for searches whose probe's quality is not known)."""
    recognisability: float | None = None
    """The probe face's recognisability (0-100) that chose the band."""


@dataclass(frozen=True)
class ThresholdAnswer:
    """The answer to "which threshold gives FPIR <= target on a gallery of N?"."""

    target_fpir: float
    gallery_size: int
    required_fmr: float
    """The 1:1 FMR the threshold must reach: ``1 - (1 - target_fpir) ** (1 / N)``."""
    risk: ThresholdRisk
    """The threshold (rounded up to :data:`RESOLUTION`) and what it means."""
    note: str


@dataclass(frozen=True, eq=False)
class Calibration:
    """Impostor and genuine score counts of one embedder, with an extrapolating tail.

    ``cosine`` is the increasing grid; ``false_matches[i]`` impostor pairs score
    ``>= cosine[i]`` and ``false_non_matches[i]`` genuine pairs score ``< cosine[i]``.
    """

    embedder: str
    measured_with: str
    dataset: str
    method: str
    command: str
    impostor_pairs: int
    genuine_pairs: int
    cosine: npt.NDArray[np.float64]
    false_matches: npt.NDArray[np.int64]
    false_non_matches: npt.NDArray[np.int64]
    tail: TailFit
    min_false_matches: int = MIN_FALSE_MATCHES
    images: int = 0
    images_without_face: int = 0
    exact: bool = True
    """Whether the calibration was measured with the very pipeline it was looked up for."""
    notes: tuple[str, ...] = field(default_factory=tuple)

    # -- rates ---------------------------------------------------------------------------

    @property
    def measurable_fmr(self) -> float:
        """The lowest FMR measured with at least ``min_false_matches`` false matches."""
        return self.min_false_matches / self.impostor_pairs

    @property
    def measured_cosine(self) -> float:
        """The highest grid cosine with at least ``min_false_matches`` false matches."""
        ok = np.nonzero(self.false_matches >= self.min_false_matches)[0]
        return float(self.cosine[ok[-1]])

    def fmr_at_cosine(self, cosine: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """FMR at cosine thresholds (measured, or from the tail above its anchor)."""
        c = np.asarray(cosine, np.float64)
        measured = np.interp(c, self.cosine, self.false_matches.astype(np.float64))
        measured = measured / self.impostor_pairs
        tail = self.tail.fmr(c)
        return np.where(c > self.tail.anchor_cosine, np.maximum(measured, tail), measured)

    def false_match_rate(self, similarity: float) -> float:
        """1:1 FMR at a similarity threshold (0-100)."""
        c = sim.to_cosine(_check_similarity(similarity), self.embedder)
        return float(self.fmr_at_cosine(c))

    def false_non_match_rate(self, similarity: float) -> float:
        """1:1 FNMR at a similarity threshold (0-100), on the calibration's genuine pairs."""
        c = float(sim.to_cosine(_check_similarity(similarity), self.embedder))
        fnm = np.interp(c, self.cosine, self.false_non_matches.astype(np.float64))
        return float(fnm / max(self.genuine_pairs, 1))

    def extrapolated(self, similarity: float) -> bool:
        """Whether FMR at ``similarity`` comes from the fitted tail (too few false matches)."""
        c = float(sim.to_cosine(_check_similarity(similarity), self.embedder))
        return c > self.measured_cosine

    def expected_fpir(self, similarity: float, gallery_size: int) -> float:
        """Expected FPIR at ``similarity`` for ``gallery_size`` enrolled faces."""
        return fpir_for_fmr(self.false_match_rate(similarity), gallery_size)

    def threshold_for_fmr(self, target_fmr: float) -> float:
        """The smallest similarity, rounded up to :data:`RESOLUTION`, whose FMR is
        ``<= target_fmr``.

        Raises :class:`InvalidParameterError` when even similarity 100 has a higher FMR.
        """
        _check_rate(target_fmr, "target FMR")
        if self.false_match_rate(100.0) > target_fmr:
            raise InvalidParameterError(
                f"no similarity threshold reaches a false match rate of {target_fmr:.3g} with "
                f"model {self.embedder}")
        lo, hi = 0.0, 100.0
        if self.false_match_rate(lo) <= target_fmr:
            return 0.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if self.false_match_rate(mid) <= target_fmr:
                hi = mid
            else:
                lo = mid
        steps = 1.0 / RESOLUTION
        t = min(math.ceil(hi * steps - 1e-6) / steps, 100.0)
        while t < 100.0 and self.false_match_rate(t) > target_fmr:  # float32 rounding guard
            t = min(round(t + RESOLUTION, 4), 100.0)
        return t

    def threshold_for_fpir(self, target_fpir: float, gallery_size: int) -> float:
        """The smallest similarity (rounded up to :data:`RESOLUTION`) with expected FPIR
        ``<= target_fpir`` over ``gallery_size`` faces."""
        return self.threshold_for_fmr(fmr_for_fpir(target_fpir, gallery_size))

    def risk(self, similarity: float, gallery_size: int | None = None) -> ThresholdRisk:
        """Everything a person choosing ``similarity`` as a threshold should see."""
        s = _check_similarity(similarity)
        fmr = self.false_match_rate(s)
        return ThresholdRisk(
            similarity=s, cosine=float(sim.to_cosine(s, self.embedder)), false_match_rate=fmr,
            false_non_match_rate=self.false_non_match_rate(s),
            gallery_size=None if gallery_size is None else int(gallery_size),
            expected_fpir=None if gallery_size is None else fpir_for_fmr(fmr, gallery_size),
            extrapolated=self.extrapolated(s), measurable_fmr=self.measurable_fmr,
            measured_with=self.measured_with)

    def answer(self, target_fpir: float, gallery_size: int) -> ThresholdAnswer:
        """Which threshold gives expected FPIR ``<= target_fpir`` on ``gallery_size`` faces."""
        need = fmr_for_fpir(target_fpir, gallery_size)
        t = self.threshold_for_fmr(need)
        risk = self.risk(t, gallery_size)
        if risk.extrapolated:
            floor = fpir_for_fmr(self.measurable_fmr, gallery_size)
            note = (f"EXTRAPOLATED: this needs a 1:1 FMR of {need:.2g}, below the lowest FMR "
                    f"the calibration data measures ({self.measurable_fmr:.2g}: "
                    f"{self.min_false_matches} false matches among {self.impostor_pairs:,} "
                    f"impostor pairs). The threshold comes from a fitted tail meant to "
                    f"over-state FMR; the lowest FPIR measured directly at N={gallery_size:,} "
                    f"is {_percent(floor)}.")
        else:
            note = (f"measured: {risk.false_match_rate * self.impostor_pairs:.0f} of "
                    f"{self.impostor_pairs:,} impostor pairs score at or above it")
        return ThresholdAnswer(target_fpir=float(target_fpir), gallery_size=int(gallery_size),
                               required_fmr=need, risk=risk, note=note)

    def table(self, similarities: Sequence[float],
              gallery_sizes: Sequence[int] = ()) -> list[tuple[ThresholdRisk, list[float]]]:
        """Rows of (risk at each similarity, expected FPIR at each gallery size)."""
        rows = []
        for s in similarities:
            r = self.risk(s)
            rows.append((r, [fpir_for_fmr(r.false_match_rate, n) for n in gallery_sizes]))
        return rows

    # -- files ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT, "embedder": self.embedder, "measured_with": self.measured_with,
            "dataset": self.dataset, "method": self.method, "command": self.command,
            "images": self.images, "images_without_face": self.images_without_face,
            "impostor_pairs": self.impostor_pairs, "genuine_pairs": self.genuine_pairs,
            "min_false_matches": self.min_false_matches,
            "measurable_fmr": self.measurable_fmr,
            "tail": {"anchor_cosine": self.tail.anchor_cosine,
                     "anchor_fmr": self.tail.anchor_fmr, "scale": self.tail.scale,
                     "mean_excess": self.tail.mean_excess,
                     "exceedances": self.tail.exceedances},
            "notes": list(self.notes),
            "grid": {"cosine": [float(c) for c in self.cosine],
                     "false_matches": [int(v) for v in self.false_matches],
                     "false_non_matches": [int(v) for v in self.false_non_matches]},
        }

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Calibration:
        if d.get("format") != FORMAT:
            raise InvalidParameterError(f"unsupported calibration format {d.get('format')!r}")
        grid = d["grid"]
        tail = d["tail"]
        assert isinstance(grid, dict) and isinstance(tail, dict)
        notes = d.get("notes", [])
        assert isinstance(notes, list)
        return cls(
            embedder=str(d["embedder"]), measured_with=str(d["measured_with"]),
            dataset=str(d["dataset"]), method=str(d["method"]), command=str(d["command"]),
            impostor_pairs=int(d["impostor_pairs"]),  # type: ignore[call-overload]
            genuine_pairs=int(d["genuine_pairs"]),  # type: ignore[call-overload]
            cosine=np.asarray(grid["cosine"], np.float64),
            false_matches=np.asarray(grid["false_matches"], np.int64),
            false_non_matches=np.asarray(grid["false_non_matches"], np.int64),
            tail=TailFit(float(tail["anchor_cosine"]), float(tail["anchor_fmr"]),
                         float(tail["scale"]), int(tail["exceedances"]),
                         float(tail.get("mean_excess", 0.0))),
            min_false_matches=int(d["min_false_matches"]),  # type: ignore[call-overload]
            images=int(d.get("images", 0)),  # type: ignore[call-overload]
            images_without_face=int(d.get("images_without_face", 0)),  # type: ignore[call-overload]
            notes=tuple(str(n) for n in notes),
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        # One key per line, each value on one line: small, readable diffs.
        body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}"
                           for k, v in self.to_json().items())
        tmp.write_text("{\n" + body + "\n}\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Calibration:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CalibrationNotFoundError(f"cannot read calibration {path}: {exc}") from None


METHOD = (
    "All cross-identity image pairs (impostor) and all same-identity pairs (genuine) of the "
    "images under --images (one folder per person), one face per image: the face whose box "
    "centre is nearest the image centre; images without a face are left out. Cosines of the "
    "L2-normalised embeddings are counted at a 0.0005 cosine grid. FMR is measured where at "
    f"least {MIN_FALSE_MATCHES} impostor pairs score at or above the threshold; above the "
    f"cosine with {TAIL_EXCEEDANCES} impostor pairs the FMR is the larger of the measurement "
    "and an exponential tail anchored there (scale: upper 95 % confidence bound of the mean "
    "excess over that cosine), which the bound cosine <= 1 makes an over-estimate of the true "
    "tail."
)


def build_calibration(impostor_cosines: npt.ArrayLike, genuine_cosines: npt.ArrayLike, *,
                      embedder: str, measured_with: str, dataset: str, command: str,
                      images: int = 0, images_without_face: int = 0,
                      min_false_matches: int = MIN_FALSE_MATCHES,
                      tail_exceedances: int = TAIL_EXCEEDANCES) -> Calibration:
    """A calibration from impostor and genuine cosines (see :data:`METHOD`)."""
    imp = np.sort(np.asarray(impostor_cosines, np.float64).ravel())
    gen = np.sort(np.asarray(genuine_cosines, np.float64).ravel())
    if len(imp) < tail_exceedances * 10 or len(gen) == 0:
        raise InvalidParameterError(
            f"too few pairs to calibrate: {len(imp)} impostor, {len(gen)} genuine "
            f"(need at least {tail_exceedances * 10} impostor pairs and one genuine pair)")
    grid = GRID.astype(np.float64)
    false_matches = (len(imp) - np.searchsorted(imp, grid, side="left")).astype(np.int64)
    false_non_matches = np.searchsorted(gen, grid, side="left").astype(np.int64)
    # The anchor: the highest grid cosine with at least ``tail_exceedances`` impostor pairs.
    anchor_i = int(np.nonzero(false_matches >= tail_exceedances)[0][-1])
    anchor = float(grid[anchor_i])
    above = imp[imp >= anchor]
    mean_excess = max(float(np.mean(above - anchor)), 1e-6)
    tail = TailFit(anchor_cosine=anchor, anchor_fmr=len(above) / len(imp),
                   scale=mean_excess * _scale_upper_factor(len(above)),
                   exceedances=len(above), mean_excess=mean_excess)
    return Calibration(
        embedder=embedder, measured_with=measured_with, dataset=dataset, method=METHOD,
        command=command, impostor_pairs=len(imp), genuine_pairs=len(gen), cosine=grid,
        false_matches=false_matches, false_non_matches=false_non_matches, tail=tail,
        min_false_matches=min_false_matches, images=images,
        images_without_face=images_without_face)


def format_risk(risk: ThresholdRisk) -> str:
    """One line for people: ``FMR 1:1 1.2e-06, expected FPIR 1.2% at 10,000 faces``; an
    extrapolated FMR is marked ``~`` and says so."""
    approx = "~" if risk.extrapolated else ""
    text = f"FMR 1:1 {approx}{risk.false_match_rate:.2g}"
    if risk.expected_fpir is not None and risk.gallery_size is not None:
        plural = "" if risk.gallery_size == 1 else "s"
        text += (f", expected FPIR {approx}{_percent(risk.expected_fpir)} at "
                 f"{risk.gallery_size:,} face{plural}")
    if risk.extrapolated:
        text += f" (extrapolated below the measurable {risk.measurable_fmr:.1g})"
    return text


def _percent(rate: float) -> str:
    p = 100.0 * rate
    return f"{p:.2g}%" if p < 10 else f"{p:.0f}%"


def _scale_upper_factor(k: int, z: float = TAIL_CONFIDENCE_Z) -> float:
    """Upper confidence factor of an exponential's mean estimated from ``k`` samples:
    ``2k / chi2_lower(2k)``, the chi-square quantile by Wilson-Hilferty."""
    nu = 2.0 * k
    q = nu * (1.0 - 2.0 / (9.0 * nu) - z * math.sqrt(2.0 / (9.0 * nu))) ** 3
    return nu / q


# -- shipped calibrations -------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _shipped(directory: Path) -> tuple[Calibration, ...]:
    if not directory.is_dir():
        return ()
    return tuple(Calibration.load(p) for p in sorted(directory.glob("*.json")))


def find_calibration(model_version: str | None = None,
                     directory: Path = CALIBRATION_DIR) -> Calibration | None:
    """The shipped calibration for ``model_version``, or ``None``.

    An exact match of the measuring pipeline wins; otherwise one of the same embedder
    (``exact`` is then False). ``None`` looks up :data:`DEFAULT_EMBEDDER`.
    """
    cals = _shipped(directory)
    if model_version is None:
        return next((c for c in cals if c.embedder == DEFAULT_EMBEDDER), None)
    for c in cals:
        if c.measured_with == model_version:
            return c
    emb = embedder_of(model_version)
    for c in cals:
        if c.embedder == emb:
            return replace(c, exact=False)
    return None


def load_calibration(model_version: str | None = None,
                     directory: Path = CALIBRATION_DIR) -> Calibration:
    """Like :func:`find_calibration`, raising :class:`CalibrationNotFoundError` if none (the
    command line's error for a model without one)."""
    cal = find_calibration(model_version, directory)
    if cal is None:
        raise CalibrationNotFoundError(
            f"no calibration for model {model_version or DEFAULT_EMBEDDER!r}; make one with "
            "`facesearch eval calibrate --images DIR --out FILE`")
    return cal
