"""Risk per probe quality band: the same similarity means a higher false-match rate for a
poorly recognisable probe, so a search states the risk of its probe's band.

A probe's recognisability (0-100, :mod:`facesearch.vision.recognisability`) puts it in one of
:data:`BANDS`; :class:`BandCalibrations` holds one :class:`~facesearch.governance.calibration.
Calibration` per band of one embedder (``facesearch/data/calibration/bands/*.json``, made by
``bench/quality_bands.py --write``, with :mod:`facesearch.evaluation.quality_bands`).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from facesearch.errors import InvalidParameterError
from facesearch.governance.calibration import (
    CALIBRATION_DIR,
    DEFAULT_EMBEDDER,
    FORMAT,
    Calibration,
    CalibrationNotFoundError,
    ThresholdRisk,
    embedder_of,
)


@dataclass(frozen=True)
class QualityBand:
    """Probes whose recognisability is at least ``min_recognisability`` (and below the next
    better band's) belong to band ``name``."""

    name: str
    min_recognisability: float


BANDS: tuple[QualityBand, ...] = (
    QualityBand("high", 60.0),
    QualityBand("medium", 40.0),
    QualityBand("low", 20.0),
    QualityBand("unrecognisable", 0.0),
)
"""The quality bands, best first (edges from the figures in docs/accuracy.md, "Risk per
quality band")."""

BANDS_DIR = CALIBRATION_DIR / "bands"


def quality_band(recognisability: float | None, bands: Sequence[QualityBand] = BANDS
                 ) -> QualityBand | None:
    """The band of a recognisability (None when it is unknown)."""
    if recognisability is None or not math.isfinite(recognisability):
        return None
    for b in bands:
        if recognisability >= b.min_recognisability:
            return b
    return bands[-1]


@dataclass(frozen=True, eq=False)
class BandCalibrations:
    """One calibration per quality band of one embedder (``None`` where the band had too
    few probes to measure: it then uses the nearest better band's)."""

    embedder: str
    bands: tuple[QualityBand, ...]
    calibrations: tuple[Calibration | None, ...]
    command: str

    def calibration(self, band: str) -> Calibration | None:
        names = [b.name for b in self.bands]
        i = names.index(band)
        for j in range(i, -1, -1):
            if self.calibrations[j] is not None:
                return self.calibrations[j]
        return None

    def risk(self, base: Calibration, similarity: float, gallery_size: int | None,
             recognisability: float | None) -> ThresholdRisk:
        """What ``similarity`` means for a probe of this recognisability: the larger of the
        all-pairs calibration's FMR and its band's (the band's data set is smaller and its
        gallery holds junk; taking the larger keeps the statement conservative)."""
        risk = base.risk(similarity, gallery_size)
        band = quality_band(recognisability, self.bands)
        if band is None:
            return risk
        cal = self.calibration(band.name)
        if cal is not None:
            other = cal.risk(similarity, gallery_size)
            if other.false_match_rate > risk.false_match_rate:
                risk = replace(other, measured_with=f"{other.measured_with} "
                                                    f"(quality band {band.name})")
        return replace(risk, quality_band=band.name,
                       recognisability=None if recognisability is None
                       else round(float(recognisability), 1))

    def to_json(self) -> dict[str, object]:
        return {"format": FORMAT, "embedder": self.embedder, "command": self.command,
                "bands": [{"name": b.name, "min_recognisability": b.min_recognisability,
                           "calibration": None if c is None else c.to_json()}
                          for b, c in zip(self.bands, self.calibrations, strict=True)]}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> BandCalibrations:
        if d.get("format") != FORMAT:
            raise InvalidParameterError(f"unsupported calibration format {d.get('format')!r}")
        raw = d["bands"]
        assert isinstance(raw, list)
        return cls(str(d["embedder"]),
                   tuple(QualityBand(str(b["name"]), float(b["min_recognisability"]))
                         for b in raw),
                   tuple(None if b["calibration"] is None
                         else Calibration.from_json(b["calibration"]) for b in raw),
                   str(d["command"]))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> BandCalibrations:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CalibrationNotFoundError(f"cannot read calibration {path}: {exc}") from None


@functools.lru_cache(maxsize=16)
def _shipped_bands(directory: Path) -> tuple[BandCalibrations, ...]:
    if not directory.is_dir():
        return ()
    return tuple(BandCalibrations.load(p) for p in sorted(directory.glob("*.json")))


def find_band_calibrations(model_version: str | None = None, directory: Path = BANDS_DIR
                           ) -> BandCalibrations | None:
    """The shipped per-band calibrations of ``model_version``'s embedder (its ``+flip``
    variant uses the plain one's), or None."""
    emb = embedder_of(model_version) if model_version else DEFAULT_EMBEDDER
    found = {b.embedder: b for b in _shipped_bands(directory)}
    return found.get(emb) or found.get(emb.removesuffix("+flip"))
