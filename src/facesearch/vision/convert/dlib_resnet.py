"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as ONNX.

The network is the one defined in dlib's ``examples/dnn_face_recognition_ex.cpp``: a 7x7/2
convolution and 3x3/2 max pool, then residual levels of 32, 64, 128, 256 and 256 filters
(the first block of each later level down-samples: its 3x3 convolution has stride 2 and its
shortcut is a 2x2/2 average pool), a global average pool and a 128-output fully connected
layer without bias. Strided convolutions and pools are unpadded, so in a down-sampling block
the convolution path can come out smaller than the shortcut; dlib's ``add_prev`` then keeps
the larger size and zero-fills missing channels and the bottom/right edge, which the graph
reproduces with ``Pad``. Each ``affine`` (inference batch norm) is folded into the
convolution before it.

Graph contract: input ``chips``, uint8, ``(N, 150, 150, 3)`` RGB; output ``descriptor``,
float32 ``(N, 128)``, dlib's raw descriptor (not normalised; dlib's same-person threshold is
a Euclidean distance of 0.6). Preprocessing ((pixel - channel mean) / 256) is in the graph.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facesearch.errors import ModelError
from facesearch.vision.convert.dlib_dat import (
    INPUT_ADD_LAYER_VERSIONS,
    AddPrev,
    Affine,
    Conv,
    DnnFile,
    FullyConnected,
    Pool,
    Relu,
    read_dnn,
)
from facesearch.vision.modelcache import ensure_model

CONVERTER_VERSION = "1"
"""Bumped whenever the produced graph changes; part of the cache file name."""
MODEL_NAME = "dlib-resnet-v1"
MODEL_FILE = f"{MODEL_NAME}-{CONVERTER_VERSION}.onnx"
INPUT_NAME = "chips"
OUTPUT_NAME = "descriptor"
CHIP_SIZE = 150
DESCRIPTOR_DIM = 128
OPSET = 17
IR_VERSION = 8


# --------------------------------------------------------------------------------------
# The architecture, from the input up, as in dnn_face_recognition_ex.cpp.


@dataclass(frozen=True)
class _Op:
    kind: str
    """con, affine, relu, max_pool, avg_pool, tag, skip, add_prev, fc."""
    n: int = 0
    """Filters/outputs (con, fc) or tag id (tag, skip, add_prev)."""
    size: int = 0
    """Kernel or window side in pixels (0: the whole input)."""
    stride: int = 1


_LAYER_KINDS = {"con", "affine", "relu", "max_pool", "avg_pool", "add_prev", "fc"}


def _block(n: int, stride: int) -> list[_Op]:
    return [_Op("con", n, 3, stride), _Op("affine"), _Op("relu"),
            _Op("con", n, 3, 1), _Op("affine")]


def _ares(n: int) -> list[_Op]:
    return [_Op("tag", 1), *_block(n, 1), _Op("add_prev", 1), _Op("relu")]


def _ares_down(n: int) -> list[_Op]:
    return [_Op("tag", 1), *_block(n, 2), _Op("tag", 2), _Op("skip", 1),
            _Op("avg_pool", 0, 2, 2), _Op("add_prev", 2), _Op("relu")]


def architecture() -> list[_Op]:
    """The network's operations from the input up (tags and skips included)."""
    ops = [_Op("con", 32, 7, 2), _Op("affine"), _Op("relu"), _Op("max_pool", 0, 3, 2)]
    ops += _ares(32) * 3
    ops += _ares_down(64) + _ares(64) * 3
    ops += _ares_down(128) + _ares(128) * 2
    ops += _ares_down(256) + _ares(256) * 2
    ops += _ares_down(256)
    ops += [_Op("avg_pool", 0, 0, 1), _Op("fc", DESCRIPTOR_DIM)]
    return ops


