"""A minimal reader for TensorFlow Lite ``.tflite`` flatbuffers (no TensorFlow needed).

Reads what a float model's graph needs: tensors (shape, type, constant data), operators
(builtin code, inputs, outputs, options table) and the subgraph's inputs and outputs. Field
slots follow TensorFlow Lite's ``schema.fbs``. Sparse and quantized tensors are not supported.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from facesearch.errors import ModelError

if TYPE_CHECKING:
    import onnx

#: ``BuiltinOperator`` codes used by the converters (schema.fbs).
ADD = 0
CONCATENATION = 2
CONV_2D = 3
DEPTHWISE_CONV_2D = 4
DEQUANTIZE = 6
FULLY_CONNECTED = 9
LOGISTIC = 14
MAX_POOL_2D = 17
MUL = 18
RELU = 19
RELU6 = 21
RESHAPE = 22
RESIZE_BILINEAR = 23
PAD = 34
TRANSPOSE = 39
PRELU = 54
AVERAGE_POOL_2D = 1

#: ``TensorType`` to numpy dtype (schema.fbs).
_DTYPES: dict[int, type] = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64,
                            9: np.int8}


class _Table:
    """A flatbuffer table at byte offset ``pos`` of ``buf``."""

    __slots__ = ("_vt", "_vt_len", "buf", "pos")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self._vt = pos - struct.unpack_from("<i", buf, pos)[0]
        self._vt_len = struct.unpack_from("<H", buf, self._vt)[0]

    def _field(self, slot: int) -> int:
        """Absolute offset of field ``slot`` (0-based), or 0 when absent."""
        off = 4 + 2 * slot
        if off >= self._vt_len:
            return 0
        rel = struct.unpack_from("<H", self.buf, self._vt + off)[0]
        return self.pos + rel if rel else 0

    def scalar(self, slot: int, fmt: str, default: int) -> int:
        at = self._field(slot)
        return struct.unpack_from("<" + fmt, self.buf, at)[0] if at else default

    def _indirect(self, at: int) -> int:
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def table(self, slot: int) -> _Table | None:
        at = self._field(slot)
        return _Table(self.buf, self._indirect(at)) if at else None

    def _vector(self, slot: int) -> tuple[int, int]:
        at = self._field(slot)
        if not at:
            return 0, 0
        vec = self._indirect(at)
        return vec + 4, struct.unpack_from("<I", self.buf, vec)[0]

    def tables(self, slot: int) -> list[_Table]:
        start, n = self._vector(slot)
        return [_Table(self.buf, self._indirect(start + 4 * i)) for i in range(n)]

    def ints(self, slot: int) -> list[int]:
        start, n = self._vector(slot)
        return list(struct.unpack_from(f"<{n}i", self.buf, start)) if n else []

    def raw(self, slot: int) -> bytes:
        start, n = self._vector(slot)
        return bytes(self.buf[start:start + n])

    def string(self, slot: int) -> str:
        return self.raw(slot).decode("utf-8", "replace")


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: type
    data: np.ndarray | None
    """Constant contents (reshaped to ``shape``), or ``None`` for activations."""


@dataclass(frozen=True)
class Operator:
    code: int
    """``BuiltinOperator`` value."""
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Graph:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


# Options tables: field slots and flatbuffer formats, per builtin operator (schema.fbs).
_OPTIONS: dict[int, tuple[tuple[str, str, int], ...]] = {
    CONV_2D: (("padding", "b", 0), ("stride_w", "i", 0), ("stride_h", "i", 0),
              ("activation", "b", 0), ("dilation_w", "i", 1), ("dilation_h", "i", 1)),
    DEPTHWISE_CONV_2D: (("padding", "b", 0), ("stride_w", "i", 0), ("stride_h", "i", 0),
                        ("depth_multiplier", "i", 0), ("activation", "b", 0),
                        ("dilation_w", "i", 1), ("dilation_h", "i", 1)),
    MAX_POOL_2D: (("padding", "b", 0), ("stride_w", "i", 0), ("stride_h", "i", 0),
                  ("filter_w", "i", 0), ("filter_h", "i", 0), ("activation", "b", 0)),
    AVERAGE_POOL_2D: (("padding", "b", 0), ("stride_w", "i", 0), ("stride_h", "i", 0),
                      ("filter_w", "i", 0), ("filter_h", "i", 0), ("activation", "b", 0)),
    ADD: (("activation", "b", 0),),
    MUL: (("activation", "b", 0),),
    CONCATENATION: (("axis", "i", 0), ("activation", "b", 0)),
    FULLY_CONNECTED: (("activation", "b", 0),),
    RESIZE_BILINEAR: (("_new_h", "i", 0), ("_new_w", "i", 0), ("align_corners", "b", 0),
                      ("half_pixel_centers", "b", 0)),
}

#: ``Padding`` values.
PADDING_SAME = 0
PADDING_VALID = 1
#: ``ActivationFunctionType`` values.
ACT_NONE = 0
ACT_RELU = 1
ACT_RELU6 = 3


def read_tflite(data: bytes) -> Graph:
    """Parse the first subgraph of a ``.tflite`` model. Raises :class:`ModelError`."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError("not a TensorFlow Lite model (missing the TFL3 identifier)")
    try:
        model = _Table(data, struct.unpack_from("<I", data, 0)[0])
        codes = []
        for oc in model.tables(1):
            code = oc.scalar(3, "i", 0)
            codes.append(max(code, oc.scalar(0, "b", 0)))
        buffers = [b.raw(0) for b in model.tables(4)]
        subgraphs = model.tables(2)
        if not subgraphs:
            raise ModelError("TensorFlow Lite model has no subgraph")
        sg = subgraphs[0]
        tensors = []
        for t in sg.tables(0):
            shape = tuple(t.ints(0))
            ttype = t.scalar(1, "b", 0)
            if ttype not in _DTYPES:
                raise ModelError(f"unsupported tensor type {ttype}")
            if t.table(6) is not None:
                raise ModelError("sparse tensors are not supported")
            dtype = _DTYPES[ttype]
            buf = buffers[t.scalar(2, "I", 0)]
            arr: np.ndarray | None = None
            if buf:
                arr = np.frombuffer(buf, dtype=dtype).reshape(shape).copy()
            tensors.append(Tensor(t.string(3), shape, dtype, arr))
        ops = []
        for op in sg.tables(3):
            code = codes[op.scalar(0, "I", 0)]
            opts: dict[str, int] = {}
            spec = _OPTIONS.get(code)
            table = op.table(4)
            if spec and table is not None:
                opts = {name: table.scalar(i, fmt, default)
                        for i, (name, fmt, default) in enumerate(spec)}
            ops.append(Operator(code, tuple(op.ints(1)), tuple(op.ints(2)), opts))
        return Graph(tensors, ops, tuple(sg.ints(1)), tuple(sg.ints(2)))
    except (struct.error, IndexError, ValueError) as exc:
        raise ModelError(f"corrupt TensorFlow Lite model: {exc}") from exc


