"""dlib .dat reader, dlib ResNet -> ONNX conversion, and the ONNX embedder."""

from __future__ import annotations

import hashlib
import math
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest

from facesearch.errors import InvalidParameterError, ModelError
from facesearch.types import Embedder
from facesearch.vision.convert.dlib_dat import (
    AddPrev,
    Affine,
    Conv,
    DatReader,
    FullyConnected,
    Pool,
    Relu,
    read_dnn,
    read_dnn_file,
)
from facesearch.vision.convert.dlib_resnet import (
    MODEL_FILE,
    build_resnet_onnx,
    dlib_resnet_dat_path,
    resnet_onnx_path,
)
from facesearch.vision.embed import OnnxResNetEmbedder

# --------------------------------------------------------------------------------------
# Encoders written from dlib/serialize.h and float_details.h, to build test inputs.


def enc_int(value: int) -> bytes:
    """Control byte (byte count | 0x80 if negative) then the magnitude, little-endian.
    dlib always writes at least one magnitude byte (0 is 01 00)."""
    mag = abs(value)
    body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def enc_float(value: float, digits: int = 53) -> bytes:
    """float_details: mantissa = frexp(v) * 2**digits, low zero bytes shifted off."""
    if math.isinf(value):
        return enc_int(0) + enc_int(32000 if value > 0 else 32001)
    if math.isnan(value):
        return enc_int(0) + enc_int(32002)
    frac, exp = math.frexp(value)
    mantissa, exponent = int(frac * (1 << digits)), exp - digits
    for _ in range(8):
        if mantissa & 0xFF:
            break
        mantissa >>= 8
        exponent += 8
    return enc_int(mantissa) + enc_int(exponent)


def enc_str(text: str) -> bytes:
    return enc_int(len(text)) + text.encode("ascii")


def enc_tensor(array: np.ndarray) -> bytes:
    """Version 2, (num_samples, k, nr, nc), raw little-endian float32."""
    dims = array.shape + (1,) * (4 - array.ndim)
    return (enc_int(2) + b"".join(enc_int(d) for d in dims)
            + np.ascontiguousarray(array, "<f4").tobytes())


def enc_alias(*dims: int) -> bytes:
    dims = dims + (1,) * (4 - len(dims))
    return enc_int(1) + b"".join(enc_int(d) for d in dims)


EMPTY_TENSOR = enc_tensor(np.zeros((0, 0, 0, 0), np.float32))


def reader(data: bytes) -> DatReader:
    return DatReader(data, "test")


# --------------------------------------------------------------------------------------
# Reader: primitive encodings


@pytest.mark.parametrize(("data", "value"), [
    (b"\x01\x00", 0),
    (b"\x00", 0),
    (b"\x01\x01", 1),
    (b"\x81\x01", -1),
    (b"\x01\x96", 150),
    (b"\x02\x2c\x01", 300),
    (b"\x82\x2c\x01", -300),
    (b"\x02\x80\x12", 4736),
    (b"\x08" + b"\xff" * 7 + b"\x7f", 2**63 - 1),
    (b"\x88" + b"\x00" * 7 + b"\x80", -(2**63)),
    (b"\x08" + b"\xff" * 8, 2**64 - 1),
])
def test_int_encoding(data: bytes, value: int) -> None:
    r = reader(data)
    assert r.read_int() == value
    assert r.at_end()


def test_int_round_trips() -> None:
    values = [0, 1, -1, 127, 128, 255, 256, -256, 65535, 1 << 31, -(1 << 40), (1 << 62) + 5]
    r = reader(b"".join(enc_int(v) for v in values))
    assert [r.read_int() for _ in values] == values
    assert r.at_end()


@pytest.mark.parametrize("data", [b"\x09" + b"\x00" * 9, b"\x11\x01", b"\x40", b"\x02\x01", b""])
def test_int_rejects_bad_bytes(data: bytes) -> None:
    with pytest.raises(ModelError, match="byte 0"):
        reader(data).read_int()


