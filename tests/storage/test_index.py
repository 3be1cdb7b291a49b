"""The FAISS vector index: exact search, removal, persistence, reconciliation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facesearch.storage.index import VectorIndex
from facesearch.vision.embed import l2_normalise


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).normal(size=(n, 128)))


def test_exact_top_k_matches_brute_force() -> None:
    v = vectors(2000)
    idx = VectorIndex(128)
    ids = np.arange(10, 2010)
    idx.add(ids, v)
    q = vectors(5, seed=1)
    sims, got = idx.search(q, 7)
    brute = q @ v.T
    for i in range(5):
        order = np.argsort(-brute[i])[:7]
        assert list(got[i]) == list(ids[order])
        assert np.allclose(sims[i], brute[i][order], atol=1e-5)


def test_remove_save_load_and_reconcile(tmp_path: Path) -> None:
    v = vectors(100)
    idx = VectorIndex(128)
    idx.add(np.arange(100), v)
    assert idx.remove([3, 4, 500]) == 2
    assert len(idx) == 98
    path = tmp_path / "i.faiss"
    idx.save(path)
    back = VectorIndex.load(path, 128)
    assert sorted(back.ids()) == sorted(idx.ids())
    assert np.allclose(back.vectors([10, 20]), v[[10, 20]])
    truth = np.array([0, 1, 2, 3, 200], np.int64)
    extra = vectors(1, seed=9)
    added, removed = back.reconcile(truth, lambda ids: np.repeat(extra, len(ids), axis=0))
    assert (added, removed) == (2, 95)
    assert sorted(back.ids()) == [0, 1, 2, 3, 200]
    assert np.allclose(back.vectors([200]), extra)


def test_unreadable_snapshot_gives_empty_index(tmp_path: Path) -> None:
    path = tmp_path / "bad.faiss"
    path.write_bytes(b"not faiss")
    assert len(VectorIndex.load(path, 128)) == 0


def test_search_of_empty_index() -> None:
    sims, ids = VectorIndex(128).search(vectors(2), 5)
    assert sims.shape == (2, 0) and ids.shape == (2, 0)
