"""The FAISS vector index: exact search, removal, persistence, reconciliation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from facesearch.config import Settings
from facesearch.service import FaceSearch
from facesearch.storage.index import VectorIndex
from facesearch.vision.pipeline import Pipeline
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


# -- the inverted file: large collections -------------------------------------------------------

COS_AT_80 = 0.366  # the default threshold of the default model (SFace)


def identities(n_ids: int, per_id: int, seed: int = 0,
               photos_seed: int | None = None) -> np.ndarray:
    """Unit vectors shaped like SFace's on lfw-dev (a common offset of norm 0.36, isotropic
    identities, within-identity spread giving same-person cosines of about 0.68): ``per_id``
    photos of each of ``n_ids`` people. ``photos_seed``: other photos of the same people."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=128)
    mu *= 0.36 / np.linalg.norm(mu)
    centres = l2_normalise(rng.normal(size=(n_ids, 128)))
    noise = np.random.default_rng(photos_seed if photos_seed is not None else seed + 1)
    x = (np.repeat(centres, per_id, axis=0) * 0.9
         + noise.normal(size=(n_ids * per_id, 128)) * 0.65 / np.sqrt(128) + mu)
    return l2_normalise(x).astype(np.float32)


@pytest.fixture(scope="module")
def large() -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    """An inverted-file index of 20,000 vectors (5,000 identities of 4), ids 3 + 7 i."""
    x = identities(5000, 4)
    ids = 3 + 7 * np.arange(len(x))
    idx = VectorIndex.build(128, ids, x, large=10_000)
    return idx, ids, x