def _check_matches(dnn: DnnFile, ops: list[_Op], source: str) -> None:
    """Raise ModelError unless the decoded file has exactly this architecture."""
    expected = [2 if op.kind in _LAYER_KINDS else 1 for op in reversed(ops)]
    got = list(dnn.wrapper_versions)
    if len(got) != len(expected) or got[:-1] != expected[:-1] or (
            got[-1] not in INPUT_ADD_LAYER_VERSIONS):
        raise ModelError(f"{source} is not dlib's face recognition ResNet v1: its layer "
                         f"wiring differs ({len(got)} wrappers, expected {len(expected)})")
    if dnn.input.rows not in (None, CHIP_SIZE) or dnn.input.cols not in (None, CHIP_SIZE):
        raise ModelError(f"{source}: input is {dnn.input.rows}x{dnn.input.cols}, "
                         f"expected {CHIP_SIZE}x{CHIP_SIZE}")
    layer_ops = [op for op in ops if op.kind in _LAYER_KINDS]
    kinds = {"con": Conv, "affine": Affine, "relu": Relu, "max_pool": Pool,
             "avg_pool": Pool, "add_prev": AddPrev, "fc": FullyConnected}
    for i, (op, layer) in enumerate(zip(layer_ops, dnn.layers, strict=True)):
        ok = isinstance(layer, kinds[op.kind])
        if ok and isinstance(layer, Conv):
            pad = op.size // 2 if op.stride == 1 else 0
            ok = (layer.weights.shape[0] == op.n and layer.weights.shape[2:] == (op.size,) * 2
                  and layer.stride == (op.stride,) * 2 and layer.padding == (pad, pad))
        elif ok and isinstance(layer, Pool):
            ok = (layer.kind == op.kind.split("_")[0] and layer.window == (op.size,) * 2
                  and layer.stride == (op.stride,) * 2 and layer.padding == (0, 0))
        elif ok and isinstance(layer, FullyConnected):
            ok = layer.weights.shape[1] == op.n
        elif ok and isinstance(layer, Affine):
            ok = layer.per_channel and not layer.disabled
        if not ok:
            raise ModelError(f"{source}: layer {i} is {type(layer).__name__}, which does not "
                             f"match the expected {op}")


# --------------------------------------------------------------------------------------
# Graph construction


def _pooled(size: int, window: int, stride: int, pad: int) -> int:
    return 1 + (size + 2 * pad - window) // stride