@pytest.mark.parametrize(("data", "value"), [
    # Bytes as found in dlib_face_recognition_resnet_model_v1.dat (float32 fields).
    (b"\x03\x0a\xd7\xa3\x81\x1c", np.float32(0.04)),
    (b"\x03\x9a\x99\x99\x81\x18", np.float32(0.6)),
    (b"\x03\x62\x90\xf5\x81\x11", np.float32(122.782)),
    (b"\x01\x01\x01\x00", 1.0),
    (b"\x81\x03\x81\x01", -1.5),
    (b"\x01\x00\x01\x00", 0.0),
    (b"\x01\x00\x02\x00\x7d", math.inf),
    (b"\x01\x00\x02\x01\x7d", -math.inf),
])
def test_float_encoding(data: bytes, value: float) -> None:
    r = reader(data)
    assert r.read_float() == float(value)
    assert r.at_end()


def test_float_nan_and_round_trips() -> None:
    assert math.isnan(reader(enc_float(math.nan)).read_float())
    rng = np.random.default_rng(0)
    values = [0.1, -2.5e-30, 1e300, 3.0, *rng.normal(size=50).tolist()]
    r = reader(b"".join(enc_float(v) for v in values))
    assert [r.read_float() for _ in values] == values
    f32 = [float(np.float32(v)) for v in (0.1, -2.5e-30, 3.0, -1.75)]
    r = reader(b"".join(enc_float(v, digits=24) for v in f32))
    assert [r.read_float() for _ in f32] == f32


def test_float_rejects_old_text_format() -> None:
    with pytest.raises(ModelError, match="old text format"):
        reader(b"1.5 ").read_float()


def test_bool_and_string() -> None:
    r = reader(b"10" + enc_str("relu_") + enc_str(""))
    assert r.read_bool() is True
    assert r.read_bool() is False
    assert r.read_string() == "relu_"
    assert r.read_string() == ""
    assert r.at_end()
    with pytest.raises(ModelError, match="bool"):
        reader(b"\x01").read_bool()
    with pytest.raises(ModelError, match="end of data"):
        reader(enc_int(10) + b"short").read_string()


def test_tensor_and_alias_tensor() -> None:
    values = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) - 7.25
    r = reader(enc_tensor(values) + EMPTY_TENSOR + enc_alias(32, 3, 7, 7))
    got = r.read_tensor()
    assert got.dtype == np.float32 and got.shape == (2, 3, 2, 2)
    np.testing.assert_array_equal(got, values)
    assert r.read_tensor().shape == (0, 0, 0, 0)
    assert r.read_alias_tensor() == (32, 3, 7, 7)
    assert r.at_end()
    # Raw payload is little-endian IEEE float32.
    raw = enc_int(2) + b"".join(enc_int(d) for d in (1, 1, 1, 2)) + struct.pack("<2f", 1.5, -2)
    np.testing.assert_array_equal(reader(raw).read_tensor().ravel(), [1.5, -2.0])


def test_tensor_rejects_bad_data() -> None:
    with pytest.raises(ModelError, match="tensor version 1, expected 2"):
        reader(enc_int(1) + enc_int(1) * 4).read_tensor()
    with pytest.raises(ModelError, match="end of data"):
        reader(enc_tensor(np.ones((2, 2), np.float32))[:-1]).read_tensor()


# --------------------------------------------------------------------------------------
# Reader: a whole (tiny) network built by the format rules


def _add_layer_state(first: bool) -> bytes:
    state = b"110" + EMPTY_TENSOR * 3
    return state + enc_int(1) if first else state


def tiny_dnn_bytes() -> bytes:
    """loss_metric<fc_no_bias<2, relu<add_prev1<con<2,3,3,1,1,tag1<con<2,1,1,1,1,input>>>>>>>."""
    rng = np.random.default_rng(1)
    con1 = rng.normal(size=2 * 3 * 1 * 1 + 2).astype(np.float32)
    con2 = rng.normal(size=2 * 2 * 3 * 3 + 2).astype(np.float32)
    fc = rng.normal(size=2 * 4 * 4 * 2).astype(np.float32)
    mults = enc_float(1.0) * 3 + enc_float(0.0)

    def con(params: np.ndarray, n: int, k: int, size: int, pad: int) -> bytes:
        return (enc_str("con_4") + enc_tensor(params) + enc_int(n) + enc_int(size) * 2
                + enc_int(1) * 2 + enc_int(pad) * 2 + enc_alias(n, k, size, size)
                + enc_alias(1, n) + mults)

    return b"".join([
        enc_int(1), enc_str("loss_metric_2"), enc_float(0.04, 24), enc_float(0.6, 24),
        # wrappers, output first: fc, relu, add_prev, con, tag, con(on input)
        enc_int(2), enc_int(2), enc_int(2), enc_int(2), enc_int(1), enc_int(3),
        enc_str("input_rgb_image_sized"), enc_float(122.782, 24), enc_float(117.001, 24),
        enc_float(104.298, 24), enc_int(4), enc_int(4),
        con(con1, 2, 3, 1, 0), _add_layer_state(True),
        con(con2, 2, 2, 3, 1), _add_layer_state(False),
        enc_str("add_prev_"), _add_layer_state(False),
        enc_str("relu_"), _add_layer_state(False),
        enc_str("fc_2"), enc_int(2), enc_int(32), enc_tensor(fc.reshape(32, 2)),
        enc_alias(32, 2), enc_alias(0), enc_int(1), mults, _add_layer_state(False),
    ])


