"""The evaluation harness on small subsets whose answers are known by construction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from facesearch.config import Settings
from facesearch.errors import InvalidParameterError
from facesearch.evaluation.calibration_data import pair_score_sets
from facesearch.evaluation.datasets import labelled_images, lfw_image, read_pairs
from facesearch.evaluation.embeddings import Embeddings, FaceRule, Status, embed_images, pick_face
from facesearch.evaluation.identification import IdentificationSplit, identify, split_identification
from facesearch.evaluation.verification import best_threshold, pair_scores, tar_at_far, verify
from facesearch.vision import similarity as sim

from ..clirun import CliResult, run_cli
from ..conftest import LFW

PEOPLE = {
    "Aaron_Peirsol": [1, 2, 3, 4],
    "Abdullah_Gul": [13, 14, 16],
    "Adel_Al-Jubeir": [1, 3],
    "Abdul_Rahman": [1],
    "Adam_Kennedy": [1],
    "Adriana_Perez_Navarro": [1],
}
NOBODY = "Nobody"  # one uniform grey image: no face


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled folder (links to lfw-dev images) plus one person whose image has no face."""
    root = tmp_path_factory.mktemp("lfw") / "images"
    for name, numbers in PEOPLE.items():
        (root / name).mkdir(parents=True)
        for n in numbers:
            src = LFW / "images" / lfw_image(name, n)
            if not src.is_file():
                pytest.fail(f"test data missing: {src}", pytrace=False)
            (root / lfw_image(name, n)).symlink_to(src)
    (root / NOBODY).mkdir()
    PILImage.new("RGB", (250, 250), (128, 128, 128)).save(root / lfw_image(NOBODY, 1))
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def emb(folder: Path, cache: Path) -> Embeddings:
    files = [f for fs in labelled_images(folder).values() for f in fs]
    return embed_images(files, Settings().pipeline, workers=1, cache_dir=cache)


def write_pairs(path: Path, header: str, lines: list[tuple[object, ...]]) -> Path:
    path.write_text(header + "\n" + "".join("\t".join(map(str, x)) + "\n" for x in lines))
    return path


# -- pairs files ------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "folds", "fold"), [
    ("2", 1, [0, 0, 0, 0]),
    ("2\t1", 2, [0, 0, 1, 1]),
])
def test_read_pairs_header_and_folds(tmp_path: Path, header: str, folds: int,
                                     fold: list[int]) -> None:
    lines: list[tuple[object, ...]] = [("A", 1, 2), ("B", 3, "C", 4), ("D", 1, 12),
                                       ("E", 5, "F", 6)]
    if folds == 1:
        lines = [lines[0], lines[2], lines[1], lines[3]]
    p = read_pairs(write_pairs(tmp_path / "p.txt", header, lines))
    assert p.folds == folds and list(p.fold) == fold and len(p) == 4
    assert p.left[0] == "A/A_0001.jpg" and p.right[0] == "A/A_0002.jpg"
    assert list(p.same) == ([True, True, False, False] if folds == 1 else
                            [True, False, True, False])


@pytest.mark.parametrize(("header", "lines"), [
    ("3", [("A", 1, 2)]),                       # fewer pairs than promised
    ("x", [("A", 1, 2), ("B", 1, "C", 1)]),     # no count
    ("1", [("A", 1), ("B", 1, "C", 1)]),        # not a pair
])
def test_read_pairs_refuses_bad_files(tmp_path: Path, header: str,
                                      lines: list[tuple[object, ...]]) -> None:
    with pytest.raises(InvalidParameterError):
        read_pairs(write_pairs(tmp_path / "bad.txt", header, lines))


# -- threshold and rate arithmetic ------------------------------------------------------

@pytest.mark.parametrize(("scores", "same", "expected"), [
    ([1, 2, 3, 4], [False, False, True, True], 2.5),
    ([10, 20, 30], [True, True, True], 10 - 1e-6),      # everything same: below all
    ([10, 20, 30], [False, False, False], 30 + 1e-6),   # everything different: above all
    ([1, 2, 3, 4, 5, 6], [False, True, False, True, True, True], 1.5),  # tie: the lowest
])
def test_best_threshold(scores: list[float], same: list[bool], expected: float) -> None:
    assert best_threshold(scores, same) == pytest.approx(expected)


def test_tar_at_far_needs_enough_impostors() -> None:
    assert tar_at_far([1.0, 2.0], np.zeros(999), 1e-3) is None
    impostor = np.arange(1000, dtype=float)  # 0..999: FAR 1e-3 allows one false accept
    genuine = np.array([998.5, 999.0, 1000.0, 5.0])
    tar, t = tar_at_far(genuine, impostor, 1e-3) or (None, None)
    assert t is not None and 998 < t <= 999 and tar == 0.75