class _Graph:
    """Accumulates ONNX nodes and initializers with deterministic names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, prefix: str, value: np.ndarray) -> str:
        name = self._name(prefix)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


Shape = tuple[int, int, int]
"""(channels, rows, cols) of one sample."""


def _pad_to(g: _Graph, x: str, shape: Shape, target: Shape) -> str:
    """Zero-extend channels and the bottom/right edge of ``x`` to ``target``."""
    extra = [t - s for s, t in zip(shape, target, strict=True)]
    if not any(extra):
        return x
    pads = np.array([0, 0, 0, 0, 0, *extra], np.int64)
    return g.node("Pad", [x, g.const("pads", pads)], mode="constant")


def _fold(conv: Conv, affine: Affine | None) -> tuple[np.ndarray, np.ndarray]:
    """Conv weights and bias with a following per-channel affine folded in (float32)."""
    w = conv.weights.astype(np.float64)
    b = conv.bias.astype(np.float64)
    if affine is not None:
        gamma = affine.gamma.astype(np.float64)
        w = w * gamma[:, None, None, None]
        b = b * gamma + affine.beta.astype(np.float64)
    return w.astype(np.float32), b.astype(np.float32)


def _build_graph(dnn: DnnFile, ops: list[_Op]) -> onnx.GraphProto:
    g = _Graph()
    mean = np.array(dnn.input.mean, np.float32)
    x = g.node("Cast", [INPUT_NAME], to=TensorProto.FLOAT)
    x = g.node("Sub", [x, g.const("mean", mean)])
    x = g.node("Mul", [x, g.const("scale", np.array(1.0 / 256.0, np.float32))])
    x = g.node("Transpose", [x], perm=[0, 3, 1, 2])
    shape: Shape = (3, CHIP_SIZE, CHIP_SIZE)

    tags: dict[int, tuple[str, Shape]] = {}
    layers = iter(dnn.layers)
    i = 0
    while i < len(ops):
        op = ops[i]
        if op.kind == "tag":
            tags[op.n] = (x, shape)
        elif op.kind == "skip":
            x, shape = tags[op.n]
        elif op.kind == "con":
            conv = next(layers)
            assert isinstance(conv, Conv)
            affine = None
            if i + 1 < len(ops) and ops[i + 1].kind == "affine":
                folded = next(layers)
                assert isinstance(folded, Affine)
                affine = folded
                i += 1
            if conv.weights.shape[1] != shape[0] or (
                    affine is not None and affine.gamma.size != conv.weights.shape[0]):
                raise ModelError(f"convolution {conv.weights.shape} does not fit its input "
                                 f"{shape} or the affine layer after it")
            w, b = _fold(conv, affine)
            (sy, sx), (py, px) = conv.stride, conv.padding
            x = g.node("Conv", [x, g.const("w", w), g.const("b", b)],
                       kernel_shape=list(w.shape[2:]), strides=[sy, sx], pads=[py, px, py, px])
            shape = (w.shape[0], _pooled(shape[1], w.shape[2], sy, py),
                     _pooled(shape[2], w.shape[3], sx, px))
        elif op.kind == "affine":
            aff = next(layers)
            assert isinstance(aff, Affine)
            view = (1, shape[0], 1, 1) if aff.per_channel else (1, *shape)
            if aff.gamma.size != math.prod(view):
                raise ModelError(f"affine layer of {aff.gamma.size} values on input {shape}")
            x = g.node("Mul", [x, g.const("gamma", aff.gamma.reshape(view))])
            x = g.node("Add", [x, g.const("beta", aff.beta.reshape(view))])
        elif op.kind == "relu":
            next(layers)
            x = g.node("Relu", [x])
        elif op.kind in ("max_pool", "avg_pool"):
            pool = next(layers)
            assert isinstance(pool, Pool)
            wy = pool.window[0] or shape[1]
            wx = pool.window[1] or shape[2]
            (sy, sx), (py, px) = pool.stride, pool.padding
            new_shape = (shape[0], _pooled(shape[1], wy, sy, py), _pooled(shape[2], wx, sx, px))
            if pool.kind == "avg" and new_shape[1:] == (1, 1) and (wy, wx) == shape[1:]:
                x = g.node("GlobalAveragePool", [x])
            else:
                x = g.node("MaxPool" if pool.kind == "max" else "AveragePool", [x],
                           kernel_shape=[wy, wx], strides=[sy, sx], pads=[py, px, py, px])
            shape = new_shape
        elif op.kind == "add_prev":
            next(layers)
            other, other_shape = tags[op.n]
            target = tuple(max(a, b) for a, b in zip(shape, other_shape, strict=True))
            x = g.node("Add", [_pad_to(g, x, shape, target),  # type: ignore[arg-type]
                               _pad_to(g, other, other_shape, target)])  # type: ignore[arg-type]
            shape = target  # type: ignore[assignment]
        elif op.kind == "fc":
            fc = next(layers)
            assert isinstance(fc, FullyConnected)
            if fc.weights.shape[0] != shape[0] * shape[1] * shape[2]:
                raise ModelError(f"fully connected layer takes {fc.weights.shape[0]} inputs "
                                 f"but gets {shape}")
            x = g.node("Flatten", [x], axis=1)
            x = g.node("MatMul", [x, g.const("fc_w", fc.weights)])
            if fc.bias is not None:
                x = g.node("Add", [x, g.const("fc_b", fc.bias)])
            shape = (fc.weights.shape[1], 1, 1)
        i += 1

    last = g.nodes[-1]
    last.output[0] = OUTPUT_NAME
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8,
                                            ["N", CHIP_SIZE, CHIP_SIZE, 3])]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT,
                                             ["N", DESCRIPTOR_DIM])]
    return helper.make_graph(g.nodes, "dlib_resnet_v1", inputs, outputs, g.initializers)


def build_resnet_onnx(dat_path: Path) -> bytes:
    """Convert dlib's ``dlib_face_recognition_resnet_model_v1.dat`` to ONNX model bytes.

    Deterministic: the same file gives the same bytes. Raises :class:`ModelError` if the
    file cannot be read or is not that network.
    """
    try:
        data = dat_path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read dlib model file {dat_path}: {exc}") from exc
    dnn = read_dnn(data, str(dat_path))
    ops = architecture()
    _check_matches(dnn, ops, str(dat_path))
    model = helper.make_model(
        _build_graph(dnn, ops),
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="facesearch.convert.dlib_resnet",  # fixed: part of the hash
        producer_version=CONVERTER_VERSION,
        doc_string="dlib face recognition ResNet v1 (dlib_face_recognition_resnet_model_v1"
                   ".dat); input chips uint8 (N,150,150,3) RGB; output raw 128-D descriptor.",
    )
    helper.set_model_props(model, {
        "source_file": dat_path.name,
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "converter_version": CONVERTER_VERSION,
    })
    onnx.checker.check_model(model)
    data_out: bytes = model.SerializeToString(deterministic=True)
    return data_out


def dlib_resnet_dat_path() -> Path:
    """Where the installed ``face_recognition_models`` package keeps the dlib model."""
    try:
        import face_recognition_models
    except ImportError as exc:
        raise ModelError("the face-recognition-models package is not installed; it ships "
                         "dlib_face_recognition_resnet_model_v1.dat") from exc
    return Path(face_recognition_models.face_recognition_model_location())


def resnet_onnx_path() -> Path:
    """Path of the cached ONNX model, converting the installed dlib model on first use."""
    source = dlib_resnet_dat_path()
    return ensure_model(MODEL_FILE, lambda: build_resnet_onnx(source))