def test_read_tiny_network() -> None:
    dnn = read_dnn(tiny_dnn_bytes(), "tiny")
    assert dnn.loss.distance_threshold == pytest.approx(0.6)
    assert dnn.input.mean == pytest.approx((122.782, 117.001, 104.298), abs=1e-5)
    assert (dnn.input.rows, dnn.input.cols) == (4, 4)
    assert dnn.wrapper_versions == (2, 2, 2, 2, 1, 3)
    kinds = [type(layer) for layer in dnn.layers]
    assert kinds == [Conv, Conv, AddPrev, Relu, FullyConnected]
    c1, c2 = dnn.layers[0], dnn.layers[1]
    assert isinstance(c1, Conv) and isinstance(c2, Conv)
    assert c1.weights.shape == (2, 3, 1, 1) and c1.bias.shape == (2,)
    assert c2.weights.shape == (2, 2, 3, 3) and c2.padding == (1, 1) and c2.stride == (1, 1)
    fc = dnn.layers[4]
    assert isinstance(fc, FullyConnected) and fc.weights.shape == (32, 2) and fc.bias is None


def test_read_layers_affine_and_pool() -> None:
    gamma_beta = np.array([2.0, 3.0, -1.0, 0.5], np.float32)
    data = (enc_str("affine_") + enc_tensor(gamma_beta) + enc_alias(1, 2) * 2 + enc_int(0)
            + enc_str("avg_pool_2") + b"".join(enc_int(v) for v in (2, 2, 2, 2, 0, 0)))
    from facesearch.vision.convert.dlib_dat import read_layer

    r = reader(data)
    aff = read_layer(r)
    assert isinstance(aff, Affine) and aff.per_channel
    np.testing.assert_array_equal(aff.gamma, [2.0, 3.0])
    np.testing.assert_array_equal(aff.beta, [-1.0, 0.5])
    pool = read_layer(r)
    assert isinstance(pool, Pool) and pool.kind == "avg" and pool.window == (2, 2)
    assert r.at_end()


def test_bad_model_files_raise_model_error(tmp_path: Path) -> None:
    good = tiny_dnn_bytes()
    with pytest.raises(ModelError, match="trailing data"):
        read_dnn(good + b"\x00", "tiny")
    with pytest.raises(ModelError, match="end of data"):
        read_dnn(good[:-40], "tiny")
    with pytest.raises(ModelError, match="unsupported dlib layer 'relX_'"):
        read_dnn(good.replace(b"relu_", b"relX_"), "tiny")
    with pytest.raises(ModelError, match="cannot read"):
        read_dnn_file(tmp_path / "missing.dat")
    # A valid dlib network that is not the face ResNet.
    tiny = tmp_path / "tiny.dat"
    tiny.write_bytes(good)
    with pytest.raises(ModelError, match="not dlib's face recognition ResNet"):
        build_resnet_onnx(tiny)
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(dlib_resnet_dat_path().read_bytes()[:1_000_000])
    with pytest.raises(ModelError, match=r"truncated\.dat at byte"):
        build_resnet_onnx(truncated)
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(b"PK\x03\x04 not a dlib file")
    with pytest.raises(ModelError, match=r"garbage\.dat"):
        build_resnet_onnx(garbage)


def test_reads_installed_model() -> None:
    dnn = read_dnn_file(dlib_resnet_dat_path())
    assert dnn.input.mean == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert (dnn.input.rows, dnn.input.cols) == (150, 150)
    convs = [layer for layer in dnn.layers if isinstance(layer, Conv)]
    assert len(convs) == 29
    assert convs[0].weights.shape == (32, 3, 7, 7) and convs[0].stride == (2, 2)
    fc = dnn.layers[-1]
    assert isinstance(fc, FullyConnected) and fc.weights.shape == (256, 128) and fc.bias is None