# -- verification on real images --------------------------------------------------------

def _lfw_pairs(tmp: Path, extra: list[tuple[object, ...]] = ()) -> Path:  # type: ignore[assignment]
    """Two folds: identical-image matched pairs, different-people mismatched pairs."""
    matched = [("Aaron_Peirsol", 1, 1), ("Aaron_Peirsol", 2, 2), ("Abdullah_Gul", 13, 13),
               ("Adel_Al-Jubeir", 3, 3)]
    mismatched = [("Aaron_Peirsol", 1, "Abdullah_Gul", 14), ("Adam_Kennedy", 1, "Abdul_Rahman", 1),
                  ("Adel_Al-Jubeir", 1, "Adriana_Perez_Navarro", 1),
                  ("Abdullah_Gul", 16, "Adam_Kennedy", 1)]
    lines = [*matched[:2], *mismatched[:2], *matched[2:], *mismatched[2:]]
    return write_pairs(tmp / "pairs.txt", "2\t2", lines)


def test_identical_images_match_at_100(folder: Path, emb: Embeddings,
                                       tmp_path: Path) -> None:
    pairs = read_pairs(_lfw_pairs(tmp_path))
    scores, ok = pair_scores(pairs, emb, folder)
    assert ok.all()
    assert np.all(scores[pairs.same] > 0.9999)  # cosines: identical images
    assert np.all(scores[~pairs.same] < float(sim.to_cosine(80, emb.model_version)))
    r = verify(pairs, emb, folder)
    assert r.accuracy == 100.0 and r.failed_pairs == 0 and r.folds == 2
    assert r.tar_at_far is None  # 4 mismatched pairs cannot measure FAR 1e-3
    assert r.to_json()["accuracy"] == 100.0


def test_a_pair_without_a_face_is_an_error(folder: Path, emb: Embeddings,
                                           tmp_path: Path) -> None:
    lines = [("Aaron_Peirsol", 3, 3), (NOBODY, 1, 1),
             ("Aaron_Peirsol", 4, "Abdullah_Gul", 13), (NOBODY, 1, "Abdul_Rahman", 1)]
    test = read_pairs(write_pairs(tmp_path / "test.txt", "2", lines))
    train = read_pairs(_lfw_pairs(tmp_path))
    r = verify(test, emb, folder, train=train)
    # Both Nobody pairs are wrong whatever the threshold: 2 of 4 right.
    assert r.failed_pairs == 2 and r.accuracy == 50.0
    assert [Path(p).name for p in r.failed_images] == ["Nobody_0001.jpg"]
    assert r.protocol.startswith("threshold chosen on")


def test_a_set_without_folds_needs_training_pairs(folder: Path, emb: Embeddings,
                                                  tmp_path: Path) -> None:
    lines = [("Aaron_Peirsol", 1, 2), ("Aaron_Peirsol", 1, "Abdullah_Gul", 13)]
    with pytest.raises(InvalidParameterError, match="--train"):
        verify(read_pairs(write_pairs(tmp_path / "p.txt", "1", lines)), emb, folder)


def test_embeddings_are_cached_by_content(emb: Embeddings, cache: Path) -> None:
    assert int((~emb.found).sum()) == 1 and emb.failures()[0].endswith("Nobody_0001.jpg")
    assert len(list(cache.glob("*.npz"))) == 1
    seen: list[tuple[int, int]] = []
    again = embed_images(list(reversed(emb.paths)), Settings().pipeline, cache_dir=cache,
                            on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(len(emb), len(emb))]  # everything from the cache, nothing embedded
    np.testing.assert_array_equal(again.vectors, emb.vectors[::-1])
    np.testing.assert_array_equal(again.status, emb.status[::-1])


def test_face_rule_picks_centre_or_largest() -> None:
    boxes = np.array([[0, 0, 120, 120], [100, 100, 150, 150]], np.float32)  # big corner face
    assert pick_face(boxes, 250, 250, FaceRule.CENTRE) == 1
    assert pick_face(boxes, 250, 250, FaceRule.LARGEST) == 0


# -- identification ---------------------------------------------------------------------

def _synthetic_people(n: int) -> dict[str, list[str]]:
    return {f"p{i:03d}": [f"p{i:03d}/{j}.jpg" for j in range(1 + i % 4)] for i in range(n)}


