"""OnnxResNetEmbedder's variants: int8 precision and flip test-time augmentation.

Real faces come from ../shared/testdata/faces (cut by the fast pipeline). The int8 bound
(cosine >= 0.999 to fp32 on every face) is the one measured on all 1,549 LFW pairsDevTest
chips (worst 0.9992; ``bench/embedder_variants.py``, ``docs/benchmarks.md``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest

from facesearch.errors import InvalidParameterError, ModelError
from facesearch.services.reembed import reembed
from facesearch.types import Embedder
from facesearch.vision.convert import resnet_int8
from facesearch.vision.convert.dlib_resnet import build_resnet_onnx, dlib_resnet_dat_path
from facesearch.vision.convert.resnet_int8 import (
    RANGES_FILE,
    build_resnet_int8_onnx,
    int8_model_file,
    load_qparams,
    range_tensors,
    resnet_int8_onnx_path,
)
from facesearch.vision.decode import load_image
from facesearch.vision.embed import OnnxResNetEmbedder, SFaceEmbedder
from facesearch.vision.pipeline import load_pipeline, pipeline_from

FACES = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "faces"
PHOTOS = ("obama.jpg", "obama2.jpg", "biden.jpg", "two_people.jpg", "obama-480p.jpg",
          "lin-manuel-miranda.png", "alex-lacamoire.png")
INT8_MIN_COSINE = 0.999


@pytest.fixture(scope="module")
def fp32_bytes() -> bytes:
    return build_resnet_onnx(dlib_resnet_dat_path())


@pytest.fixture(scope="module")
def int8_bytes(fp32_bytes: bytes) -> bytes:
    return build_resnet_int8_onnx(fp32_bytes)


@pytest.fixture(scope="module")
def chips() -> npt.NDArray[np.uint8]:
    """Chips of every face the fast pipeline finds in the test photos."""
    p = load_pipeline("fast", threads=2, device="cpu", embedder="dlib-resnet")
    out = []
    for name in PHOTOS:
        path = FACES / name
        if not path.is_file():
            pytest.fail(f"test data missing: {path} (expected <repo root>/../shared/testdata)",
                        pytrace=False)
        image = load_image(path.read_bytes())
        out.append(p.chips(image, p.detector.detect(image.pixels)))
    all_chips = np.concatenate(out)
    assert len(all_chips) >= len(PHOTOS) + 1  # two_people.jpg has two
    return all_chips


def test_names_follow_the_variant(fp32_bytes: bytes, int8_bytes: bytes) -> None:
    cases = [("fp32", False, fp32_bytes, "dlib-resnet-v1"),
             ("fp32", True, fp32_bytes, "dlib-resnet-v1+flip"),
             ("int8", False, int8_bytes, "dlib-resnet-v1-int8w7"),
             ("int8", True, int8_bytes, "dlib-resnet-v1-int8w7+flip")]
    for precision, flip, model, name in cases:
        e = OnnxResNetEmbedder(threads=1, model=model, precision=precision, flip=flip)
        assert isinstance(e, Embedder)
        assert (e.name, e.dim, e.chip_size, e.precision, e.flip) == (
            name, 128, 150, precision, flip)
    assert OnnxResNetEmbedder.name == "dlib-resnet-v1"  # the class default is untouched


def test_rejects_bad_options(fp32_bytes: bytes, int8_bytes: bytes) -> None:
    with pytest.raises(InvalidParameterError, match="precision"):
        OnnxResNetEmbedder(model=fp32_bytes, precision="fp16")
    with pytest.raises(InvalidParameterError, match="CPU"):
        OnnxResNetEmbedder(model=int8_bytes, precision="int8", device="cuda")
    with pytest.raises(InvalidParameterError, match="dlib pipeline"):
        load_pipeline("dlib", precision="int8")


def test_int8_conversion_is_deterministic_and_cached(fp32_bytes: bytes, int8_bytes: bytes,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_resnet_int8_onnx(fp32_bytes) == int8_bytes
    monkeypatch.setenv("FACESEARCH_CACHE", str(tmp_path))
    path = resnet_int8_onnx_path()
    assert path.name == int8_model_file() and path.read_bytes() == int8_bytes
    assert path.name.startswith("dlib-resnet-v1-int8w7-1.2-")
    mtime = path.stat().st_mtime_ns
    assert resnet_int8_onnx_path() == path and path.stat().st_mtime_ns == mtime
    # Every convolution reads int8 weights; the graph is much smaller than fp32's.
    model = onnx.load_from_string(int8_bytes)
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 29
    assert all(producers[c.input[0]] in ("DequantizeLinear",) and
               producers[c.input[1]] == "DequantizeLinear" for c in convs)
    assert len(int8_bytes) < len(fp32_bytes) / 3


def test_ranges_file_is_tied_to_the_fp32_graph(fp32_bytes: bytes, tmp_path: Path) -> None:
    qp = load_qparams(fp32_bytes)
    assert set(qp) == set(range_tensors(onnx.load_from_string(fp32_bytes)))
    assert all(s > 0 and 0 <= z <= 255 for s, z in qp.values())
    doc = json.loads(RANGES_FILE.read_text())
    doc["fp32_sha256"] = "0" * 64
    other = tmp_path / "ranges.json"
    other.write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="another fp32 graph"):
        load_qparams(fp32_bytes, other)
    with pytest.raises(ModelError, match="cannot read"):
        load_qparams(fp32_bytes, tmp_path / "missing.json")


def test_int8_agrees_with_fp32_on_real_faces(fp32_bytes: bytes, int8_bytes: bytes,
                                             chips: npt.NDArray[np.uint8]) -> None:
    ref = OnnxResNetEmbedder(threads=2, model=fp32_bytes).embed(chips)
    int8 = OnnxResNetEmbedder(threads=2, model=int8_bytes, precision="int8")
    got = int8.embed(chips)
    assert got.shape == (len(chips), 128) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = (got * ref).sum(1)
    assert cos.min() >= INT8_MIN_COSINE, f"face {int(np.argmin(cos))}: cosine {cos.min():.5f}"
    # Deterministic, and independent of batching.
    np.testing.assert_array_equal(int8.embed(chips), got)
    one = OnnxResNetEmbedder(threads=1, model=int8_bytes, precision="int8", batch_size=1)
    np.testing.assert_allclose(one.embed(chips), got, atol=1e-5)
    assert int8.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_flip_averages_chip_and_mirror(precision: str, fp32_bytes: bytes, int8_bytes: bytes,
                                       chips: npt.NDArray[np.uint8]) -> None:
    model = int8_bytes if precision == "int8" else fp32_bytes
    plain = OnnxResNetEmbedder(threads=2, model=model, precision=precision)
    flip = OnnxResNetEmbedder(threads=2, model=model, precision=precision, flip=True)
    got = flip.embed(chips)
    assert got.shape == (len(chips), 128) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(flip.embed(chips), got)
    mirrored = np.ascontiguousarray(chips[:, :, ::-1])
    np.testing.assert_allclose(flip.embed(mirrored), got, atol=1e-6)
    a, b = plain.embed(chips), plain.embed(mirrored)
    expected = (a + b) / np.linalg.norm(a + b, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    cos = (got * a).sum(1)  # close to, but not, the plain vector
    assert cos.min() > 0.98 and cos.max() < 1.0 - 1e-6
    assert flip.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)


def test_pipeline_and_settings_pass_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from facesearch.config import Settings

    assert Settings().embedder == "sface"
    assert pipeline_from(Settings(), threads=1).model_version.endswith("/sface-2021dec")
    monkeypatch.setenv("FACESEARCH_EMBEDDER", "dlib-resnet")
    monkeypatch.setenv("FACESEARCH_PRECISION", "int8")
    monkeypatch.setenv("FACESEARCH_FLIP", "true")
    s = Settings()
    assert (s.embedder, s.precision, s.flip) == ("dlib-resnet", "int8", True)
    p = pipeline_from(s, threads=1)
    assert p.model_version.endswith("/dlib-resnet-v1-int8w7+flip")
    assert load_pipeline("fast", threads=1,
                         embedder="dlib-resnet").model_version.endswith("/dlib-resnet-v1")


@pytest.mark.parametrize("overrides", [
    {}, {"flip": True}, {"embedder": "dlib-resnet"}, {"embedder": "dlib-resnet", "flip": True},
    {"embedder": "dlib-resnet", "precision": "int8"}, {"pipeline": "dlib"},
    {"detector_model": "short", "min_face": 0},
])
def test_declared_model_version_is_the_loaded_pipelines(overrides: dict[str, object]) -> None:
    """A process that only stores vectors (bulk indexing's writer) knows the model version
    from the settings, without loading the models: it must be the pipeline's own."""
    from facesearch.config import Settings
    from facesearch.vision.pipeline import model_version_of

    s = Settings(**overrides)  # type: ignore[arg-type]
    assert model_version_of(s) == pipeline_from(s, threads=1).model_version


def test_int8_session_passes_its_known_answer_check_or_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The shipped model passes on this machine (and, by the next test, on one without VNNI).
    e = OnnxResNetEmbedder(threads=1, precision="int8")
    assert e.name == "dlib-resnet-v1-int8w7"
    # A machine whose kernels give other sums is refused, naming the way out.
    doc = json.loads(resnet_int8.CHECK_FILE.read_text())
    doc["vectors"][0][7] += 2e-4
    wrong = tmp_path / "check.json"
    wrong.write_text(json.dumps(doc))
    monkeypatch.setattr(resnet_int8, "CHECK_FILE", wrong)
    with pytest.raises(ModelError, match="int8 is refused on this machine.*fp32"):
        OnnxResNetEmbedder(threads=1, precision="int8")
    with pytest.raises(ModelError, match="fp32"):
        load_pipeline("fast", threads=1, precision="int8", embedder="dlib-resnet")
    doc["quantiser_version"] = "1"
    wrong.write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="another int8 model"):
        OnnxResNetEmbedder(threads=1, precision="int8")
    wrong.write_text("{")
    with pytest.raises(ModelError, match="cannot read"):
        OnnxResNetEmbedder(threads=1, precision="int8")


