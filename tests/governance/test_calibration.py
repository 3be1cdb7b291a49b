"""Calibration: FMR / FNMR per similarity, the fitted tail, FPIR for a gallery, shipped file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from facesearch.errors import InvalidParameterError
from facesearch.evaluation.calibration_data import pair_score_sets
from facesearch.evaluation.datasets import images_root, labelled_images
from facesearch.evaluation.embeddings import embed_images
from facesearch.governance import bands
from facesearch.governance import calibration as cal
from facesearch.governance.policy import CollectionPolicy
from facesearch.service import FaceSearch
from facesearch.types import Caller
from facesearch.vision import similarity as sim

from ..clirun import CliResult, run_cli
from ..conftest import LFW, face


def _normal_sf(x: float, mean: float, std: float) -> float:
    return 0.5 * math.erfc((x - mean) / (std * math.sqrt(2.0)))


IMP_MEAN, IMP_STD = 0.55, 0.06


@pytest.fixture(scope="module")
def synthetic() -> cal.Calibration:
    """Impostor cosines ~ N(0.55, 0.06) (400k pairs), genuine ~ N(0.95, 0.02) (2k pairs)."""
    rng = np.random.default_rng(7)
    imp = np.clip(rng.normal(IMP_MEAN, IMP_STD, 400_000), -1, 1)
    gen = np.clip(rng.normal(0.95, 0.02, 2_000), -1, 1)
    # On dlib's ResNet's similarity scale (the one these cosines resemble).
    return cal.build_calibration(imp, gen, embedder="dlib-resnet-v1",
                                 measured_with="test/dlib-resnet-v1", dataset="synthetic",
                                 command="test")


def test_fmr_falls_and_fnmr_rises_with_similarity(synthetic: cal.Calibration) -> None:
    s = np.linspace(0.0, 100.0, 2001)
    fmr = np.array([synthetic.false_match_rate(v) for v in s])
    fnmr = np.array([synthetic.false_non_match_rate(v) for v in s])
    assert np.all(np.diff(fmr) <= 0) and np.all(fmr > 0) and fmr[0] > 0.1
    assert np.all(np.diff(fnmr) >= 0) and fnmr[0] == 0.0 and fnmr[-1] > 0.9


def test_measured_region_equals_counts(synthetic: cal.Calibration) -> None:
    i = int(np.searchsorted(synthetic.cosine, 0.65))
    c = float(synthetic.cosine[i])
    assert synthetic.fmr_at_cosine(c) == pytest.approx(
        synthetic.false_matches[i] / synthetic.impostor_pairs)
    assert synthetic.fmr_at_cosine(c) == pytest.approx(_normal_sf(c, IMP_MEAN, IMP_STD), rel=0.1)
    assert not synthetic.extrapolated(float(sim.to_similarity(c, synthetic.embedder)))


@pytest.mark.parametrize("cosine", [0.80, 0.85, 0.9, 0.95, 1.0])
def test_tail_overstates_a_gaussian_tail(synthetic: cal.Calibration, cosine: float) -> None:
    # Beyond the measured range the fit must not promise a lower FMR than the true one.
    assert synthetic.extrapolated(float(sim.to_similarity(cosine, synthetic.embedder)))
    assert float(synthetic.fmr_at_cosine(cosine)) >= _normal_sf(cosine, IMP_MEAN, IMP_STD)


@pytest.mark.parametrize("target", [0.1, 1e-2, 1e-3, 1e-5, 1e-7, 1e-9])
def test_threshold_for_fmr_is_the_inverse(synthetic: cal.Calibration, target: float) -> None:
    t = synthetic.threshold_for_fmr(target)
    assert round(t, 4) == t
    assert synthetic.false_match_rate(t) <= target
    assert synthetic.false_match_rate(t - cal.RESOLUTION) > target


@pytest.mark.parametrize(("fpir", "n"), [(0.01, 1_000), (0.001, 300_000), (0.05, 10)])
def test_threshold_for_fpir_is_the_inverse(synthetic: cal.Calibration, fpir: float,
                                           n: int) -> None:
    t = synthetic.threshold_for_fpir(fpir, n)
    assert synthetic.expected_fpir(t, n) <= fpir < synthetic.expected_fpir(t - cal.RESOLUTION, n)


@pytest.mark.parametrize(("fmr", "n", "fpir"), [
    (1e-6, 1, 1e-6),
    (1e-6, 1_000_000, 1 - (1 - 1e-6) ** 1_000_000),
    (0.0, 300_000, 0.0),
    (1.0, 5, 1.0),
    (0.5, 2, 0.75),
])
def test_fpir_formula(fmr: float, n: int, fpir: float) -> None:
    assert cal.fpir_for_fmr(fmr, n) == pytest.approx(fpir, rel=1e-9, abs=1e-15)


def test_fmr_for_fpir_inverts_the_formula() -> None:
    need = cal.fmr_for_fpir(0.001, 300_000)
    assert need == pytest.approx(3.335e-9, rel=1e-3)
    assert cal.fpir_for_fmr(need, 300_000) == pytest.approx(0.001, rel=1e-9)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 2.0])
def test_bad_rates_are_refused(synthetic: cal.Calibration, bad: float) -> None:
    with pytest.raises(InvalidParameterError):
        synthetic.threshold_for_fpir(bad, 10)


def test_answer_says_when_it_extrapolates(synthetic: cal.Calibration) -> None:
    a = synthetic.answer(0.001, 300_000)
    assert a.risk.extrapolated and "EXTRAPOLATED" in a.note
    assert a.risk.expected_fpir is not None and a.risk.expected_fpir <= 0.001
    easy = synthetic.answer(0.5, 10)
    assert not easy.risk.extrapolated and "measured" in easy.note
    assert "~" in cal.format_risk(a.risk) and "300,000 faces" in cal.format_risk(a.risk)


def test_save_load_round_trip(synthetic: cal.Calibration, tmp_path: Path) -> None:
    path = tmp_path / "cal" / "synthetic.json"
    synthetic.save(path)
    back = cal.Calibration.load(path)
    for s in (50.0, 90.0, 99.0, 99.99):
        assert back.false_match_rate(s) == synthetic.false_match_rate(s)
        assert back.false_non_match_rate(s) == synthetic.false_non_match_rate(s)
    exact = cal.find_calibration("test/dlib-resnet-v1", tmp_path / "cal")
    assert exact is not None and exact.exact
    other = cal.find_calibration("other-detector/dlib-resnet-v1", tmp_path / "cal")
    assert other is not None and not other.exact
    assert cal.find_calibration("x/unknown-embedder", tmp_path / "cal") is None


def test_shipped_calibration_of_the_default_model() -> None:
    c = cal.load_calibration()
    assert c.embedder == cal.DEFAULT_EMBEDDER and c.impostor_pairs > 10_000_000
    assert c.measurable_fmr < 1e-6
    s = np.linspace(50.0, 100.0, 501)
    fmr = np.array([c.false_match_rate(v) for v in s])
    assert np.all(np.diff(fmr) <= 0)
    t = c.threshold_for_fpir(0.001, 300_000)
    assert c.expected_fpir(t, 300_000) <= 0.001
    assert c.risk(t, 300_000).extrapolated  # lfw-dev cannot measure 3e-9
    with pytest.raises(cal.CalibrationNotFoundError):
        cal.load_calibration("x/unknown-embedder")


# -- command line -----------------------------------------------------------------------

def _cli(home: Path, *args: str, ok: bool = True) -> CliResult:
    proc = run_cli(*args, env={"FACESEARCH_HOME": str(home), "COLUMNS": "200"})
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_cli_threshold_answers_the_operators_question(home: Path) -> None:
    d = json.loads(_cli(home, "eval", "threshold", "--fpir", "0.001", "--gallery", "300000",
                        "--json").stdout)
    assert d["required_fmr"] == pytest.approx(3.335e-9, rel=1e-3)
    assert d["expected_fpir"] <= 0.001 and d["extrapolated"] is True
    assert "EXTRAPOLATED" in d["note"]
    assert d["threshold"] == cal.load_calibration().threshold_for_fpir(0.001, 300_000)
    refused = _cli(home, "eval", "threshold", "--fpir", "0.001", "--gallery", "300000",
                   "--measured-only", ok=False)
    assert refused.returncode == 1 and "lowest FMR the calibration measures" in refused.stderr
    r = json.loads(_cli(home, "eval", "threshold", "--similarity", "80", "--gallery", "1000",
                        "--json").stdout)
    assert r["false_match_rate"] == pytest.approx(cal.load_calibration().false_match_rate(80))
    assert r["expected_fpir"] == pytest.approx(cal.load_calibration().expected_fpir(80, 1000))


def test_cli_search_shows_the_thresholds_risk(home: Path) -> None:
    _cli(home, "collection", "create", "risk")
    _cli(home, "index", "risk", str(face("obama.jpg")), str(face("biden.jpg")), "--workers", "1")
    d = json.loads(_cli(home, "search", "risk", str(face("obama2.jpg")), "--json").stdout)
    shipped = cal.load_calibration()
    assert d["false_match_rate"] == pytest.approx(shipped.false_match_rate(d["threshold"]),
                                                  rel=1e-2)
    assert d["expected_fpir"] == pytest.approx(shipped.expected_fpir(d["threshold"], 2),
                                               rel=1e-2)
    assert d["fmr_extrapolated"] is False
    table = _cli(home, "search", "risk", str(face("obama2.jpg"))).stdout
    assert "FMR 1:1" in table and "expected FPIR" in table
    c = json.loads(_cli(home, "compare", str(face("obama.jpg")), str(face("biden.jpg")),
                        "--json").stdout)
    assert c["false_match_rate"] == pytest.approx(shipped.false_match_rate(80), rel=1e-2)


# -- the shipped default calibration, re-derived, and what it means on real photos ---------

# Every identity of the shipped file's highest impostor pairs, plus every 8th other person
# with two or more images: ~400 images, embedded afresh (no cache) by the default pipeline.
_TOP_NAMES = ("Andrew_Caldecott", "Andrew_Gilligan", "Choi_Sung-hong", "Sung_Hong_Choi",
              "Joseph_Blatter", "Sepp_Blatter", "Abdullah_Gul", "Recep_Tayyip_Erdogan",
              "Hasan_Wirayuda", "Hassan_Wirajuda")


@pytest.mark.slow
def test_shipped_default_calibration_recomputed_from_lfw_dev() -> None:
    shipped = cal.load_calibration()
    assert shipped.measured_with == "blazeface+onet/sface-2021dec"
    people = labelled_images(images_root(LFW))
    multi = sorted(n for n, ps in people.items() if len(ps) >= 2 and n not in _TOP_NAMES)
    names = [*_TOP_NAMES, *multi[::8]]
    paths = [p for n in names for p in people[n]]
    labels = [n for n in names for _ in people[n]]
    emb = embed_images(paths, "fast", workers=1, cache_dir=None)
    assert emb.model_version == shipped.measured_with and emb.found.all()
    imp, gen = pair_score_sets(emb, labels)
    # The subset's pairs are pairs of the full set: never more counts at any grid cosine.
    sub = cal.build_calibration(imp, gen, embedder=shipped.embedder, measured_with="sub",
                                dataset="sub", command="test")
    assert np.all(sub.false_matches <= shipped.false_matches)
    # The top of the impostor tail is made of these identities: counts equal exactly there,
    # and the highest pairs are the ones the file names, at the same cosines.
    top = shipped.cosine >= 0.75
    assert shipped.false_matches[top][0] >= 5
    assert np.array_equal(sub.false_matches[top], shipped.false_matches[top])
    noted = [float(x.split()[0]) for x in shipped.notes[0].split(": ", 1)[1].split("; ")]
    assert np.allclose(np.sort(imp)[::-1][:len(noted)], noted, atol=1e-4)
    # Genuine pairs: the subset's misses at the default threshold and at the floor.
    c80 = float(sim.to_cosine(80.0))
    assert np.mean(gen < c80) <= 0.03
    assert np.sum(gen < c80) <= shipped.false_non_matches[np.searchsorted(shipped.cosine,
                                                                          c80)]
    # FMR at 80 on ~70,000 impostor pairs of this subset, within a factor 3 of the file's.
    fmr80 = float(np.mean(imp >= c80))
    assert shipped.false_match_rate(80.0) / 3 <= fmr80 <= shipped.false_match_rate(80.0) * 3


ANALYST = Caller("key-1", role="searcher", purpose="robbery investigation", case_ref="2026-0042")


def test_real_photos_at_the_default_and_at_the_law_enforcement_floor(fs: FaceSearch) -> None:
    fs.collections.create("bookings", policy=CollectionPolicy(law_enforcement=True))
    fs.collections.index_image("bookings", face("obama.jpg"), external_id="obama")
    fs.collections.index_image("bookings", face("biden.jpg"), external_id="biden")
    floor = fs.collections.describe("bookings").policy
    assert floor.floor_fmr is not None and floor.floor_fmr <= 1e-6
    assert floor.threshold_floor == cal.load_calibration().threshold_for_fmr(1e-6)
    res = fs.search.by_image("bookings", face("obama2.jpg"), caller=ANALYST)
    assert res.threshold == floor.threshold_floor
    assert [m.face.external_id for m in res.results[0].matches] == ["obama"]
    res = fs.search.by_image("bookings", face("biden.jpg"), caller=ANALYST)
    assert [m.face.external_id for m in res.results[0].matches] == ["biden"]
    # 1:1 at the default 80 and at the floor: same person matches, different people do not.
    same = fs.search.compare(face("obama.jpg"), face("obama2.jpg"))
    assert same.match and same.threshold == sim.DEFAULT_THRESHOLD
    assert same.similarity >= floor.threshold_floor
    other = fs.search.compare(face("obama.jpg"), face("biden.jpg"))
    assert not other.match and other.similarity < 50
    assert not fs.search.compare(face("obama2.jpg"), face("biden.jpg"),
                                      threshold=floor.threshold_floor).match


def test_documented_thresholds_match_the_shipped_calibration() -> None:
    """docs/api.md tells users porting Rekognition code what 70, 80 and 99 mean here; the
    figures must be the shipped calibration's (FMR and FPIR to 2 significant digits, FNMR in
    percent to 2 decimals)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    c = cal.load_calibration()
    for s in (70, 80, 99):
        row = next(line for line in doc.splitlines() if line.startswith(f"| {s} | AWS"))
        cells = [x.strip() for x in row.strip("|").split("|")]
        r = c.risk(s, None)
        want = [f"{r.false_match_rate:.2g}", f"{100 * r.false_non_match_rate:.2f} %",
                *(f"{c.expected_fpir(s, n):.2g}" for n in (1_000, 10_000, 100_000, 1_000_000))]
        assert cells[2:] == want, (s, cells, want)