# --------------------------------------------------------------------------------------
# Conversion


def test_build_is_deterministic(resnet_onnx_bytes: bytes) -> None:
    again = build_resnet_onnx(dlib_resnet_dat_path())
    assert hashlib.sha256(again).digest() == hashlib.sha256(resnet_onnx_bytes).digest()


def test_graph_contract(resnet_onnx_bytes: bytes) -> None:
    model = onnx.load_from_string(resnet_onnx_bytes)
    onnx.checker.check_model(model)
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "chips"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", 150, 150, 3]
    assert out.name == "descriptor"
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", 128]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["source_sha256"] == hashlib.sha256(dlib_resnet_dat_path().read_bytes()).hexdigest()
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)


def test_resnet_onnx_path_caches(resnet_onnx_bytes: bytes, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESEARCH_CACHE", str(tmp_path))
    path = resnet_onnx_path()
    assert path.name == MODEL_FILE and path.parent == tmp_path / "models"
    assert path.read_bytes() == resnet_onnx_bytes
    mtime = path.stat().st_mtime_ns
    assert resnet_onnx_path() == path and path.stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_matches_dlib_on_lfw_chips(lfw_dlib_chips: np.ndarray, resnet_onnx_bytes: bytes) -> None:
    import dlib
    import face_recognition_models

    chips = lfw_dlib_chips
    assert len(chips) >= 1000
    rec = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
    expected = np.array(rec.compute_face_descriptor(list(chips)), np.float64)
    got = OnnxResNetEmbedder(threads=2, model=resnet_onnx_bytes).descriptors(chips)
    assert got.shape == expected.shape == (len(chips), 128)
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    worst = int(np.argmin(cos))
    assert cos.min() >= 0.9999, f"chip {worst}: cosine {cos[worst]:.6f}"
    max_abs = float(np.abs(got - expected).max())
    assert max_abs < 1e-5, f"max abs difference {max_abs:.3g}"
    # The descriptor is dlib's raw one (not unit length).
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)


# --------------------------------------------------------------------------------------
# Embedder


@pytest.fixture(scope="module")
def embedder(resnet_onnx_bytes: bytes) -> OnnxResNetEmbedder:
    return OnnxResNetEmbedder(threads=2, model=resnet_onnx_bytes, batch_size=4)


def test_embedder_protocol_and_empty(embedder: OnnxResNetEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert (embedder.name, embedder.dim, embedder.chip_size, embedder.chip_padding) == (
        "dlib-resnet-v1", 128, 150, 0.25)
    out = embedder.embed(np.zeros((0, 150, 150, 3), np.uint8))
    assert out.shape == (0, 128) and out.dtype == np.float32


def test_embedder_batches_and_normalises(embedder: OnnxResNetEmbedder,
                                         resnet_onnx_bytes: bytes) -> None:
    rng = np.random.default_rng(2)
    chips = rng.integers(0, 256, size=(10, 150, 150, 3), dtype=np.uint8)
    out = embedder.embed(chips)  # batches of 4, 4, 2
    assert out.shape == (10, 128) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    whole = OnnxResNetEmbedder(threads=1, model=resnet_onnx_bytes, batch_size=32).embed(chips)
    np.testing.assert_allclose(out, whole, atol=1e-5)
    single = embedder.embed(chips[3:4])
    np.testing.assert_allclose(single[0], out[3], atol=1e-5)


@pytest.mark.parametrize("bad", [
    np.zeros((2, 150, 150, 3), np.float32),
    np.zeros((150, 150, 3), np.uint8),
    np.zeros((1, 112, 112, 3), np.uint8),
    [[0]],
])
def test_embedder_rejects_bad_chips(embedder: OnnxResNetEmbedder, bad: object) -> None:
    with pytest.raises(InvalidParameterError, match="chips must be"):
        embedder.embed(bad)  # type: ignore[arg-type]


def test_embedder_rejects_bad_batch_size(resnet_onnx_bytes: bytes) -> None:
    with pytest.raises(InvalidParameterError, match="batch_size"):
        OnnxResNetEmbedder(model=resnet_onnx_bytes, batch_size=0)