def _probe(model: Path, chips: Path, out: Path, *, valgrind: bool,
           verify: bool = False) -> npt.NDArray[np.float32]:
    import shutil
    import subprocess
    import sys

    cmd = [sys.executable, str(Path(__file__).with_name("int8_probe.py")), str(model),
           str(chips), str(out)] + (["--verify"] if verify else [])
    if valgrind:
        tool = shutil.which("valgrind")
        if tool is None:
            pytest.fail("valgrind is missing: scripts/install-test-deps installs it",
                        pytrace=False)
        cmd = [tool, "--tool=none", "-q", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("verified" in done.stdout) == verify
    return np.load(out)


@pytest.mark.slow
def test_int8_vectors_are_the_same_on_a_cpu_without_vnni(
        fp32_bytes: bytes, chips: npt.NDArray[np.uint8], tmp_path: Path) -> None:
    """valgrind runs the process on an emulated x86-64 with AVX2 but neither AVX-512 nor
    VNNI, so ONNX Runtime picks its 16-bit-pair (VPMADDUBSW) int8 kernels there."""
    np.save(tmp_path / "chips.npy", chips)
    model = tmp_path / "int8.onnx"
    model.write_bytes(build_resnet_int8_onnx(fp32_bytes))
    here = _probe(model, tmp_path / "chips.npy", tmp_path / "here.npy", valgrind=False)
    there = _probe(model, tmp_path / "chips.npy", tmp_path / "there.npy", valgrind=True,
                   verify=True)
    np.testing.assert_allclose(there, here, rtol=0, atol=1e-5 * np.abs(here).max())
    if resnet_int8.cpu_has_vnni():
        # The emulated CPU does run other kernels: full 8-bit weights, whose pair sums
        # overflow int16, give other vectors there than on this VNNI machine.
        model.write_bytes(build_resnet_int8_onnx(fp32_bytes, weight_qmax=127))
        here = _probe(model, tmp_path / "chips.npy", tmp_path / "here8.npy", valgrind=False)
        there = _probe(model, tmp_path / "chips.npy", tmp_path / "there8.npy", valgrind=True)
        a = here / np.linalg.norm(here, axis=1, keepdims=True)
        b = there / np.linalg.norm(there, axis=1, keepdims=True)
        assert (a * b).sum(1).min() < 0.9995


# -- SFace (the default embedder) -------------------------------------------------------------

def _vectors(p, name: str) -> np.ndarray:  # noqa: ANN001
    faces = p.analyze(load_image((FACES / name).read_bytes()))
    assert len(faces) >= 1 and faces.embeddings is not None
    return faces.embeddings


def test_default_pipeline_is_sface_and_dlib_stays_selectable() -> None:
    p = load_pipeline("fast", threads=2, device="cpu")
    assert p.model_version == "blazeface+onet/sface-2021dec"
    assert isinstance(p.embedder, SFaceEmbedder) and isinstance(p.embedder, Embedder)
    old = load_pipeline("fast", threads=2, device="cpu", embedder="dlib-resnet")
    assert old.model_version == "blazeface+onet/dlib-resnet-v1"
    assert load_pipeline("fast", threads=1, embedder="sface", flip=True).model_version == (
        "blazeface+onet/sface-2021dec+flip")
    with pytest.raises(InvalidParameterError, match="int8"):
        load_pipeline("fast", embedder="sface", precision="int8")
    with pytest.raises(InvalidParameterError, match="embedder"):
        load_pipeline("fast", embedder="resnet")  # type: ignore[arg-type]
    # Same person far above, different people far below, in both models' own scales.
    from facesearch.vision import similarity as sim

    for pipe in (p, old):
        a, b, c = (_vectors(pipe, n)[0] for n in ("obama.jpg", "obama2.jpg", "biden.jpg"))
        assert sim.similarity(a, b, pipe.model_version) > 95
        assert sim.similarity(a, c, pipe.model_version) < 50


def test_sface_batches_agree_and_inputs_are_checked() -> None:
    p = load_pipeline("fast", threads=2, device="cpu")
    chips = []
    for name in PHOTOS:
        image = load_image((FACES / name).read_bytes())
        chips.append(p.chips(image, p.detector.detect(image.pixels)))
    c = np.concatenate(chips)
    assert c.shape[1:] == (112, 112, 3) and len(c) >= len(PHOTOS)
    e = SFaceEmbedder(threads=2)
    got = e.embed(c)
    assert got.shape == (len(c), 128) and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    one = SFaceEmbedder(threads=1, batch_size=1).embed(c)
    np.testing.assert_allclose(one, got, atol=1e-5)
    assert e.embed(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 128)
    flip = SFaceEmbedder(threads=2, flip=True)
    mirrored = e.embed(np.ascontiguousarray(c[:, :, ::-1]))
    want = got + mirrored
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(flip.embed(c), want, atol=1e-5)
    with pytest.raises(InvalidParameterError, match="112"):
        e.embed(np.zeros((1, 150, 150, 3), np.uint8))


def test_dlib_resnet_collection_keeps_working_and_reembed_moves_it_to_sface(
        tmp_path: Path) -> None:
    """A collection of the old default keeps its model (served by the dlib-resnet profile);
    ``reembed`` moves it to SFace with face ids, external ids and users kept."""
    from facesearch.config import Settings
    from facesearch.errors import ModelMismatchError
    from facesearch.service import FaceSearch

    home = tmp_path / "home"
    old = load_pipeline("fast", threads=2, embedder="dlib-resnet")
    new = load_pipeline("fast", threads=2)
    with FaceSearch(Settings(home=home, embedder="dlib-resnet"), pipeline=old) as a:
        a.collections.create("legacy")
        ids = {}
        for name in ("obama", "biden"):
            path = FACES / f"{name}.jpg"
            ids[name] = a.collections.index_image("legacy", path, external_id=name,
                                                  source_name=str(path)).indexed[0].face_id
        a.users.create("legacy", "barack")
        a.users.associate("legacy", "barack", [ids["obama"]])
        before = a.search.by_image("legacy", FACES / "obama2.jpg")
        assert [m.face.face_id for m in before.results[0].matches] == [ids["obama"]]
    with FaceSearch(Settings(home=home), pipeline=new) as b:
        with pytest.raises(ModelMismatchError):
            b.search.by_image("legacy", FACES / "obama2.jpg")
        report = reembed(b.collections, "legacy")
        assert (report.old_model, report.new_model) == (old.model_version, new.model_version)
        assert report.faces_reembedded == 2
        res = b.search.by_image("legacy", FACES / "obama2.jpg")
        assert [(m.face.face_id, m.face.external_id) for m in res.results[0].matches] == [
            (ids["obama"], "obama")]
        assert res.results[0].matches[0].similarity > 99  # on SFace's scale
        hits = b.users.search_by_image("legacy", FACES / "obama2.jpg").matches
        assert [h.user_id for h in hits] == ["barack"]
