"""Reader for dlib's binary serialization format, enough for dlib DNN model files (``.dat``).

The encodings follow ``dlib/serialize.h`` and the DNN types' ``serialize`` functions:

- integer: one control byte (low nibble: number of magnitude bytes, 0-8; bit 0x80: negative;
  bits 0x70 always clear) then the magnitude, little-endian;
- floating point: an int64 mantissa then an int16 exponent, both as integers; the value is
  ``mantissa * 2**exponent``, except exponents 32000/32001/32002 (+inf, -inf, NaN);
- bool: one ASCII byte, ``'1'`` or ``'0'``;
- string: its length (integer) then its bytes;
- tensor (version 2): version, then ``num_samples, k, nr, nc`` then raw little-endian float32
  in that (NCHW) order; alias tensor (version 1): version and the same four dimensions.

A network is written by its outermost wrapper first, and every wrapper writes its version,
then its whole sub-network, then its own fields. So a file reads: the loss layer's version
and fields, the versions of every wrapper from the output down to the input, the input layer,
then each computational layer's fields from the input up. Tag and skip wrappers store only a
version, so which layers they wrap must come from the network's definition (see
:mod:`facesearch.vision.convert.dlib_resnet`). Only what is needed for inference is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from facesearch.errors import ModelError

F32Array = npt.NDArray[np.float32]

_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}

# Wrapper versions written by dlib 19.x and later (dlib/dnn/core.h).
ADD_LAYER_VERSION = 2          # add_layer over another layer
INPUT_ADD_LAYER_VERSIONS = (2, 3)  # add_layer directly over the input layer
TAG_OR_SKIP_VERSION = 1        # add_tag_layer, add_skip_layer (and add_loss_layer)


class DatReader:
    """Sequential decoder of dlib-serialized values from an in-memory byte string."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        self._data = memoryview(data)
        self.pos = 0
        """Offset of the next unread byte."""
        self.source = source

    def error(self, message: str, at: int | None = None) -> ModelError:
        """A :class:`ModelError` naming the source and byte offset."""
        where = self.pos if at is None else at
        return ModelError(f"bad dlib model file {self.source} at byte {where}: {message}")

    def at_end(self) -> bool:
        return self.pos >= len(self._data)

    def _take(self, n: int, start: int | None = None) -> memoryview:
        """The next ``n`` bytes; ``start`` is the offset of the value they belong to."""
        if n < 0 or self.pos + n > len(self._data):
            raise self.error(f"unexpected end of data (wanted {n} more bytes, "
                             f"{len(self._data) - self.pos} left)", start)
        chunk = self._data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def read_int(self) -> int:
        """One integer of any C++ integral type."""
        start = self.pos
        control = self._take(1)[0]
        size = control & 0x0F
        if control & 0x70 or size > 8:
            raise self.error(f"invalid integer control byte 0x{control:02x}", start)
        value = int.from_bytes(self._take(size, start), "little")
        return -value if control & 0x80 else value

    def read_float(self) -> float:
        """One ``float``/``double`` (mantissa, exponent); dlib's old text form is rejected."""
        start = self.pos
        if self.pos < len(self._data) and self._data[self.pos] & 0x70:
            raise self.error("floating point value in dlib's old text format is not supported",
                             start)
        mantissa = self.read_int()
        exponent = self.read_int()
        if not -(1 << 63) <= mantissa < (1 << 63) or not -(1 << 15) <= exponent < (1 << 15):
            raise self.error("floating point mantissa or exponent out of range", start)
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        return math.ldexp(float(mantissa), exponent)

    def read_bool(self) -> bool:
        start = self.pos
        ch = self._take(1)[0]
        if ch not in (0x30, 0x31):
            raise self.error(f"invalid bool byte 0x{ch:02x}", start)
        return ch == 0x31

    def read_string(self) -> str:
        start = self.pos
        size = self.read_int()
        if size < 0:
            raise self.error(f"negative string length {size}", start)
        raw = bytes(self._take(size, start))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise self.error("string is not ASCII", start) from exc

    def read_dims(self, version: int, what: str) -> tuple[int, int, int, int]:
        start = self.pos
        got = self.read_int()
        if got != version:
            raise self.error(f"{what} version {got}, expected {version}", start)
        dims = tuple(self.read_int() for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.error(f"negative {what} dimension in {dims}", start)
        return dims  # type: ignore[return-value]

    def read_tensor(self) -> F32Array:
        """A ``resizable_tensor``: float32 array of shape ``(num_samples, k, nr, nc)``."""
        start = self.pos
        dims = self.read_dims(2, "tensor")
        count = math.prod(dims)
        raw = self._take(4 * count, start)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def read_alias_tensor(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor``: only its shape ``(num_samples, k, nr, nc)``."""
        return self.read_dims(1, "alias tensor")

    def expect_int(self, expected: int | tuple[int, ...], what: str) -> int:
        start = self.pos
        got = self.read_int()
        allowed = expected if isinstance(expected, tuple) else (expected,)
        if got not in allowed:
            raise self.error(f"{what} is {got}, expected {' or '.join(map(str, allowed))}", start)
        return got


# --------------------------------------------------------------------------------------
# Layers (inference-relevant fields only)


@dataclass(frozen=True, eq=False)
class InputRGB:
    """``input_rgb_image[_sized]``: pixel -> (pixel - mean) / 256, channels R, G, B."""

    mean: tuple[float, float, float]
    """Per-channel mean in 0-255 pixel units (float32 values), R, G, B."""
    rows: int | None
    cols: int | None


@dataclass(frozen=True, eq=False)
class Conv:
    """``con_``: cross-correlation with bias. Weights ``(out, in, kh, kw)``."""

    weights: F32Array
    bias: F32Array
    stride: tuple[int, int]
    """(y, x) in pixels."""
    padding: tuple[int, int]
    """(y, x) zero padding in pixels on each side."""


@dataclass(frozen=True, eq=False)
class Affine:
    """``affine_`` (or a ``bn_`` in inference form): ``x * gamma + beta``.

    ``per_channel`` (dlib's CONV_MODE): gamma/beta have one value per channel; otherwise one
    per element of the ``(k, nr, nc)`` sample. ``disabled`` layers are the identity.
    """

    gamma: F32Array
    beta: F32Array
    per_channel: bool
    disabled: bool = False


@dataclass(frozen=True, eq=False)
class Relu:
    """``relu_``."""


@dataclass(frozen=True, eq=False)
class Pool:
    """``max_pool_`` / ``avg_pool_``. A window of 0 means the whole input in that dimension."""

    kind: str
    """``"max"`` or ``"avg"``."""
    window: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True, eq=False)
class AddPrev:
    """``add_prev_``: adds a tagged earlier output; the smaller tensor is zero-extended."""


@dataclass(frozen=True, eq=False)
class FullyConnected:
    """``fc_``: ``x_flat @ weights (+ bias)``, ``x_flat`` in (k, nr, nc) order."""

    weights: F32Array
    """(inputs, outputs)."""
    bias: F32Array | None


@dataclass(frozen=True, eq=False)
class LossMetric:
    """``loss_metric_``: the network's output is the descriptor itself."""

    margin: float
    distance_threshold: float


Layer = Conv | Affine | Relu | Pool | AddPrev | FullyConnected


@dataclass(frozen=True, eq=False)
class DnnFile:
    """A decoded dlib DNN: loss, input, computational layers (input first) and wrappers."""

    loss: LossMetric
    input: InputRGB
    layers: tuple[Layer, ...]
    wrapper_versions: tuple[int, ...]
    """Versions of the wrappers from the output down to the input (1: tag or skip)."""


def _read_multipliers(r: DatReader, count: int) -> None:
    for _ in range(count):
        r.read_float()


def _split_params(r: DatReader, params: F32Array, sizes: list[int], what: str,
                  at: int) -> list[F32Array]:
    flat = params.reshape(-1)
    if flat.size != sum(sizes):
        raise r.error(f"{what} has {flat.size} parameters, expected {sum(sizes)}", at)
    out, offset = [], 0
    for size in sizes:
        out.append(flat[offset:offset + size])
        offset += size
    return out


def _read_con(r: DatReader, version: str, at: int) -> Conv:
    params = r.read_tensor()
    num_filters = r.read_int()
    nr, nc, stride_y, stride_x, pad_y, pad_x = (r.read_int() for _ in range(6))
    filters = r.read_alias_tensor()
    biases = r.read_alias_tensor()
    _read_multipliers(r, 4)
    use_bias = r.read_bool() if version == "con_5" else True
    if filters != (num_filters, filters[1], nr, nc) or min(num_filters, nr, nc, filters[1]) < 1:
        raise r.error(f"convolution filter shape {filters} does not match "
                      f"{num_filters} filters of {nr}x{nc}", at)
    if stride_y < 1 or stride_x < 1 or not (0 <= pad_y < nr and 0 <= pad_x < nc):
        raise r.error(f"bad convolution stride ({stride_y}, {stride_x}) or padding "
                      f"({pad_y}, {pad_x})", at)
    n_weights = math.prod(filters)
    n_bias = num_filters if use_bias and math.prod(biases) > 0 else 0
    weights, bias = _split_params(r, params, [n_weights, n_bias], "convolution", at)
    return Conv(
        weights=weights.reshape(filters),
        bias=bias if n_bias else np.zeros(num_filters, np.float32),
        stride=(stride_y, stride_x),
        padding=(pad_y, pad_x),
    )


def _read_affine(r: DatReader, version: str, at: int) -> Affine:
    params = r.read_tensor()
    gamma_shape = r.read_alias_tensor()
    beta_shape = r.read_alias_tensor()
    mode = r.read_int()
    disabled = r.read_bool() if version == "affine_2" else False
    if mode not in (0, 1):
        raise r.error(f"unknown affine mode {mode}", at)
    if disabled:
        empty = np.zeros(0, np.float32)
        return Affine(gamma=empty, beta=empty, per_channel=mode == 0, disabled=True)
    if gamma_shape != beta_shape:
        raise r.error(f"affine gamma {gamma_shape} and beta {beta_shape} differ", at)
    size = math.prod(gamma_shape)
    gamma, beta = _split_params(r, params, [size, size], "affine layer", at)
    return Affine(gamma=gamma, beta=beta, per_channel=mode == 0)


def _read_bn(r: DatReader, version: str, at: int) -> Affine:
    params = r.read_tensor()
    gamma_shape = r.read_alias_tensor()
    r.read_alias_tensor()  # beta: same shape
    r.read_tensor()  # means (training state)
    r.read_tensor()  # invstds (training state)
    running_means = r.read_tensor().reshape(-1)
    running_variances = r.read_tensor().reshape(-1)
    r.read_int()  # num_updates
    r.read_int()  # running_stats_window_size
    _read_multipliers(r, 4)
    eps = r.read_float()
    size = math.prod(gamma_shape)
    gamma, beta = _split_params(r, params, [size, size], "batch-norm layer", at)
    if running_means.size != size or running_variances.size != size:
        raise r.error("batch-norm running statistics do not match its parameters", at)
    # dlib's affine_(const bn_&) conversion, in float32 as dlib does it.
    scale = (gamma / np.sqrt(running_variances + np.float32(eps))).astype(np.float32)
    shift = (beta - scale * running_means).astype(np.float32)
    return Affine(gamma=scale, beta=shift, per_channel=version == "bn_con2")


def _read_pool(r: DatReader, version: str, at: int) -> Pool:
    nr, nc, stride_y, stride_x, pad_y, pad_x = (r.read_int() for _ in range(6))
    if min(nr, nc, pad_y, pad_x) < 0 or min(stride_y, stride_x) < 1:
        raise r.error("bad pooling window, stride or padding", at)
    return Pool(kind="max" if version.startswith("max") else "avg", window=(nr, nc),
                stride=(stride_y, stride_x), padding=(pad_y, pad_x))


def _read_fc(r: DatReader, version: str, at: int) -> FullyConnected:
    num_outputs = r.read_int()
    num_inputs = r.read_int()
    params = r.read_tensor()
    r.read_alias_tensor()  # weights
    biases = r.read_alias_tensor()
    bias_mode = r.read_int()
    _read_multipliers(r, 4)
    use_bias = r.read_bool() if version == "fc_3" else True
    if bias_mode not in (0, 1) or min(num_inputs, num_outputs) < 1:
        raise r.error(f"bad fully connected layer ({num_inputs} -> {num_outputs}, "
                      f"bias mode {bias_mode})", at)
    n_bias = num_outputs if bias_mode == 0 and use_bias and math.prod(biases) > 0 else 0
    weights, bias = _split_params(r, params, [num_inputs * num_outputs, n_bias],
                                  "fully connected layer", at)
    return FullyConnected(weights=weights.reshape(num_inputs, num_outputs),
                          bias=bias if n_bias else None)


def read_layer(r: DatReader) -> Layer:
    """One computational layer's fields (the ``LAYER_DETAILS`` of an ``add_layer``)."""
    at = r.pos
    version = r.read_string()
    if version in ("con_4", "con_5"):
        return _read_con(r, version, at)
    if version in ("affine_", "affine_2"):
        return _read_affine(r, version, at)
    if version in ("bn_con2", "bn_fc2"):
        return _read_bn(r, version, at)
    if version == "relu_":
        return Relu()
    if version in ("max_pool_2", "avg_pool_2"):
        return _read_pool(r, version, at)
    if version == "add_prev_":
        return AddPrev()
    if version in ("fc_2", "fc_3"):
        return _read_fc(r, version, at)
    raise r.error(f"unsupported dlib layer {version!r}", at)


def read_input(r: DatReader) -> InputRGB:
    at = r.pos
    version = r.read_string()
    if version not in ("input_rgb_image", "input_rgb_image_sized"):
        raise r.error(f"unsupported dlib input layer {version!r}", at)
    mean = (r.read_float(), r.read_float(), r.read_float())
    if version == "input_rgb_image_sized":
        return InputRGB(mean=mean, rows=r.read_int(), cols=r.read_int())
    return InputRGB(mean=mean, rows=None, cols=None)


def read_loss(r: DatReader) -> LossMetric:
    at = r.pos
    version = r.read_string()
    if version == "loss_metric_2":
        return LossMetric(margin=r.read_float(), distance_threshold=r.read_float())
    if version == "loss_metric_":
        return LossMetric(margin=0.1, distance_threshold=0.75)
    raise r.error(f"unsupported dlib loss layer {version!r}", at)


def _skip_add_layer_state(r: DatReader, input_version: int | None) -> None:
    """The training state an ``add_layer`` writes after its layer's fields."""
    for _ in range(3):
        r.read_bool()  # setup called, gradient stale, getters disabled
    for _ in range(3):
        r.read_tensor()  # x_grad, cached_output, params_grad (or grad_final)
    if input_version == 3:
        r.read_int()  # sample expansion factor


def read_dnn(data: bytes, source: str = "<bytes>") -> DnnFile:
    """Decode a dlib DNN with a ``loss_metric`` loss and an RGB image input.

    Raises :class:`ModelError` for anything that is not such a file written by dlib 19.x
    or later.
    """
    r = DatReader(data, source)
    r.expect_int(TAG_OR_SKIP_VERSION, "loss layer wrapper version")
    loss = read_loss(r)
    versions: list[int] = []
    # Wrapper versions are 1-3; the input layer's name (a string) follows them and its
    # length (15 or 21 for the supported inputs) ends the run.
    while True:
        mark = r.pos
        value = r.read_int()
        if value not in (1, 2, 3):
            r.pos = mark
            break
        versions.append(value)
    if not versions or versions[-1] not in INPUT_ADD_LAYER_VERSIONS:
        raise r.error("the layer next to the input must be a computational layer "
                      f"(wrapper versions {versions[-3:]})", mark)
    if any(v == 3 for v in versions[:-1]):
        raise r.error("unexpected wrapper version 3 above the first layer")
    inp = read_input(r)
    layers: list[Layer] = []
    for i, version in enumerate(reversed(versions)):
        if i == 0:
            layers.append(read_layer(r))
            _skip_add_layer_state(r, version)
        elif version == ADD_LAYER_VERSION:
            layers.append(read_layer(r))
            _skip_add_layer_state(r, None)
    if not r.at_end():
        raise r.error("trailing data after the network")
    return DnnFile(loss=loss, input=inp, layers=tuple(layers), wrapper_versions=tuple(versions))


def read_dnn_file(path: Path) -> DnnFile:
    """:func:`read_dnn` on a file's bytes (a missing file is a :class:`ModelError`)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read dlib model file {path}: {exc}") from exc
    return read_dnn(data, str(path))

