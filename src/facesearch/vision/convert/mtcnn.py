"""MTCNN (P-, R- and O-Net) from facenet-pytorch's packaged weights to ONNX, without torch.

facenet-pytorch ships ``data/{pnet,rnet,onet}.pt``: state dicts saved by ``torch.save``. They
are read here with a restricted unpickler that only builds ``OrderedDict`` s of float tensors
(both the legacy stream format and the zip format), and the three networks are written as
ONNX graphs matching ``facenet_pytorch/models/mtcnn.py``:

- P-Net: ``image`` (1, H, W, 3) uint8, any H, W >= 12 -> ``reg`` (1, 4, h, w) box offsets and
  ``prob`` (1, h, w) face probability, one cell per 12x12 window at stride 2.
- R-Net: ``image`` (N, 24, 24, 3) uint8 -> ``reg`` (N, 4), ``prob`` (N,).
- O-Net: ``image`` (N, 48, 48, 3) uint8 -> ``reg`` (N, 4), ``points`` (N, 10) (five x then five
  y, as fractions of the crop: image-left eye, image-right eye, nose, mouth left, mouth right),
  ``prob`` (N,).

Pixels are normalised in the graph as ``(p - 127.5) / 128``, RGB.
"""

from __future__ import annotations

import importlib.util
import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facesearch.errors import ModelError
from facesearch.vision import modelcache

VERSION = 1
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64,
                   "HalfStorage": np.float16, "LongStorage": np.int64, "IntStorage": np.int32}


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: type
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass(frozen=True)
class _StorageType:
    dtype: type


def _rebuild_tensor_v2(storage: _StorageRef, offset: int, size: tuple[int, ...],
                       stride: tuple[int, ...], *_: Any) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Builds only ordered dicts of tensor references; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return _StorageRef(str(pid[2]), pid[1].dtype, int(pid[4]))


def _materialise(refs: dict[str, Any], storages: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, ref in refs.items():
        if not isinstance(ref, _TensorRef):
            raise ModelError(f"state dict entry {name} is not a tensor")
        flat = storages[ref.storage.key]
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[ref.offset:], shape=ref.size, strides=[s * item for s in ref.stride])
        out[name] = np.array(view, dtype=np.float32)
    return out


def read_state_dict(data: bytes) -> dict[str, np.ndarray]:
    """The tensors of a ``torch.save`` d state dict (legacy or zip format), as float32 arrays.

    Raises :class:`ModelError` if the bytes are not such a file.
    """
    try:
        if data[:4] == b"PK\x03\x04":
            return _read_zip(data)
        return _read_legacy(data)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, struct.error,
            zipfile.BadZipFile, TypeError, AttributeError, IndexError) as exc:
        raise ModelError(f"cannot read torch state dict: {exc}") from exc


def _read_legacy(data: bytes) -> dict[str, np.ndarray]:
    f = io.BytesIO(data)
    if _Unpickler(f).load() != _LEGACY_MAGIC:
        raise ModelError("not a torch.save file (bad magic number)")
    _Unpickler(f).load()  # protocol version
    _Unpickler(f).load()  # system info
    refs = _Unpickler(f).load()
    keys = _Unpickler(f).load()
    by_key = {r.storage.key: r.storage for r in refs.values() if isinstance(r, _TensorRef)}
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        dtype = np.dtype(by_key[key].dtype) if key in by_key else np.dtype(np.float32)
        raw = f.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise ModelError("torch.save file is truncated")
        storages[key] = np.frombuffer(raw, dtype=dtype)
    return _materialise(refs, storages)


