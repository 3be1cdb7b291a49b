"""dlib's face-recognition ResNet, statically quantised to int8 (QDQ), from the fp32 ONNX graph.

The graph made by :mod:`facesearch.vision.convert.dlib_resnet` is rewritten, deterministically, with
``QuantizeLinear`` / ``DequantizeLinear`` pairs that ONNX Runtime fuses into integer kernels
(``QLinearConv``, ``QLinearAdd``, ``QLinearAveragePool``; u8 activations, s8 weights: the
VNNI path on x86):

- every convolution: 7-bit int8 weights (-63..63, :data:`WEIGHT_QMAX`), symmetric per
  output channel (scale = max |w| / 63); int32 bias at scale (input scale x weight scale).
  Seven bits keep every integer sum exact on every CPU, so the vectors are the same on any
  x86-64 (with or without VNNI or AVX-512) and on ARM;
- every activation between the first convolution and the global average pool: uint8, one
  scale and zero point per tensor, taken from the shipped ranges file
  (``data/dlib-resnet-v1-int8.json``) and never computed at conversion time. A ReLU is
  dropped where its input is quantised with zero point 0 (the clamp at 0 does the same);
  max pooling and zero padding run on the uint8 values (padding with the zero point), average
  pooling keeps its input's scale;
- the first convolution reads the chip's pixels directly as uint8 (scale 1/256, zero point
  0: exact); the per-channel mean the fp32 graph subtracts is folded into its bias, which is
  exact because that convolution is unpadded;
- the global average pool and the 128-output fully connected layer stay in float32.

The ranges were measured once (min / max, "MinMax") with the fp32 model on 512 aligned chips
of images named in LFW's ``pairsDevTrain.txt`` (seeded sample; ``bench/embedder_variants.py
--write-ranges``) and are shipped, so users need no calibration data and every conversion
gives the same bytes. The file records the SHA-256 of the fp32 graph it belongs to; a
conversion from any other fp32 graph is refused. Accuracy and speed: ``docs/benchmarks.md``
("Embedder: precision and flip").

Every int8 session is checked once when it is made (:func:`verify_int8_session`): it embeds
two fixed chips and compares the vectors with the shipped reference
(``data/dlib-resnet-v1-int8w7-check.json``, made by ``python -m
facesearch.vision.convert.resnet_int8 write-check``); where they differ (an ONNX Runtime or CPU
whose integer kernels give other sums) the embedder is refused with a ModelError that names
fp32, rather than writing vectors that other machines would not reproduce.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from facesearch.errors import ModelError
from facesearch.vision.convert.dlib_resnet import (
    CHIP_SIZE,
    CONVERTER_VERSION,
    DESCRIPTOR_DIM,
    INPUT_NAME,
    MODEL_NAME,
    OUTPUT_NAME,
    build_resnet_onnx,
    dlib_resnet_dat_path,
)
from facesearch.vision.modelcache import ensure_model

QUANTISER_VERSION = "2"
"""Bumped whenever the rewrite changes; part of the cache file name (with the fp32
converter's version and a digest of the ranges file, so new ranges make a new entry).
2: 7-bit weights (1 had 8-bit weights, whose sums saturate on CPUs without VNNI)."""
INT8_MODEL_NAME = f"{MODEL_NAME}-int8w7"
"""The model version of the int8 vectors (``w7``: 7-bit weights; the 8-bit ``-int8`` model
of quantiser 1 gave CPU-dependent vectors and is gone: re-embed such collections)."""
DATA_DIR = Path(__file__).resolve().parents[2] / "data"
RANGES_FILE = DATA_DIR / f"{MODEL_NAME}-int8.json"
"""Activation ranges (measured on the fp32 model; independent of the weights' bits)."""
CHECK_FILE = DATA_DIR / f"{INT8_MODEL_NAME}-check.json"
"""Known-answer vectors of the int8 model for :func:`check_chips`."""
CHECK_MAX_ABS = 1e-4
"""Largest difference of a unit-vector component from the reference that
:func:`verify_int8_session` accepts (exact integer sums leave only float rounding in the
fp32 pooling and fully connected layers, ~1e-7)."""
RANGES_FORMAT = 1
INPUT_SCALE = 1.0 / 256.0
"""Scale of the raw pixels fed to the first convolution (the fp32 graph's 1/256)."""

WEIGHT_QMAX = 63
"""Largest int8 weight magnitude (7 bits, "reduce range"). x86-64 CPUs without VNNI run
ONNX Runtime's u8 x s8 convolutions with VPMADDUBSW, which adds two u8 x s8 products in a
saturating int16: 2 x 255 x 127 = 64,770 overflows it, 2 x 255 x 63 = 32,130 does not. With
7-bit weights every integer sum is exact on every x86-64 kernel (AVX2, AVX-512, VNNI) and on
ARM, so the int8 model gives the same vectors on every machine."""

QParams = tuple[float, int]
"""(scale, zero point) of a uint8 tensor."""



def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def range_tensors(model: onnx.ModelProto) -> list[str]:
    """The fp32 tensors whose ranges the rewrite needs: the output of every Conv and Add."""
    return [n.output[0] for n in model.graph.node if n.op_type in ("Conv", "Add")]


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _relu_after(model: onnx.ModelProto) -> dict[str, str]:
    """Conv/Add output -> the output of the Relu that is its only consumer."""
    cons = _consumers(model)
    out = {}
    for t in range_tensors(model):
        c = cons.get(t, [])
        if len(c) == 1 and c[0].op_type == "Relu":
            out[t] = c[0].output[0]
    return out


def uint8_qparams(lo: float, hi: float) -> QParams:
    """Asymmetric uint8 scale and zero point for the real range [lo, hi] (widened to hold 0,
    so that zero is exact)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0.0:
        return 1.0, 0
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(np.clip(np.round(-lo / scale), 0, 255))
    return scale, zp


def calibrate_ranges(fp32: bytes, chips: npt.NDArray[np.uint8], *, batch: int = 32,
                     threads: int | None = None) -> dict[str, tuple[float, float]]:
    """Min and max of every tensor of :func:`range_tensors` over ``chips`` (fp32 model),
    clamped at 0 below for tensors that feed a ReLU (what the ReLU lets through)."""
    from facesearch.vision.runtime import create_session

    model = onnx.load_from_string(fp32)
    names = range_tensors(model)
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None)
                              for t in names if t not in known)
    session = create_session(model.SerializeToString(), threads=threads, device="cpu")
    lo = {t: np.inf for t in names}
    hi = {t: -np.inf for t in names}
    for start in range(0, len(chips), batch):
        outs = session.run(names, {INPUT_NAME: np.ascontiguousarray(chips[start:start + batch])})
        for t, v in zip(names, outs, strict=True):
            lo[t] = min(lo[t], float(v.min()))
            hi[t] = max(hi[t], float(v.max()))
    relu = _relu_after(model)
    return {t: (max(lo[t], 0.0) if t in relu else lo[t], hi[t]) for t in names}


def write_ranges(path: Path, ranges: Mapping[str, tuple[float, float]], fp32: bytes, *,
                 source: str = "") -> None:
    """Write the ranges file: per tensor the measured range and its uint8 scale and zero
    point (what the conversion uses), with the SHA-256 of the fp32 graph."""
    tensors = {}
    for t, (lo, hi) in ranges.items():
        scale, zp = uint8_qparams(lo, hi)
        tensors[t] = {"min": lo, "max": hi, "scale": scale, "zero_point": zp}
    doc = {"format": RANGES_FORMAT, "model": MODEL_NAME, "fp32_sha256": _sha256(fp32),
           "method": "minmax", "source": source, "tensors": tensors}
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def load_qparams(fp32: bytes, path: Path = RANGES_FILE) -> dict[str, QParams]:
    """Per-tensor (scale, zero point) from the ranges file; ModelError if it is missing or
    belongs to another fp32 graph."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read int8 ranges {path}: {exc}") from exc
    if doc.get("format") != RANGES_FORMAT or doc.get("fp32_sha256") != _sha256(fp32):
        raise ModelError(f"{path} was measured on another fp32 graph (or format); measure "
                         "it again with bench/embedder_variants.py --write-ranges")
    return {t: (float(v["scale"]), int(v["zero_point"])) for t, v in doc["tensors"].items()}


# --------------------------------------------------------------------------------------
# The rewrite


class _Writer:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.q: dict[str, tuple[str, QParams]] = {}
        """fp32 tensor name -> (its uint8 tensor, qparams)."""
        self.f: dict[str, str] = {}
        """fp32 tensor name -> float tensor holding it (a DequantizeLinear output or the
        original)."""

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def node(self, op: str, inputs: Iterable[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output

    def qp_consts(self, prefix: str, qp: QParams) -> tuple[str, str]:
        return (self.const(f"{prefix}_scale", np.array(qp[0], np.float32)),
                self.const(f"{prefix}_zp", np.array(qp[1], np.uint8)))

    def quantize(self, tensor: str, src: str, qp: QParams) -> None:
        """Record fp32 ``tensor`` as the uint8 quantisation of float tensor ``src``."""
        s, z = self.qp_consts(f"{tensor}_q", qp)
        self.q[tensor] = (self.node("QuantizeLinear", [src, s, z], f"{tensor}_q"), qp)

    def set_uint8(self, tensor: str, q_name: str, qp: QParams) -> None:
        self.q[tensor] = (q_name, qp)

    def float_of(self, tensor: str) -> str:
        """A float tensor with fp32 ``tensor``'s value (dequantised if it is quantised)."""
        if tensor in self.f:
            return self.f[tensor]
        if tensor in self.q:
            q, qp = self.q[tensor]
            s, z = self.qp_consts(f"{tensor}_dq", qp)
            self.f[tensor] = self.node("DequantizeLinear", [q, s, z], f"{tensor}_dq")
            return self.f[tensor]
        return tensor

    def weights(self, name: str, w: np.ndarray, b: np.ndarray, x_scale: float,
                qmax: int = WEIGHT_QMAX) -> tuple[str, str]:
        """Dequantised per-channel int8 weights (-qmax..qmax) and int32 bias of a
        convolution."""
        w = w.astype(np.float32)
        absmax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        ws = np.where(absmax > 0, absmax / qmax, 1.0).astype(np.float32)
        wq = np.clip(np.round(w / ws[:, None, None, None]), -qmax, qmax).astype(np.int8)
        bs = (np.float32(x_scale) * ws).astype(np.float32)
        bq = np.round(b.astype(np.float64) / bs.astype(np.float64))
        if np.abs(bq).max() >= 2**31 - 1:
            raise ModelError(f"{name}: bias does not fit int32 at its scale")
        wd = self.node("DequantizeLinear",
                       [self.const(f"{name}_wq", wq), self.const(f"{name}_ws", ws),
                        self.const(f"{name}_wz", np.zeros(len(ws), np.int8))],
                       f"{name}_w", axis=0)
        bd = self.node("DequantizeLinear",
                       [self.const(f"{name}_bq", bq.astype(np.int32)),
                        self.const(f"{name}_bs", bs),
                        self.const(f"{name}_bz", np.zeros(len(bs), np.int32))],
                       f"{name}_b", axis=0)
        return wd, bd


def _attr(node: onnx.NodeProto, name: str) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


def build_resnet_int8_onnx(fp32: bytes, qparams: Mapping[str, QParams] | None = None, *,
                           weight_qmax: int = WEIGHT_QMAX) -> bytes:
    """The int8 QDQ model of the fp32 dlib ResNet graph ``fp32`` (bytes from
    :func:`facesearch.vision.convert.dlib_resnet.build_resnet_onnx`), with ``qparams`` (default:
    the shipped ranges file). Deterministic: the same inputs give the same bytes.
    ``weight_qmax`` other than :data:`WEIGHT_QMAX` (e.g. 127, full 8 bits) is for
    experiments only: its vectors depend on the CPU."""
    if not 1 <= weight_qmax <= 127:
        raise ModelError(f"weight_qmax must be 1..127, got {weight_qmax}")
    if qparams is None:
        qparams = load_qparams(fp32)
    model = onnx.load_from_string(fp32)
    nodes = list(model.graph.node)
    ops = [n.op_type for n in nodes[:5]]
    if ops != ["Cast", "Sub", "Mul", "Transpose", "Conv"]:
        raise ModelError(f"unexpected fp32 graph head {ops}")
    relu = _relu_after(model)
    dropped_relus = set(relu.values())
    missing = [t for t in range_tensors(model) if t not in qparams]
    if missing:
        raise ModelError(f"int8 ranges lack {len(missing)} tensors (e.g. {missing[0]})")
    w = _Writer(model)
    sub, mul = nodes[1], nodes[2]
    mean = w.init[sub.input[1]].astype(np.float64).reshape(-1)
    scale = w.init[mul.input[1]].reshape(-1)
    if scale.size != 1 or not np.isclose(float(scale[0]), INPUT_SCALE):
        raise ModelError("the fp32 graph does not scale its input by 1/256")

    # Raw pixels, NCHW, as uint8 at scale 1/256: the first convolution's exact input.
    pixels = w.node("Transpose", [INPUT_NAME], "chips_nchw", perm=[0, 3, 1, 2])
    w.set_uint8(nodes[3].output[0], pixels, (INPUT_SCALE, 0))
    first = True
    for n in nodes[4:]:
        op = n.op_type
        if op == "Conv":
            x = n.input[0]
            xs = w.q[x][1][0]
            wt = w.init[n.input[1]]
            b = w.init[n.input[2]].astype(np.float64)
            if first:
                if any(_attr(n, "pads") or [0]):
                    raise ModelError("the first convolution is padded; its mean cannot fold")
                # conv(W, (p - m) / 256) + b = conv(W, p / 256) + b - sum W * m / 256
                b = b - (wt.astype(np.float64) * mean[None, :, None, None]).sum((1, 2, 3)) \
                    * INPUT_SCALE
                first = False
            wd, bd = w.weights(n.name, wt, b, xs, weight_qmax)
            y = w.node("Conv", [w.float_of(x), wd, bd], f"{n.output[0]}_f",
                       **{a.name: helper.get_attribute_value(a) for a in n.attribute})
            _store(w, n.output[0], y, qparams, relu)
        elif op == "Add":
            y = w.node("Add", [w.float_of(n.input[0]), w.float_of(n.input[1])],
                       f"{n.output[0]}_f")
            _store(w, n.output[0], y, qparams, relu)
        elif op == "Relu":
            if n.output[0] not in dropped_relus:
                raise ModelError(f"{n.name}: a ReLU that does not follow a Conv or an Add")
        elif op == "MaxPool":
            q, qp = w.q[n.input[0]]
            w.set_uint8(n.output[0], w.node("MaxPool", [q], f"{n.output[0]}_q",
                                            **{a.name: helper.get_attribute_value(a)
                                               for a in n.attribute}), qp)
        elif op == "Pad":
            q, qp = w.q[n.input[0]]
            pads = w.const(f"{n.output[0]}_pads", w.init[n.input[1]])
            zp = w.const(f"{n.output[0]}_value", np.array(qp[1], np.uint8))
            w.set_uint8(n.output[0], w.node("Pad", [q, pads, zp], f"{n.output[0]}_q",
                                            mode="constant"), qp)
        elif op == "AveragePool":
            _, qp = w.q[n.input[0]]
            y = w.node("AveragePool", [w.float_of(n.input[0])], f"{n.output[0]}_f",
                       **{a.name: helper.get_attribute_value(a) for a in n.attribute})
            w.quantize(n.output[0], y, qp)
        elif op == "GlobalAveragePool":
            w.f[n.output[0]] = w.node("GlobalAveragePool", [w.float_of(n.input[0])],
                                      n.output[0])
        elif op in ("Flatten", "MatMul"):
            ins = [w.float_of(i) if i not in w.init else w.const(i, w.init[i])
                   for i in n.input]
            w.f[n.output[0]] = w.node(op, ins, n.output[0],
                                      **{a.name: helper.get_attribute_value(a)
                                         for a in n.attribute})
        else:
            raise ModelError(f"int8 rewrite: unexpected {op} node {n.name}")
    if w.nodes[-1].output[0] != OUTPUT_NAME:
        raise ModelError("int8 rewrite: the graph does not end in the descriptor")
    graph = helper.make_graph(w.nodes, "dlib_resnet_v1_int8", list(model.graph.input),
                              list(model.graph.output), w.inits)
    out = helper.make_model(graph, opset_imports=list(model.opset_import),
                            ir_version=model.ir_version,
                            producer_name="facesearch.convert.resnet_int8",  # fixed: in the hash
                            producer_version=QUANTISER_VERSION,
                            doc_string="dlib face recognition ResNet v1, int8 QDQ (u8 "
                                       f"activations, per-channel s8 weights in "
                                       f"-{weight_qmax}..{weight_qmax}); input chips "
                                       "uint8 (N,150,150,3) RGB; output raw 128-D descriptor.")
    helper.set_model_props(out, {"fp32_sha256": _sha256(fp32),
                                 "quantiser_version": QUANTISER_VERSION})
    onnx.checker.check_model(out)
    data: bytes = out.SerializeToString(deterministic=True)
    return data


def _store(w: _Writer, tensor: str, y: str, qparams: Mapping[str, QParams],
           relu: Mapping[str, str]) -> None:
    """Quantise a Conv/Add result; if a ReLU follows, stand it in for the ReLU's output
    (zero point 0: the clamp at 0 is the ReLU)."""
    qp = qparams[tensor]
    if tensor in relu:
        if qp[1] != 0:
            raise ModelError(f"{tensor} feeds a ReLU but its zero point is {qp[1]}, not 0")
        w.quantize(relu[tensor], y, qp)
    else:
        w.quantize(tensor, y, qp)


def int8_model_file(ranges: Path = RANGES_FILE) -> str:
    """Cache file name of the int8 model: versions of both converters and a digest of the
    ranges file."""
    try:
        digest = _sha256(ranges.read_bytes())[:12]
    except OSError as exc:
        raise ModelError(f"cannot read int8 ranges {ranges}: {exc}") from exc
    return f"{INT8_MODEL_NAME}-{CONVERTER_VERSION}.{QUANTISER_VERSION}-{digest}.onnx"


def resnet_int8_onnx_path() -> Path:
    """Path of the cached int8 model, converting (fp32 graph, then the rewrite) on first use."""
    source = dlib_resnet_dat_path()

    def build() -> bytes:
        return build_resnet_int8_onnx(build_resnet_onnx(source))

    return ensure_model(int8_model_file(), build)


def cpu_has_vnni() -> bool | None:
    """Whether this x86-64 CPU has AVX-512 VNNI or AVX-VNNI (None: not x86-64, or the Linux
    CPU flags cannot be read). Informational: the int8 model's vectors do not depend on it."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), None)
    if flags is None:
        return None
    return "avx512_vnni" in flags or "avx_vnni" in flags


def check_chips() -> npt.NDArray[np.uint8]:
    """Two fixed ``(150, 150, 3)`` uint8 chips for the known-answer check: seeded uniform
    noise over 0-255 (large activations everywhere: where sums would saturate) and a smooth
    colour gradient. The same on every machine (numpy's PCG64 stream is fixed by the seed)."""
    noise = np.random.Generator(np.random.PCG64(20261205)).integers(
        0, 256, (CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    y, x = np.mgrid[0:CHIP_SIZE, 0:CHIP_SIZE]
    ramp = np.stack([x * 255 // (CHIP_SIZE - 1), y * 255 // (CHIP_SIZE - 1),
                     (x + y) * 255 // (2 * CHIP_SIZE - 2)], axis=-1).astype(np.uint8)
    return np.ascontiguousarray(np.stack([noise, ramp]))


def _check_vectors(session: Any) -> npt.NDArray[np.float32]:
    raw = session.run([OUTPUT_NAME], {INPUT_NAME: check_chips()})[0].astype(np.float64)
    unit = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
    return unit.astype(np.float32)


def write_check(session: Any, path: Path | None = None) -> None:
    """Write the known-answer vectors of the int8 ``session`` (an ONNX Runtime session of
    the current model) to ``path`` (default :data:`CHECK_FILE`)."""
    path = path or CHECK_FILE
    doc = {"format": 1, "model": INT8_MODEL_NAME, "quantiser_version": QUANTISER_VERSION,
           "chips": "facesearch.vision.convert.resnet_int8.check_chips()",
           "vectors": [[float(f"{v:.8g}") for v in row] for row in _check_vectors(session)]}
    path.write_text(json.dumps(doc, indent=1) + "\n")


def verify_int8_session(session: Any, path: Path | None = None) -> None:
    """Refuse (ModelError) an int8 session whose vectors for :func:`check_chips` differ from
    the reference (``path``, default :data:`CHECK_FILE`) by more than :data:`CHECK_MAX_ABS`
    in any component: on such a machine its vectors would not match other machines'."""
    path = path or CHECK_FILE
    try:
        doc = json.loads(path.read_text())
        want = np.asarray(doc["vectors"], np.float32)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot read the int8 known-answer file {path}: {exc}") from exc
    if doc.get("quantiser_version") != QUANTISER_VERSION or want.shape != (2, DESCRIPTOR_DIM):
        raise ModelError(f"{path} belongs to another int8 model; make it again with "
                         "python -m facesearch.vision.convert.resnet_int8 write-check")
    got = _check_vectors(session)
    worst = float(np.abs(got - want).max())
    if not worst <= CHECK_MAX_ABS:
        raise ModelError(
            f"precision int8 is refused on this machine: its int8 kernels give other vectors "
            f"than the reference (largest difference {worst:.2g} > {CHECK_MAX_ABS:g}; "
            f"{platform.machine()}, VNNI {cpu_has_vnni()}), so a collection indexed here would "
            f"not match one indexed elsewhere. Use precision fp32 (FACESEARCH_PRECISION=fp32), "
            f"which is exact everywhere")


def main(argv: list[str] | None = None) -> int:
    """``python -m facesearch.vision.convert.resnet_int8 write-check``: convert (or reuse the
    cached model) and write :data:`CHECK_FILE` from this machine's vectors."""
    import sys

    from facesearch.vision.runtime import create_session

    args = sys.argv[1:] if argv is None else argv
    if args != ["write-check"]:
        print("usage: python -m facesearch.vision.convert.resnet_int8 write-check", file=sys.stderr)
        return 2
    write_check(create_session(resnet_int8_onnx_path(), threads=1, device="cpu"))
    print(f"wrote {CHECK_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
