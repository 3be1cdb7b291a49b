"""Searches and comparisons as shown: candidates, the probes searched, and what a threshold
means (the risk fields of an answer, and the calibration's own answers)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from facesearch.governance.calibration import ThresholdRisk
from facesearch.services.search import Comparison, SearchResult
from facesearch.shapes.base import Out, Similarity
from facesearch.shapes.faces import DetectedFaceOut, FaceOut


def _three_digits(v: Any) -> Any:
    return None if v is None else float(f"{v:.3g}")


Rate = Annotated[float | None, BeforeValidator(_three_digits)]
"""A rate (fraction) to three significant digits."""


class MatchOut(Out):
    """A candidate of a search, from a :class:`~facesearch.services.search.Match`: the stored
    face, its similarity (0-100) and the quality band of the stored face."""

    face: FaceOut
    similarity: Similarity
    enrolled_quality_band: str | None = Field(
        None, description="quality band of the stored face (high, medium, low, "
                          "unrecognisable), from its recognisability; None: not measured")
    enrolled_poor_quality: bool = Field(
        False, description="the stored face is of poor quality (band low or unrecognisable): "
                           "the similarity overstates the evidence")


class RiskOut(Out):
    """What the threshold of a search or comparison means, as fields of its answer (from a
    :class:`~facesearch.governance.calibration.ThresholdRisk`; all None without one): the
    1:1 false match rate, the expected false-positive identification rate for the
    collection's size, and whether the rate is extrapolated beyond the calibration data."""

    false_match_rate: Rate = Field(
        None, description="1:1 false-match rate at the threshold (calibrated; None: no "
                          "calibration for this model)")
    expected_fpir: Rate = Field(
        None, description="expected false-positive identification rate at the threshold for "
                          "the collection's current size")
    fmr_extrapolated: bool | None = Field(
        None, validation_alias="extrapolated",
        description="the false-match rate lies below what the calibration data measures: it "
                    "comes from a fitted tail")

    @classmethod
    def fields(cls, r: ThresholdRisk | None) -> dict[str, Any]:
        """The risk fields of an answer whose threshold means ``r``."""
        return RiskOut.model_validate(r if r is not None else {}).model_dump()


class SearchRiskOut(RiskOut):
    """A search's ``risk`` object: :class:`RiskOut` from the calibration of the probe's
    quality band, with the band and the probe's recognisability."""

    quality_band: str | None = Field(
        None, description="the probe's quality band (high, medium, low, unrecognisable) whose "
                          "calibration the rates come from; None: the probe's quality is not "
                          "known (the all-pairs calibration)")
    recognisability: float | None = Field(
        None, description="the probe face's recognisability (0-100; the worst of the probe "
                          "faces searched) that chose the band")

    @classmethod
    def of(cls, r: ThresholdRisk | None) -> SearchRiskOut:
        return cls.model_validate(r if r is not None else {})


class ProbeOut(Out):
    face: DetectedFaceOut
    matches: list[MatchOut]


class SearchOut(RiskOut):
    search_id: str
    label: str
    threshold: float
    model_version: str
    collection_size: int
    width: int
    height: int
    probes: list[ProbeOut]
    risk: SearchRiskOut = Field(
        description="what the threshold means for this probe: the rates of its quality band")
    warnings: list[str] = Field(
        default_factory=list, description="what a reviewer must know: a poor probe, "
                                          "candidates from poor enrolled faces")

    @classmethod
    def of(cls, res: SearchResult) -> SearchOut:
        """A search by image: each probe face searched with its candidates."""
        return cls(
            search_id=res.search_id, label=res.label, threshold=res.threshold,
            **RiskOut.fields(res.risk), risk=SearchRiskOut.of(res.risk),
            warnings=res.warnings, model_version=res.model_version,
            collection_size=res.collection_size, width=res.width, height=res.height,
            probes=[ProbeOut(face=DetectedFaceOut.model_validate(res.faces.view(p.face_index)),
                             matches=[MatchOut.model_validate(m) for m in p.matches])
                    for p in res.results])


class FaceSearchOut(RiskOut):
    face_id: str
    search_id: str
    threshold: float
    matches: list[MatchOut]
    risk: SearchRiskOut = Field(
        description="what the threshold means for the stored face's quality band")
    warnings: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, face_id: str, res: SearchResult) -> FaceSearchOut:
        """A search by a stored face (``face_id``)."""
        return cls(face_id=face_id, search_id=res.search_id, threshold=res.threshold,
                   **RiskOut.fields(res.risk), risk=SearchRiskOut.of(res.risk),
                   warnings=res.warnings,
                   matches=[MatchOut.model_validate(m) for m in res.matches])


class ComparedFaceOut(Out):
    face: DetectedFaceOut
    similarity: Similarity


class CompareOut(RiskOut):
    similarity: Similarity
    match: bool
    threshold: float
    source: DetectedFaceOut
    target_faces: list[ComparedFaceOut]

    @classmethod
    def of(cls, c: Comparison) -> CompareOut:
        """A 1:1 comparison: the source's largest face against each face of the target."""
        return cls(similarity=c.similarity, match=c.match, threshold=c.threshold,
                   **RiskOut.fields(c.risk),
                   source=DetectedFaceOut.model_validate(c.source.view(0)),
                   target_faces=[ComparedFaceOut(
                       face=DetectedFaceOut.model_validate(c.target.view(i)), similarity=s)
                       for i, s in enumerate(c.similarities)])


class ThresholdRiskOut(Out):
    """What a similarity threshold means, by the calibration (``/v1/calibration/risk``), from
    a :class:`~facesearch.governance.calibration.ThresholdRisk`."""

    similarity: float
    false_match_rate: float = Field(description="1:1: fraction of different-person pairs at or "
                                                "above the threshold")
    false_non_match_rate: float = Field(description="1:1: fraction of same-person pairs below")
    gallery_size: int | None
    expected_fpir: float | None = Field(description="expected fraction of searches for someone "
                                                    "not enrolled that return a candidate")
    extrapolated: bool = Field(description="the FMR is below what the calibration data "
                                           "measures and comes from a fitted tail")
    measured_with: str


class AnswerOut(Out):
    """Which threshold gives a target FPIR on a gallery, from a
    :class:`~facesearch.governance.calibration.ThresholdAnswer`."""

    target_fpir: float
    gallery_size: int
    required_fmr: float
    threshold: ThresholdRiskOut = Field(validation_alias="risk")
    note: str