# --- ONNX emission ---------------------------------------------------------------------------

_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}
OPSET = 17


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding (before, after) for one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def to_onnx(graph: Graph, *, input_scale: float, input_offset: float,
            name: str = "tflite", doc: str = "") -> onnx.ModelProto:
    """Translate a float TFLite graph of convolutional ops into an ONNX model.

    The ONNX input ``image`` is ``(N, H, W, C)`` uint8 (batch size free); it is normalised in
    the graph to ``pixel * input_scale + input_offset`` and run in NCHW. Constant fp16 weights
    (``DEQUANTIZE``) are folded to float32. Outputs keep their TFLite names and shapes, except
    that the leading batch dimension is free. Raises :class:`ModelError` on an unsupported op.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    tensors = graph.tensors
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    consts: dict[int, np.ndarray] = {i: t.data for i, t in enumerate(tensors) if t.data is not None}
    names: dict[int, str] = {}
    counter = [0]

    def fresh(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(arr: np.ndarray, prefix: str = "c") -> str:
        nm = fresh(prefix)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), nm))
        return nm

    def shape(i: int) -> tuple[int, ...]:
        return tensors[i].shape

    def out_name(i: int) -> str:
        names[i] = f"t{i}"
        return names[i]

    def activation(src: str, act: int) -> str:
        if act == ACT_NONE:
            return src
        dst = fresh("act")
        if act == ACT_RELU:
            nodes.append(helper.make_node("Relu", [src], [dst]))
        elif act == ACT_RELU6:
            nodes.append(helper.make_node("Clip", [src, const(np.array(0, np.float32)),
                                                        const(np.array(6, np.float32))],
                                          [dst]))
        else:
            raise ModelError(f"unsupported fused activation {act}")
        return dst

    if len(graph.inputs) != 1 or len(shape(graph.inputs[0])) != 4:
        raise ModelError("expected one NHWC image input")
    in_idx = graph.inputs[0]
    _, in_h, in_w, in_c = shape(in_idx)
    cast = fresh("cast")
    nodes.append(helper.make_node("Cast", ["image"], [cast], to=TensorProto.FLOAT))
    nchw = fresh("nchw")
    nodes.append(helper.make_node("Transpose", [cast], [nchw], perm=[0, 3, 1, 2]))
    scaled = fresh("scaled")
    nodes.append(helper.make_node("Mul", [nchw, const(np.array(input_scale, np.float32))],
                                  [scaled]))
    nodes.append(helper.make_node("Add", [scaled, const(np.array(input_offset, np.float32))],
                                  [out_name(in_idx)]))

    for op in graph.operators:
        o = op.options
        ins = op.inputs
        if op.code == DEQUANTIZE:
            q = consts.get(ins[0])
            if q is None:
                raise ModelError("DEQUANTIZE of a non-constant tensor is not supported")
            consts[op.outputs[0]] = q.astype(np.float32)
            continue
        outs = op.outputs
        if op.code in (CONV_2D, DEPTHWISE_CONV_2D):
            w = consts.get(ins[1])
            b = consts.get(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            if w is None:
                raise ModelError("convolution weights must be constant")
            _, h, wd, _ = shape(ins[0])
            if op.code == CONV_2D:
                weight = w.transpose(0, 3, 1, 2)  # OHWI -> OIHW
                group = 1
            else:
                weight = w.transpose(3, 0, 1, 2)  # 1HW(C*m) -> (C*m)1HW
                group = shape(ins[0])[3]
            kh, kw = weight.shape[2:]
            pads = [0, 0, 0, 0]
            if o["padding"] == PADDING_SAME:
                pt, pb = _same_pads(h, kh, o["stride_h"], o["dilation_h"])
                pl, pr = _same_pads(wd, kw, o["stride_w"], o["dilation_w"])
                pads = [pt, pl, pb, pr]
            conv_in = [names[ins[0]], const(weight.astype(np.float32), "w")]
            if b is not None:
                conv_in.append(const(b.astype(np.float32), "b"))
            dst = fresh("conv")
            nodes.append(helper.make_node(
                "Conv", conv_in, [dst], kernel_shape=[kh, kw],
                strides=[o["stride_h"], o["stride_w"]],
                dilations=[o["dilation_h"], o["dilation_w"]], pads=pads, group=group))
            nodes.append(helper.make_node("Identity", [activation(dst, o["activation"])],
                                          [out_name(outs[0])]))
        elif op.code in (MAX_POOL_2D, AVERAGE_POOL_2D):
            _, h, wd, _ = shape(ins[0])
            pads = [0, 0, 0, 0]
            if o["padding"] == PADDING_SAME:
                pt, pb = _same_pads(h, o["filter_h"], o["stride_h"])
                pl, pr = _same_pads(wd, o["filter_w"], o["stride_w"])
                pads = [pt, pl, pb, pr]
            if any(pads) and op.code == AVERAGE_POOL_2D:
                raise ModelError("padded AVERAGE_POOL_2D is not supported")
            dst = fresh("pool")
            nodes.append(helper.make_node(
                "MaxPool" if op.code == MAX_POOL_2D else "AveragePool", [names[ins[0]]], [dst],
                kernel_shape=[o["filter_h"], o["filter_w"]], strides=[o["stride_h"], o["stride_w"]],
                pads=pads))
            nodes.append(helper.make_node("Identity", [activation(dst, o["activation"])],
                                          [out_name(outs[0])]))
        elif op.code in (ADD, MUL):
            a, b2 = (names[i] if i in names else const(consts[i].astype(np.float32)) for i in ins)
            dst = fresh("bin")
            nodes.append(helper.make_node("Add" if op.code == ADD else "Mul", [a, b2], [dst]))
            nodes.append(helper.make_node("Identity", [activation(dst, o["activation"])],
                                          [out_name(outs[0])]))
        elif op.code in (RELU, RELU6):
            act = ACT_RELU if op.code == RELU else ACT_RELU6
            nodes.append(helper.make_node("Identity", [activation(names[ins[0]], act)],
                                          [out_name(outs[0])]))
        elif op.code == PAD:
            p = consts.get(ins[1])
            if p is None or p.shape != (4, 2) or len(shape(ins[0])) != 4:
                raise ModelError("PAD needs constant (4, 2) paddings on a 4-D tensor")
            order = [0, 3, 1, 2]  # NHWC rows to NCHW
            pads = [int(p[r, 0]) for r in order] + [int(p[r, 1]) for r in order]
            nodes.append(helper.make_node(
                "Pad", [names[ins[0]], const(np.array(pads, np.int64))], [out_name(outs[0])]))
        elif op.code == RESIZE_BILINEAR:
            size = consts.get(ins[1])
            if size is None:
                raise ModelError("RESIZE_BILINEAR needs a constant size")
            if o["align_corners"]:
                mode = "align_corners"
            elif o["half_pixel_centers"]:
                mode = "half_pixel"
            else:
                mode = "asymmetric"
            # The batch size is free: the sizes are the input's (N, C) and the new (H, W).
            shp = fresh("shape")
            nodes.append(helper.make_node("Shape", [names[ins[0]]], [shp], start=0, end=2))
            full = fresh("sizes")
            nodes.append(helper.make_node(
                "Concat", [shp, const(np.array([int(size[0]), int(size[1])], np.int64))], [full],
                axis=0))
            nodes.append(helper.make_node(
                "Resize", [names[ins[0]], "", "", full], [out_name(outs[0])], mode="linear",
                coordinate_transformation_mode=mode))
        elif op.code == RESHAPE:
            src = names[ins[0]]
            if len(shape(ins[0])) == 4:
                nhwc = fresh("nhwc")
                nodes.append(helper.make_node("Transpose", [src], [nhwc], perm=[0, 2, 3, 1]))
                src = nhwc
            target = [-1, *shape(outs[0])[1:]]
            nodes.append(helper.make_node(
                "Reshape", [src, const(np.array(target, np.int64))], [out_name(outs[0])]))
        elif op.code == CONCATENATION:
            rank = len(shape(ins[0]))
            axis = o["axis"] % rank
            if rank == 4:
                axis = _NHWC_TO_NCHW_AXIS[axis]
            dst = fresh("cat")
            nodes.append(helper.make_node("Concat", [names[i] for i in ins], [dst], axis=axis))
            nodes.append(helper.make_node("Identity", [activation(dst, o["activation"])],
                                          [out_name(outs[0])]))
        else:
            raise ModelError(f"unsupported TensorFlow Lite operator {op.code}")

    outputs = []
    for i in graph.outputs:
        t = tensors[i]
        src = names[i]
        if len(t.shape) == 4:  # back to TFLite's NHWC layout
            nhwc = fresh("nhwc")
            nodes.append(helper.make_node("Transpose", [src], [nhwc], perm=[0, 2, 3, 1]))
            src = nhwc
        nodes.append(helper.make_node("Identity", [src], [t.name]))
        outputs.append(
            helper.make_tensor_value_info(t.name, TensorProto.FLOAT, ["N", *t.shape[1:]]))
    inp = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", in_h, in_w, in_c])
    g = helper.make_graph(nodes, name, [inp], outputs, initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="facesearch", doc_string=doc)
    model.ir_version = 8
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"converted model is invalid: {exc}") from exc
    return model