def _read_zip(data: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        pkl = next(n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
        root = pkl[: -len("data.pkl")]
        refs = _Unpickler(io.BytesIO(z.read(pkl))).load()
        storages: dict[str, np.ndarray] = {}
        for r in refs.values():
            if isinstance(r, _TensorRef) and r.storage.key not in storages:
                raw = z.read(f"{root}data/{r.storage.key}")
                storages[r.storage.key] = np.frombuffer(raw, dtype=r.storage.dtype)
    return _materialise(refs, storages)


# --- ONNX -------------------------------------------------------------------------------------

# Layer lists per network: ("conv", name, pool_kernel, pool_stride) pools follow their PReLU.
_NETS: dict[str, dict[str, Any]] = {
    "pnet": {"size": None, "convs": [("conv1", 2, 2), ("conv2", 0, 0), ("conv3", 0, 0)],
             "dense": [], "heads": {"prob": "conv4_1", "reg": "conv4_2"}},
    "rnet": {"size": 24, "convs": [("conv1", 3, 2), ("conv2", 3, 2), ("conv3", 0, 0)],
             "dense": ["dense4"], "heads": {"prob": "dense5_1", "reg": "dense5_2"}},
    "onet": {"size": 48, "convs": [("conv1", 3, 2), ("conv2", 3, 2), ("conv3", 2, 2),
                                   ("conv4", 0, 0)],
             "dense": ["dense5"],
             "heads": {"prob": "dense6_1", "reg": "dense6_2", "points": "dense6_3"}},
}


def build_onnx(net: str, weights: dict[str, np.ndarray]) -> bytes:
    """Serialized ONNX model for ``net`` ("pnet", "rnet" or "onet") with ``weights``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    spec = _NETS[net]
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def w(name: str, arr: np.ndarray | None = None) -> str:
        if arr is None:
            if name not in weights:
                raise ModelError(f"{net}: missing weight {name}")
            arr = weights[name]
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name))
        return name

    def prelu(x: str, layer: str, spatial: bool) -> str:
        slope = weights.get(f"{layer}.weight")
        if slope is None:
            raise ModelError(f"{net}: missing weight {layer}.weight")
        arr = slope.reshape(-1, 1, 1) if spatial else slope
        nodes.append(helper.make_node("PRelu", [x, w(f"{layer}.weight", arr)], [layer]))
        return layer

    nodes.append(helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]))
    nodes.append(helper.make_node("Sub", ["nchw", w("mean", np.array(127.5, np.float32))], ["c"]))
    nodes.append(helper.make_node("Mul", ["c", w("scale", np.array(0.0078125, np.float32))],
                                  ["x"]))
    x = "x"
    for i, (layer, pk, ps) in enumerate(spec["convs"], 1):
        wt = weights.get(f"{layer}.weight")
        if wt is None or wt.ndim != 4:
            raise ModelError(f"{net}: missing or bad weight {layer}.weight")
        nodes.append(helper.make_node(
            "Conv", [x, w(f"{layer}.weight"), w(f"{layer}.bias")], [layer],
            kernel_shape=list(wt.shape[2:])))
        x = prelu(layer, f"prelu{i}", spatial=True)
        if pk:
            nodes.append(helper.make_node("MaxPool", [x], [f"pool{i}"], kernel_shape=[pk, pk],
                                          strides=[ps, ps], ceil_mode=1))
            x = f"pool{i}"
    outputs = []
    if spec["dense"]:
        # facenet-pytorch flattens in (W, H, C) order: permute(0, 3, 2, 1).
        nodes.append(helper.make_node("Transpose", [x], ["whc"], perm=[0, 3, 2, 1]))
        nodes.append(helper.make_node("Flatten", ["whc"], ["flat"], axis=1))
        x = "flat"
        for layer in spec["dense"]:
            nodes.append(helper.make_node(
                "Gemm", [x, w(f"{layer}.weight"), w(f"{layer}.bias")], [layer], transB=1))
            x = prelu(layer, f"prelu{len(spec['convs']) + 1}", spatial=False)
        for out, layer in spec["heads"].items():
            nodes.append(helper.make_node(
                "Gemm", [x, w(f"{layer}.weight"), w(f"{layer}.bias")], [f"{out}_raw"], transB=1))
        nodes.append(helper.make_node("Softmax", ["prob_raw"], ["softmax"], axis=1))
        nodes.append(helper.make_node(
            "Gather", ["softmax", _int_const(inits, "one", 1)], ["prob"], axis=1))
        nodes.append(helper.make_node("Identity", ["reg_raw"], ["reg"]))
        outputs += [helper.make_tensor_value_info("reg", TensorProto.FLOAT, ["N", 4]),
                    helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N"])]
        if "points" in spec["heads"]:
            nodes.append(helper.make_node("Identity", ["points_raw"], ["points"]))
            outputs.append(helper.make_tensor_value_info("points", TensorProto.FLOAT, ["N", 10]))
        size = spec["size"]
        inp = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", size, size, 3])
    else:
        for out, layer in spec["heads"].items():
            nodes.append(helper.make_node(
                "Conv", [x, w(f"{layer}.weight"), w(f"{layer}.bias")], [f"{out}_raw"],
                kernel_shape=[1, 1]))
        nodes.append(helper.make_node("Softmax", ["prob_raw"], ["softmax"], axis=1))
        nodes.append(helper.make_node("Gather", ["softmax", _int_const(inits, "one", 1)],
                                      ["prob"], axis=1))
        nodes.append(helper.make_node("Identity", ["reg_raw"], ["reg"]))
        outputs += [helper.make_tensor_value_info("reg", TensorProto.FLOAT, [1, 4, "h", "w"]),
                    helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, "h", "w"])]
        inp = helper.make_tensor_value_info("image", TensorProto.UINT8, [1, "H", "W", 3])
    graph = helper.make_graph(nodes, f"mtcnn_{net}", [inp], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="facesearch",
                              doc_string=f"MTCNN {net} from facenet-pytorch weights")
    model.ir_version = 8
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{net}: converted model is invalid: {exc}") from exc
    return model.SerializeToString()


def _int_const(inits: list[Any], name: str, value: int) -> str:
    from onnx import numpy_helper

    if not any(i.name == name for i in inits):
        inits.append(numpy_helper.from_array(np.array(value, np.int64), name))
    return name


def weights_path(net: str) -> Path:
    """The packaged ``.pt`` file of ``net`` (found without importing facenet_pytorch/torch)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("MTCNN weights need the facenet-pytorch package "
                         "(pip install --no-deps facenet-pytorch)")
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / f"{net}.pt"
        if path.is_file():
            return path
    raise ModelError(f"facenet-pytorch has no data/{net}.pt")


def ensure_mtcnn(net: str) -> Path:
    """Cached ONNX model of MTCNN ``net`` ("pnet", "rnet", "onet"), converted once."""
    if net not in _NETS:
        raise ValueError(f"unknown MTCNN network {net!r}")

    def build() -> bytes:
        return build_onnx(net, read_state_dict(weights_path(net).read_bytes()))

    return modelcache.ensure_model(f"mtcnn-{net}-v{VERSION}.onnx", build)
