"""The 0-100 similarity scale."""

from __future__ import annotations

import numpy as np

from facesearch import similarity as sim


def test_scale_anchors() -> None:
    assert sim.to_similarity(1.0) == 100.0
    assert abs(float(sim.to_similarity(sim.COS_AT_80)) - 80.0) < 1e-4
    assert float(sim.to_similarity(-1.0)) < 1e-3
    assert abs(float(sim.to_similarity(0.961)) - 99.0) < 0.1


def test_scale_is_strictly_increasing_and_invertible() -> None:
    full = sim.to_similarity(np.linspace(-1.0, 1.0, 4001))
    assert np.all(np.diff(full) >= 0)  # float32 saturates at the ends, never decreases
    c = np.linspace(0.75, 0.995, 2001)
    s = sim.to_similarity(c)
    assert np.all(np.diff(s.astype(np.float64)) > 0)
    back = sim.to_cosine(s)
    assert np.allclose(back, c, atol=1e-4)
    assert np.allclose(sim.to_similarity(sim.to_cosine([50, 80, 95, 99, 99.9])),
                       [50, 80, 95, 99, 99.9], atol=1e-3)
