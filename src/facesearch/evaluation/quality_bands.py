"""Risk per probe quality band, and misses per degradation, measured on lfw-dev.

A search's stated false-match rate must be that of probes like its probe: junk and degraded
faces score higher against strangers than clean ones. This module degrades lfw-dev photos the
way real probes are degraded, sorts the degraded probes into quality bands by their
recognisability (:mod:`facesearch.vision.recognisability`), and calibrates each band
(:func:`facesearch.governance.calibration.build_calibration`) against a gallery that holds
clean faces *and* junk:

- identities with at least two photos are taken in a seeded order; the first photo of each
  is its gallery face; each gallery photo also adds a junk entry to the gallery (the same
  photo shrunk so the eyes are :data:`JUNK_IOD` px apart: an unrecognisable face);
- the other photos (at most ``probes_per_person``) are probes, each under every degradation
  of :data:`DEGRADATIONS` (downscaled so the eyes are 24, 16 and 11 px apart, blurred,
  JPEG-compressed at quality 30 after downscaling, enlarged from 16 px);
- a probe's impostor scores are against every gallery entry of other identities (junk
  included), its genuine score against its own identity's clean gallery face.

:func:`fnir_by_degradation` measures, on the same embeddings, the open-set miss rate (FNIR) at
the threshold that gives FPIR 1 % per degradation: half the identities are enrolled, the other
half's probes are searches for people not enrolled.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage

from facesearch.governance.bands import BANDS, BandCalibrations, QualityBand
from facesearch.governance.calibration import build_calibration, embedder_of
from facesearch.types import Faces, FloatArray, Image
from facesearch.vision.pipeline import Pipeline

JUNK_IOD = 6.0
"""Inter-ocular distance (px) of the junk entries added to the gallery."""

Degrade = Callable[[npt.NDArray[np.uint8], float], npt.NDArray[np.uint8]]
"""(RGB pixels, the face's inter-ocular px) to degraded pixels."""


def _scale(px: npt.NDArray[np.uint8], f: float) -> npt.NDArray[np.uint8]:
    h, w = px.shape[:2]
    size = (max(8, round(w * f)), max(8, round(h * f)))
    return cv2.resize(px, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)


def to_iod(iod: float) -> Degrade:
    return lambda px, iod0: _scale(px, iod / iod0) if iod < iod0 else px


def _jpeg(px: npt.NDArray[np.uint8], quality: int) -> npt.NDArray[np.uint8]:
    buf = io.BytesIO()
    PILImage.fromarray(px).save(buf, "JPEG", quality=quality)
    return np.asarray(PILImage.open(io.BytesIO(buf.getvalue())).convert("RGB"))


DEGRADATIONS: dict[str, Degrade] = {
    "clean": lambda px, iod0: px,
    "iod24": to_iod(24),
    "iod16": to_iod(16),
    "iod11": to_iod(11),
    "blur": lambda px, iod0: cv2.GaussianBlur(px, (0, 0), iod0 / 16),
    "jpeg30": lambda px, iod0: _jpeg(to_iod(24)(px, iod0), 30),
    "enlarged": lambda px, iod0: _scale(to_iod(16)(px, iod0), 3.0),
}
"""Probe degradations: eyes 24/16/11 px apart (area downscaling), Gaussian blur of sigma
IOD/16 (about 2.5 px on lfw-dev), JPEG quality 30 at 24 px, and a 16 px face enlarged 3x
(bicubic), as a zoomed-in still of a small face is."""


def people(root: Path, count: int, seed: int = 0) -> list[list[Path]]:
    """``count`` identities with at least two photos, in a seeded order (sorted photos)."""
    dirs = sorted(p for p in root.iterdir() if p.is_dir())
    many = [sorted(d.glob("*.jpg")) for d in dirs]
    many = [m for m in many if len(m) >= 2]
    order = np.random.default_rng(seed).permutation(len(many))
    return [many[i] for i in order[:count]]


def _read(path: Path) -> npt.NDArray[np.uint8]:
    return np.asarray(PILImage.open(path).convert("RGB"))


def central_face(faces: Faces, width: int, height: int) -> int | None:
    """Index of the face whose box centre is nearest the image centre (LFW's labelled face),
    or None when there is none within 20 % of the image's longer side of the centre."""
    if not len(faces):
        return None
    c = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
    d = np.linalg.norm(c - [width / 2, height / 2], axis=1)
    i = int(np.argmin(d))
    return i if d[i] <= 0.2 * max(width, height) else None


def _central(pipeline: Pipeline, px: npt.NDArray[np.uint8]
             ) -> tuple[FloatArray, float, float] | None:
    """(embedding, recognisability, inter-ocular px) of the face nearest the image centre."""
    img = Image(np.ascontiguousarray(px), "", "RAW")
    faces = pipeline.analyze(img)
    i = central_face(faces, img.width, img.height)
    if i is None:
        return None
    assert faces.embeddings is not None and faces.quality is not None
    return (faces.embeddings[i], float(faces.quality.recognisability[i]),
            float(faces.quality.size[i]))


@dataclass(frozen=True)
class DegradedSet:
    """Embeddings of a gallery (clean faces then junk) and of degraded probes."""

    gallery: FloatArray
    gallery_person: npt.NDArray[np.int64]
    """Identity of each gallery entry (junk entries: -1 - identity, a stranger to all)."""
    probes: FloatArray
    probe_person: npt.NDArray[np.int64]
    probe_degradation: list[str]
    probe_recognisability: npt.NDArray[np.float32]
    failed: dict[str, int]
    """Probes without a face found, per degradation."""


def embed_degraded(pipeline: Pipeline, persons: Sequence[Sequence[Path]], *,
                   probes_per_person: int = 2,
                   degradations: Sequence[str] = tuple(DEGRADATIONS)) -> DegradedSet:
    gal, gal_p, pv, pp, pd, pr = [], [], [], [], [], []
    failed = dict.fromkeys(degradations, 0)
    for k, photos in enumerate(persons):
        first = _read(photos[0])
        g = _central(pipeline, first)
        if g is None:
            continue
        gal.append(g[0])
        gal_p.append(k)
        junk = _central(pipeline, to_iod(JUNK_IOD)(first, g[2]))
        if junk is not None:
            gal.append(junk[0])
            gal_p.append(-1 - k)
        for path in photos[1:1 + probes_per_person]:
            px = _read(path)
            ref = _central(pipeline, px)
            if ref is None:
                continue
            for name in degradations:
                got = _central(pipeline, DEGRADATIONS[name](px, ref[2]))
                if got is None:
                    failed[name] += 1
                    continue
                pv.append(got[0])
                pp.append(k)
                pd.append(name)
                pr.append(got[1])
    return DegradedSet(np.array(gal, np.float32), np.array(gal_p, np.int64),
                       np.array(pv, np.float32).reshape(-1, pipeline.embedder.dim),
                       np.array(pp, np.int64), pd, np.array(pr, np.float32), failed)


def band_of(recognisability: npt.ArrayLike, bands: Sequence[QualityBand] = BANDS
            ) -> npt.NDArray[np.int64]:
    """Index into ``bands`` (highest first) of each recognisability."""
    r = np.nan_to_num(np.asarray(recognisability, np.float64), nan=100.0)
    out = np.full(r.shape, len(bands) - 1, np.int64)
    for i in reversed(range(len(bands))):
        out[r >= bands[i].min_recognisability] = i
    return out


def calibrate_bands(data: DegradedSet, *, embedder: str, measured_with: str, dataset: str,
                    command: str, bands: Sequence[QualityBand] = BANDS,
                    tail_exceedances: int = 200) -> BandCalibrations:
    """One calibration per quality band (see the module's docstring); a band with fewer
    than ``10 * tail_exceedances`` impostor pairs gets none (the next better band's is used
    for it, see :class:`BandCalibrations`)."""
    sims = data.probes @ data.gallery.T
    same = data.probe_person[:, None] == data.gallery_person[None, :]
    stranger = (data.probe_person[:, None] != data.gallery_person[None, :]) & (
        data.probe_person[:, None] != -1 - data.gallery_person[None, :])
    which = band_of(data.probe_recognisability, bands)
    cals = []
    for i, band in enumerate(bands):
        rows = which == i
        imp = sims[rows][stranger[rows]]
        gen = sims[rows][same[rows]]
        if len(imp) < 10 * tail_exceedances or not len(gen):
            cals.append(None)
            continue
        cals.append(build_calibration(
            imp, gen, embedder=embedder, measured_with=measured_with, dataset=dataset,
            command=command, images=int(rows.sum()), tail_exceedances=tail_exceedances))
    return BandCalibrations(embedder_of(measured_with), tuple(bands), tuple(cals), command)


@dataclass(frozen=True)
class DegradationResult:
    degradation: str
    probes: int
    failed_to_detect: int
    threshold: float
    """Cosine at which the non-mated searches of this degradation give FPIR 1 %."""
    fnir: float
    median_recognisability: float


def fnir_by_degradation(data: DegradedSet, fpir: float = 0.01) -> list[DegradationResult]:
    """Open-set FNIR at FPIR ``fpir`` per degradation: even identities enrolled (their clean
    gallery faces and the junk), odd identities' probes searched as people not enrolled. A
    failure to detect counts as a miss."""
    owner = np.where(data.gallery_person < 0, -1 - data.gallery_person, data.gallery_person)
    enrolled = owner % 2 == 0  # an enrolled identity's clean face and its junk entry
    gal, gal_p = data.gallery[enrolled], data.gallery_person[enrolled]
    out = []
    for name in dict.fromkeys(data.probe_degradation):
        rows = np.array([d == name for d in data.probe_degradation])
        s = data.probes[rows] @ gal.T
        person = data.probe_person[rows]
        mated = person % 2 == 0
        best_non = s[~mated].max(1)
        thr = float(np.quantile(best_non, 1.0 - fpir)) if len(best_non) else 1.0
        mate = np.array([s[i][gal_p == person[i]].max(initial=-1.0)
                         for i in np.flatnonzero(mated)])
        nfail = data.failed.get(name, 0)
        # Failures are split between mated and non-mated probes like the found ones.
        mated_fail = nfail * (mated.sum() / max(len(mated), 1))
        miss = float((mate < thr).sum() + mated_fail) / max(mated.sum() + mated_fail, 1)
        out.append(DegradationResult(name, int(rows.sum()), nfail, thr, miss,
                                     float(np.median(data.probe_recognisability[rows]))))
    return out