def test_split_is_deterministic_and_open_set() -> None:
    people = _synthetic_people(200)
    a = split_identification(people, seed=3)
    b = split_identification(people, seed=3)
    c = split_identification(people, seed=4)
    assert (a.gallery, a.mated, a.non_mated) == (b.gallery, b.mated, b.non_mated)
    assert (a.gallery, a.mated, a.non_mated) != (c.gallery, c.mated, c.non_mated)
    enrolled = set(a.gallery_labels[:a.enrolled])
    non_mated_people = {p.split("/")[0] for p in a.non_mated}
    assert set(a.mated_labels) <= enrolled
    assert not non_mated_people & set(a.gallery_labels)
    used = [*a.gallery, *a.mated, *a.non_mated]
    assert len(used) == len(set(used)) == sum(len(v) for v in people.values())
    multi = sum(len(v) >= 2 for v in people.values())
    assert a.enrolled == round(multi / 2)


def _synthetic_embeddings(split: IdentificationSplit, fail: set[str] = frozenset(),
                          ) -> Embeddings:
    """Each person a random direction; each image that direction plus a little noise."""
    rng = np.random.default_rng(0)
    paths = split.images()
    centres: dict[str, np.ndarray] = {}
    vecs = []
    for p in paths:
        person = p.split("/")[0]
        if person not in centres:
            centres[person] = rng.normal(size=128)
        v = centres[person] + 0.05 * np.linalg.norm(centres[person]) / 11 * rng.normal(size=128)
        vecs.append(v / np.linalg.norm(v))
    status = np.array([Status.NO_FACE if p in fail else Status.FOUND for p in paths],
                      np.int8)
    vectors = np.array(vecs, np.float32)
    vectors[status != Status.FOUND] = 0
    return Embeddings(tuple(paths), vectors, status, np.ones(len(paths), np.int64),
                         "synthetic", "synthetic/sface-2021dec", FaceRule.CENTRE)


def test_identification_known_by_construction() -> None:
    split = split_identification(_synthetic_people(3000), seed=1)
    r = identify(split, _synthetic_embeddings(split))
    assert r.rank(1) == 1.0 and r.rank(5) == 1.0
    assert r.non_mated_searches >= 1000  # both FPIR targets measurable
    assert all(f.fnir == 0.0 for f in r.fnir)
    assert all(f.measured_fpir is not None and f.measured_fpir <= f.fpir for f in r.fnir)
    assert r.gallery_size == len(split.gallery) and r.failed_probes == 0


def test_identification_counts_failures_as_misses() -> None:
    split = split_identification(_synthetic_people(400), seed=1)
    lost = {split.mated[0], split.gallery[0]}  # a probe without a face; an unenrolled mate
    r = identify(split, _synthetic_embeddings(split, lost))
    mates_of_lost_gallery = sum(lab == split.gallery_labels[0] for lab in split.mated_labels)
    misses = 1 + mates_of_lost_gallery - (split.mated_labels[0] == split.gallery_labels[0])
    assert r.rank(1) == pytest.approx(1 - misses / r.mated_searches)
    assert r.failed_gallery == 1 and r.failed_probes == 1
    assert r.fnir[1].fnir is None  # < 1000 non-mated searches: FPIR 0.1 % not measurable


def test_identification_on_real_faces(folder: Path, emb: Embeddings) -> None:
    split = split_identification(labelled_images(folder), seed=0)
    r = identify(split, emb)
    assert r.enrolled == 2 and r.mated_searches == len(split.mated)
    assert r.rank(1) == 1.0


def test_pair_score_sets_counts(emb: Embeddings) -> None:
    labels = [Path(p).parent.name for p in emb.paths]
    imp, gen = pair_score_sets(emb, labels)
    sizes = [len(v) for k, v in PEOPLE.items()]
    n = sum(sizes)
    assert len(gen) == sum(k * (k - 1) // 2 for k in sizes)
    assert len(imp) == n * (n - 1) // 2 - len(gen)
    assert gen.mean() > imp.mean()


# -- command line -----------------------------------------------------------------------

def _cli(*args: str, ok: bool = True) -> CliResult:
    proc = run_cli(*args, env={"COLUMNS": "200"})
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_cli_eval_lfw_json_and_report(folder: Path, emb: Embeddings, cache: Path,
                                      tmp_path: Path) -> None:
    pairs = _lfw_pairs(tmp_path)
    report = tmp_path / "report"
    proc = _cli("eval", "lfw", "--pairs", str(pairs), "--images", str(folder.parent), "--json",
                "--workers", "1", "--cache", str(cache), "--report", str(report))
    d = json.loads(proc.stdout)
    assert d["accuracy"] == 100.0 and d["failed_pairs"] == 0 and d["folds"] == 2
    assert d["metric"] == "similarity" and d["tar_at_far"] is None
    assert (report / "lfw.md").is_file() and (report / "lfw-roc.png").stat().st_size > 1000
