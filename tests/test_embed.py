"""OnnxResNetEmbedder's variants: int8 precision and flip test-time augmentation.

Real faces come from ../shared/testdata/faces (cut by the fast pipeline). The int8 bound
(cosine >= 0.999 to fp32 on every face) is the one measured on all 1,549 LFW pairsDevTest
chips (worst 0.9992; ``bench/embedder_variants.py``, ``docs/benchmarks.md``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest

from facesearch.convert import resnet_int8
from facesearch.convert.dlib_resnet import build_resnet_onnx, dlib_resnet_dat_path
from facesearch.convert.resnet_int8 import (
    RANGES_FILE,
    build_resnet_int8_onnx,
    int8_model_file,
    load_qparams,
    range_tensors,
    resnet_int8_onnx_path,
)
from facesearch.decode import load_image
from facesearch.embed import OnnxResNetEmbedder
from facesearch.errors import InvalidParameterError, ModelError
from facesearch.pipeline import load_pipeline
from facesearch.types import Embedder

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "faces"
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
    p = load_pipeline("fast", threads=2, device="cpu")
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
             ("int8", False, int8_bytes, "dlib-resnet-v1-int8"),
             ("int8", True, int8_bytes, "dlib-resnet-v1-int8+flip")]
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
    assert path.name.startswith("dlib-resnet-v1-int8-1.1-")
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

    monkeypatch.setenv("FACESEARCH_PRECISION", "int8")
    monkeypatch.setenv("FACESEARCH_FLIP", "true")
    s = Settings()
    assert (s.precision, s.flip) == ("int8", True)
    p = s.load_pipeline(threads=1)
    assert p.model_version.endswith("/dlib-resnet-v1-int8+flip")
    assert load_pipeline("fast", threads=1).model_version.endswith("/dlib-resnet-v1")


def test_warns_on_x86_without_vnni(monkeypatch: pytest.MonkeyPatch,
                                   caplog: pytest.LogCaptureFixture) -> None:
    assert resnet_int8.cpu_has_vnni() in (True, False, None)
    monkeypatch.setattr(resnet_int8, "cpu_has_vnni", lambda: False)
    monkeypatch.setattr(resnet_int8, "_warned", False)
    with caplog.at_level(logging.WARNING, logger=resnet_int8.__name__):
        resnet_int8.check_int8_cpu()
        resnet_int8.check_int8_cpu()
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "VNNI" in caplog.records[0].getMessage()
