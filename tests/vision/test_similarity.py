"""The 0-100 similarity scale, one per embedder."""

from __future__ import annotations

import numpy as np
import pytest

from facesearch.errors import InvalidParameterError
from facesearch.vision import similarity as sim


@pytest.mark.parametrize(("model", "cos80", "cos99"), [
    ("blazeface+onet/sface-2021dec", 0.366, 0.683),
    ("blazeface+onet/dlib-resnet-v1", 0.905, 0.961),
    ("dlib-hog+sp68/dlib-resnet-v1", 0.905, 0.961),
])
def test_scale_anchors(model: str, cos80: float, cos99: float) -> None:
    assert sim.to_similarity(1.0, model) == 100.0
    assert abs(float(sim.to_similarity(cos80, model)) - 80.0) < 1e-3
    assert float(sim.to_similarity(-1.0, model)) < 1e-3
    assert abs(float(sim.to_similarity(cos99, model)) - 99.0) < 0.05


def test_default_is_sface_and_variants_share_their_embedders_scale() -> None:
    assert sim.scale_for(None) == sim.scale_for("sface-2021dec") == sim.SCALES["sface-2021dec"]
    assert sim.scale_for("x/sface-2021dec+flip") == sim.SCALES["sface-2021dec"]
    assert sim.scale_for("x/dlib-resnet-v1-int8w7+flip") == sim.SCALES["dlib-resnet-v1"]
    assert sim.scale_for("x/dlib-resnet-v1") != sim.scale_for("x/sface-2021dec")
    with pytest.raises(InvalidParameterError, match="no similarity scale"):
        sim.scale_for("x/sface-2021decX")


@pytest.mark.parametrize("model", ["x/sface-2021dec", "x/dlib-resnet-v1"])
def test_scale_is_strictly_increasing_and_invertible(model: str) -> None:
    full = sim.to_similarity(np.linspace(-1.0, 1.0, 4001), model)
    assert np.all(np.diff(full) >= 0)  # float32 saturates at the ends, never decreases
    lo = float(sim.to_cosine(30.0, model))
    c = np.linspace(lo, float(sim.to_cosine(99.95, model)), 2001)
    s = sim.to_similarity(c, model)
    assert np.all(np.diff(s.astype(np.float64)) > 0)
    back = sim.to_cosine(s, model)
    assert np.allclose(back, c, atol=1e-4)
    assert np.allclose(sim.to_similarity(sim.to_cosine([50, 80, 95, 99, 99.9], model), model),
                       [50, 80, 95, 99, 99.9], atol=1e-3)