@pytest.mark.slow
@pytest.mark.parametrize(("n", "kind"), [(9_999, "flat"), (10_000, "ivf")])
def test_form_follows_size(n: int, kind: str) -> None:
    x = identities(n // 4 + 1, 4, seed=1)
    idx = VectorIndex.build(128, np.arange(n), x[:n], large=10_000)
    assert idx.kind == kind and len(idx) == n
    assert not idx.needs_rebuild(large=10_000)


@pytest.mark.slow
def test_inverted_file_finds_the_same_persons_as_exact_search(large) -> None:  # noqa: ANN001
    """At least 99 % of the same-person matches above the default threshold that exact
    search finds, with exact similarities (the store's vectors score the final shortlist)."""
    idx, ids, x = large
    assert idx.kind == "ivf"
    rng = np.random.default_rng(9)
    # a new photo of each of 200 enrolled people
    who = rng.choice(5000, 200, replace=False)
    q = identities(5000, 1, photos_seed=99)[who]
    exact_v = {int(i): v for i, v in zip(ids, x, strict=True)}
    sims, got = idx.search(q, 20, exact=lambda rows: np.stack([exact_v[int(r)] for r in rows]))
    truth_s = q @ x.T
    found = wanted = 0
    for i, person in enumerate(who):
        mine = {int(ids[j]) for j in range(person * 4, person * 4 + 4)
                if truth_s[i, j] >= COS_AT_80}
        wanted += len(mine)
        found += len(mine & set(got[i].tolist()))
        for s, r in zip(sims[i], got[i], strict=True):  # every reported score is exact
            if r >= 0:
                assert abs(s - float(q[i] @ exact_v[int(r)])) < 1e-5
    assert wanted > 500 and found / wanted >= 0.99, (found, wanted)


@pytest.mark.slow
def test_inverted_file_search_keeps_every_threads_faiss_setting(large) -> None:  # noqa: ANN001
    """The re-scoring runs on the searching thread alone, then gives that thread its own
    OpenMP thread count back; a thread that set its count is not changed by another's
    search, and the results are those of the default setting."""
    import threading

    import faiss

    idx, _ids, x = large
    q = x[:3] + 0.01
    before = faiss.omp_get_max_threads()
    want = idx.search(q, 10)
    assert faiss.omp_get_max_threads() == before
    seen: list[int] = []

    def other() -> None:
        faiss.omp_set_num_threads(3)
        idx.search(q[:1], 10)
        seen.append(faiss.omp_get_max_threads())

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == [3] and faiss.omp_get_max_threads() == before
    got = idx.search(q, 10)
    assert np.array_equal(got[1], want[1]) and np.allclose(got[0], want[0])


@pytest.mark.slow
def test_inverted_file_adds_removes_saves_and_reconciles(large, tmp_path: Path) -> None:  # noqa: ANN001
    from facesearch.storage.crypto import load_sealer

    idx, ids, x = large
    extra = identities(10, 1, seed=4)
    idx.add(np.arange(10) + 10**9, extra)
    assert idx.remove(np.r_[ids[:5], 10**9]) == 6
    assert len(idx) == 20_000 + 10 - 6
    sealer = load_sealer("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", None)
    for s in (None, sealer):
        path = tmp_path / f"{s is None}.faiss"
        idx.save(path, s)
        back = VectorIndex.load(path, 128, s)
        assert back.kind == "ivf" and back.trained_on == 20_000
        assert np.array_equal(np.sort(back.ids()), np.sort(idx.ids()))
        assert not set(ids[:5].tolist()) & set(back.ids().tolist())
    truth = np.r_[ids[5:100], 10**9 + 1]
    added, removed = idx.reconcile(truth, lambda rows: extra[:len(rows)])
    assert (added, removed) == (0, 20_004 - 96) and sorted(idx.ids()) == sorted(truth)
    assert idx.needs_rebuild(large=10_000)  # now far smaller than its cells were made for


# -- the service's index cache: the form changes with the collection's size -----------------

def _enrol_synthetic(fs: FaceSearch, name: str, vecs: np.ndarray) -> list[str]:
    """Faces with these vectors written through the store (no photos needed); their ids."""
    import time
    import uuid

    from facesearch.storage.records import NewFace, NewImage

    q = {"size": 50.0, "sharpness": 50.0, "brightness": 50.0, "yaw": 0.0, "pitch": 0.0,
         "roll": 0.0}
    ids = [str(uuid.uuid4()) for _ in range(len(vecs))]
    with fs.store.transaction() as conn:
        coll = fs.store.collections.get(conn, name)
        image = fs.store.images.insert(conn, coll.id, NewImage(
            image_id=str(uuid.uuid4()), sha256=uuid.uuid4().hex, source=None, external_id=None,
            width=250, height=250, faces_detected=len(vecs), faces_indexed=len(vecs)),
            time.time())
        fs.store.faces.insert(conn, coll.id, image, [
            NewFace(face_id=f, external_id=f"person-{i}", box=(0, 0, 100, 100),
                    landmarks=[[0.0, 0.0]] * 5, score=0.99, quality=q, embedding=v)
            for i, (f, v) in enumerate(zip(ids, vecs, strict=True))], 250, 250, time.time(),
            coll.model_version)
    return ids


@pytest.mark.slow
def test_the_service_index_becomes_an_inverted_file_when_large(
        settings: Callable[..., Settings], pipeline: Pipeline) -> None:
    x = vectors(1_500, seed=5)
    fs = FaceSearch(settings(index_large=1_000), pipeline=pipeline)
    try:
        fs.collections.create("big")
        ids = _enrol_synthetic(fs, "big", x)
        with fs.store.transaction() as conn:
            coll = fs.store.collections.get(conn, "big")
        # A rebuild before any search installs and saves its index (a tool preparing a
        # collection, the benchmarks).
        assert fs.indexes.rebuild(coll).kind == "ivf"
        assert fs.indexes.path(coll.id).is_file()
        assert fs.indexes.get(coll).kind == "ivf"
        res = fs.search.by_vectors("big", x[7:8], operation="search.vectors", threshold=0,
                                   max_results=3)
        assert res.results[0].matches[0].face.face_id == ids[7]
    finally:
        fs.shutdown()
    # Another process opens the saved inverted file; faces added since are caught up.
    fs = FaceSearch(settings(index_large=1_000), pipeline=pipeline)
    try:
        with fs.store.transaction() as conn:
            coll = fs.store.collections.get(conn, "big")
        more = _enrol_synthetic(fs, "big", vectors(10, seed=6))
        index = fs.indexes.get(coll)
        assert index.kind == "ivf" and len(index) == 1_510
        res = fs.search.by_vectors("big", vectors(10, seed=6)[3:4], operation="search.vectors",
                                   threshold=0, max_results=3)
        assert res.results[0].matches[0].face.face_id == more[3]
    finally:
        fs.shutdown()


def test_a_collection_growing_past_the_size_is_rebuilt_in_the_background(
        settings: Callable[..., Settings], pipeline: Pipeline) -> None:
    fs = FaceSearch(settings(index_large=1_000), pipeline=pipeline)
    try:
        fs.collections.create("growing")
        x = vectors(1_200, seed=8)
        ids = _enrol_synthetic(fs, "growing", x[:600])
        with fs.store.transaction() as conn:
            coll = fs.store.collections.get(conn, "growing")
        assert fs.indexes.get(coll).kind == "flat"
        ids += _enrol_synthetic(fs, "growing", x[600:])
        assert len(fs.indexes.get(coll)) == 1_200  # caught up at once, still exact
        fs.indexes.wait_rebuilds()
        assert fs.indexes.get(coll).kind == "ivf"
        for i in (0, 900):
            res = fs.search.by_vectors("growing", x[i:i + 1], operation="search.vectors",
                                       threshold=0, max_results=1)
            assert res.results[0].matches[0].face.face_id == ids[i]
    finally:
        fs.shutdown()


@pytest.mark.slow
def test_an_inverted_file_whose_data_drifted_asks_for_a_rebuild() -> None:
    """Vectors added since the cells were trained that fall into a few of them (another
    population, another camera) unbalance the cells; the index then asks to be rebuilt, and
    the rebuilt one does not."""
    base = vectors(12_000, seed=1)
    idx = VectorIndex.build(128, np.arange(12_000), base, large=10_000)
    assert idx.kind == "ivf" and not idx.needs_rebuild(large=10_000)
    rng = np.random.default_rng(2)
    centre = l2_normalise(rng.normal(size=(1, 128)))
    drifted = l2_normalise(centre + 0.08 * rng.normal(size=(12_000, 128)))
    idx.add(np.arange(12_000, 18_000), drifted[:6_000])
    assert idx.needs_rebuild(large=10_000)  # 1.5x more data, but all in a few cells
    both = np.vstack([base, drifted[:6_000]])
    rebuilt = VectorIndex.build(128, np.arange(18_000), both, large=10_000)
    assert not rebuilt.needs_rebuild(large=10_000)


def test_face_count_after_additions_counts_only_the_new_faces(
        settings: Callable[..., Settings], pipeline: Pipeline) -> None:
    """The collection's face count (the risk at the threshold, the Milvus catch-up) is
    counted in full once; after faces are added, only the faces above the last count's top
    row are counted; after a deletion (a new generation), in full again. Always right."""
    from sqlalchemy import event

    fs = FaceSearch(settings(), pipeline=pipeline)
    counts: list[str] = []

    def seen(_conn, _cursor, statement: str, *_a) -> None:  # noqa: ANN001, ANN002
        if "count(" in statement.lower() and "faces" in statement:
            counts.append(statement)

    try:
        fs.collections.create("c")
        first = _enrol_synthetic(fs, "c", vectors(30, seed=1))
        event.listen(fs.store.engine, "before_cursor_execute", seen)

        def count() -> int:
            with fs.store.transaction() as conn:
                return fs.store.generations.face_count(conn, fs.store.collections.get(conn, "c"))

        assert count() == 30 and len(counts) == 1 and ".id >" not in counts[-1]
        assert count() == 30 and len(counts) == 1  # unchanged: not counted
        _enrol_synthetic(fs, "c", vectors(5, seed=2))
        assert count() == 35 and len(counts) == 2 and ".id >" in counts[-1]
        fs.erasure.delete_faces("c", first[:3])
        assert count() == 32 and ".id >" not in counts[-1]
        _enrol_synthetic(fs, "c", vectors(4, seed=3))
        assert count() == 36 and ".id >" in counts[-1]
        with fs.store.transaction() as conn:
            truth = fs.store.collections.counts(conn, fs.store.collections.get(conn, "c").id)[0]
        assert truth == 36
    finally:
        fs.shutdown()