@pytest.mark.parametrize("model_version", [
    "blazeface+onet/sface-2021dec",
    "blazeface+onet/dlib-resnet-v1",
    "blazeface+onet/dlib-resnet-v1-int8w7",  # FACESEARCH_PRECISION=int8
])
def test_every_selectable_embedder_has_its_own_calibration(model_version: str) -> None:
    found = cal.find_calibration(model_version)
    assert found is not None and found.exact and found.measured_with == model_version


@pytest.mark.slow
def test_quality_band_calibration_is_recomputed_from_lfw_dev(pipeline) -> None:  # noqa: ANN001
    """The shipped per-band calibration (bench/quality_bands.py, 400 identities) is
    reproduced by a subset of the same identities (150, two probes each, ~1 min): the same
    bands, and at similarities 60 and 70 (FMR about 5 % and 1 %, measured with many false
    matches) the same FMR per band within a factor of 1.5 for every band the subset has
    2,000 impostor pairs of; the poor bands' FMR is not below the high band's."""
    from facesearch.evaluation.quality_bands import calibrate_bands, embed_degraded, people

    shipped = bands.find_band_calibrations(pipeline.model_version)
    assert shipped is not None, "no per-band calibration ships for the default model"
    assert shipped.bands == bands.BANDS
    data = embed_degraded(pipeline, people(LFW / "images", 150), probes_per_person=2)
    again = calibrate_bands(data, embedder=pipeline.embedder.name,
                            measured_with=pipeline.model_version, dataset="lfw-dev subset",
                            command="test")
    compared = []
    for band, mine, theirs in zip(again.bands, again.calibrations, shipped.calibrations,
                                  strict=True):
        if mine is None or theirs is None:
            continue
        for similarity in (60.0, 70.0):
            a, b = mine.false_match_rate(similarity), theirs.false_match_rate(similarity)
            assert 1 / 1.5 <= a / b <= 1.5, (
                f"band {band.name} at {similarity}: FMR {a:.3g} vs shipped {b:.3g}")
        compared.append(band.name)
    assert len(compared) >= 3, compared
    high = shipped.calibration("high")
    for poor in ("low", "unrecognisable"):
        c = shipped.calibration(poor)
        assert high is not None and c is not None
        assert c.false_match_rate(80.0) >= high.false_match_rate(80.0)
