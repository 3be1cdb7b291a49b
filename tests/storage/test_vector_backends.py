"""The vector-backend contract, against every backend: FAISS (in the data directory) and a real
Milvus standalone server (the ``milvus`` package's, started here on loopback).

The same collection semantics on each: search with exact similarities and thresholds,
external ids, deletes, users, erasure, collection deletion, and a backend missing vectors
mended from the database. Milvus needs pymilvus 2.3, which lives in ``.venv-milvus``
(``scripts/setup-milvus``): there these tests run with ``FACESEARCH_TEST_MILVUS=1`` (as
``.ci/run`` does); in the main environment the Milvus half is skipped.
"""

from __future__ import annotations

import importlib.util
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facesearch.config import Settings
from facesearch.service import FaceSearch
from facesearch.storage.records import NewFace, NewImage
from facesearch.types import EMBEDDING_DIM
from facesearch.vision import similarity as sim
from facesearch.vision.pipeline import Pipeline

from ..conftest import face
from .test_index import COS_AT_80, identities

HAVE_MILVUS = all(importlib.util.find_spec(m) is not None for m in ("milvus", "pymilvus"))
WANT_MILVUS = bool(os.environ.get("FACESEARCH_TEST_MILVUS"))


INTERIM_NPROBE = 77
"""facesearch.storage.milvus.INTERIM_NPROBE (that module needs pymilvus to import)."""


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Milvus 2.3 standalone server on loopback, its storage in a temporary folder, whose
    garbage collector removes segments compacted away within a second (so the erasure test
    sees their files go)."""
    if not HAVE_MILVUS:
        if WANT_MILVUS:
            pytest.fail("FACESEARCH_TEST_MILVUS is set but pymilvus/milvus are missing: run "
                        "these tests with .venv-milvus/bin/python (scripts/setup-milvus)")
        pytest.skip("Milvus runs in .venv-milvus (scripts/setup-milvus), as .ci/run does")
    from milvus import MilvusServer, MilvusServerConfig

    server = MilvusServer(MilvusServerConfig())
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus")))
    # Not missingTolerance: files of a compaction in progress are not yet in the metadata.
    for key in ("dataCoord.gc.interval", "dataCoord.gc.dropTolerance"):
        server.config.set(key, 1)
    server.config.set("queryNode.segcore.interimIndex.nprobe", INTERIM_NPROBE)  # as deployed
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["faiss", "milvus"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings selecting one backend (a fresh Milvus prefix per test)."""
    if request.param == "faiss":
        return {"vector_backend": "faiss"}
    server = request.getfixturevalue("milvus_server")
    return {"vector_backend": "milvus",
            "milvus_uri": f"http://127.0.0.1:{server.listen_port}",
            "milvus_prefix": "t" + uuid.uuid4().hex[:12]}


def open_service(home: Path, pipeline: Pipeline, backend: dict[str, Any]) -> FaceSearch:
    return FaceSearch(Settings(home=home, audit_signing_key=home.parent / "k" / "audit.pem",
                               **backend), pipeline=pipeline)


@pytest.fixture
def svc(home: Path, pipeline: Pipeline, backend: dict[str, Any]) -> Iterator[FaceSearch]:
    fs = open_service(home, pipeline, backend)
    yield fs
    fs.shutdown()


@pytest.fixture
def people(svc: FaceSearch) -> dict[str, str]:
    """Collection ``c``: one face of each photo, external id the file stem."""
    svc.collections.create("c")
    out = {}
    for name in ("obama", "obama2", "biden", "alex-lacamoire", "lin-manuel-miranda"):
        path = face(f"{name}.png" if "-" in name else f"{name}.jpg")
        out[name] = svc.collections.index_image("c", path, external_id=name).indexed[0].face_id
    return out


def exact_similarities(fs: FaceSearch, collection: str, probe: np.ndarray) -> dict[str, float]:
    """Every face's similarity to ``probe``, from the store's vectors (the truth)."""
    with fs.store.transaction() as conn:
        coll = fs.store.collections.get(conn, collection)
        rows = fs.store.faces.all_rows(conn, coll.id)
        vecs = fs.store.faces.embeddings(conn, rows, EMBEDDING_DIM)
        faces = fs.store.faces.by_rows(conn, rows)
    s = sim.to_similarity(vecs @ probe, coll.model_version)
    return {faces[int(r)].face_id: float(v) for r, v in zip(rows, s, strict=True)}


def test_search_reports_exact_similarities_and_honours_thresholds(
        svc: FaceSearch, people: dict[str, str]) -> None:
    res = svc.search.by_image("c", face("obama-480p.jpg"), threshold=0, max_results=10)
    probe = res.faces.embeddings[0]  # type: ignore[union-attr]
    truth = exact_similarities(svc, "c", probe)
    got = [(m.face.face_id, m.similarity) for m in res.results[0].matches]
    assert [f for f, _ in got] == sorted(truth, key=lambda f: -truth[f])
    for fid, s in got:
        assert abs(s - truth[fid]) < 1e-3
    assert {m.face.external_id for m in res.results[0].matches[:2]} == {"obama", "obama2"}
    at_80 = svc.search.by_image("c", face("obama-480p.jpg")).results[0].matches
    assert sorted(m.face.external_id for m in at_80) == ["obama", "obama2"]
    top1 = svc.search.by_image("c", face("obama-480p.jpg"), max_results=1).results[0].matches
    assert len(top1) == 1 and top1[0].face.face_id == got[0][0]


def test_deleted_faces_are_no_longer_found(svc: FaceSearch, people: dict[str, str]) -> None:
    d = svc.erasure.delete_faces("c", [people["obama"]])
    assert d.deleted == [people["obama"]]
    hits = svc.search.by_image("c", face("obama-480p.jpg")).results[0].matches
    assert [m.face.external_id for m in hits] == ["obama2"]
    receipt = svc.erasure.erase("c", external_id="obama2")
    assert receipt.face_ids == [people["obama2"]]
    # the receipt says what outlives the erasure: nothing of FAISS's; Milvus's message log
    assert ("message log" in receipt.vector_copies) == (svc.settings.vector_backend == "milvus")
    assert not svc.search.by_image("c", face("obama-480p.jpg")).results[0].matches
    again = svc.collections.index_image("c", face("obama.jpg"), external_id="back", force=True)
    hits = svc.search.by_image("c", face("obama-480p.jpg")).results[0].matches
    assert [m.face.face_id for m in hits] == [again.indexed[0].face_id]


def test_users_rank_by_their_best_face(svc: FaceSearch, people: dict[str, str]) -> None:
    svc.users.create("c", "barack")
    svc.users.create("c", "joe")
    svc.users.associate("c", "barack", [people["obama"], people["obama2"]])
    svc.users.associate("c", "joe", [people["biden"]])
    hits = svc.users.search_by_image("c", face("obama-480p.jpg"), threshold=0).matches
    assert [h.user_id for h in hits] == ["barack", "joe"]
    res = svc.search.by_image("c", face("obama-480p.jpg"), threshold=0)
    truth = exact_similarities(svc, "c", res.faces.embeddings[0])  # type: ignore[union-attr]
    assert abs(hits[0].similarity - max(truth[people["obama"]], truth[people["obama2"]])) < 1e-3
    svc.erasure.erase("c", user_id="barack")
    hits = svc.users.search_by_image("c", face("obama-480p.jpg"), threshold=0).matches
    assert [h.user_id for h in hits] == ["joe"]


def test_a_backend_missing_vectors_is_mended_from_the_database(
        home: Path, pipeline: Pipeline, backend: dict[str, Any], svc: FaceSearch,
        people: dict[str, str]) -> None:
    with svc.store.transaction() as conn:
        coll = svc.store.collections.get(conn, "c")
    svc.shutdown()
    lose_vectors(home, backend, coll.id)
    other = open_service(home, pipeline, backend)  # another process, after the loss
    try:
        hits = other.search.by_image("c", face("obama-480p.jpg")).results[0].matches
        assert sorted(m.face.external_id for m in hits) == ["obama", "obama2"]
        assert len(other.indexes.get(coll)) == len(people)
    finally:
        other.shutdown()


def lose_vectors(home: Path, backend: dict[str, Any], collection_id: int) -> None:
    """Lose the backend's copy of a collection's vectors (all but none: FAISS's file; two
    of Milvus's rows)."""
    if backend["vector_backend"] == "faiss":
        (home / "indexes" / f"{collection_id}.faiss").unlink()
        return
    from pymilvus import Collection, connections

    connections.connect("lose", uri=backend["milvus_uri"])
    try:
        c = Collection(f"{backend['milvus_prefix']}_{collection_id}", using="lose")
        ids = [r["id"] for r in c.query("id >= 0", output_fields=["id"],
                                        consistency_level="Strong")]
        c.delete(f"id in [{ids[0]}, {ids[1]}]")
        left = c.query("id >= 0", output_fields=["id"], consistency_level="Strong")
        assert len(left) == len(ids) - 2
    finally:
        connections.disconnect("lose")


def test_deleting_a_collection_drops_its_vectors(svc: FaceSearch, people: dict[str, str],
                                                 home: Path, backend: dict[str, Any]) -> None:
    with svc.store.transaction() as conn:
        cid = svc.store.collections.get(conn, "c").id
    svc.collections.delete("c")
    if backend["vector_backend"] == "faiss":
        assert not (home / "indexes" / f"{cid}.faiss").exists()
    else:
        from pymilvus import utility

        assert not utility.has_collection(svc.indexes.name(cid),  # type: ignore[attr-defined]
                                          using=svc.indexes.alias)  # type: ignore[attr-defined]
    svc.collections.create("c")  # a new collection of the same name starts empty
    assert not svc.search.by_image("c", face("obama.jpg"), threshold=0).results[0].matches


QUALITY = {"size": 40.0, "sharpness": 1.0, "brightness": 0.5, "yaw": 0.0, "pitch": 0.0,
           "roll": 0.0}


def synthetic_collection(fs: FaceSearch, name: str, vectors: np.ndarray) -> None:
    """A collection of ``vectors`` as faces of one image (no model run)."""
    fs.collections.create(name)
    with fs.store.transaction() as conn:
        coll = fs.store.collections.get(conn, name)
        image = fs.store.images.insert(conn, coll.id, NewImage(
            image_id=uuid.uuid4().hex, sha256=uuid.uuid4().hex, source=None, external_id=None,
            width=100, height=100, faces_detected=len(vectors), faces_indexed=len(vectors)),
            time.time())
        fs.store.faces.insert(conn, coll.id, image, [
            NewFace(face_id=uuid.uuid4().hex, external_id=f"p{i // 4}",
                    box=(0.0, 0.0, 10.0, 10.0), landmarks=[[0.0, 0.0]] * 5, score=1.0,
                    quality=QUALITY, embedding=v) for i, v in enumerate(vectors)],
            100, 100, time.time(), coll.model_version)


def test_many_faces_same_persons_as_exact_search(svc: FaceSearch,
                                                 backend: dict[str, Any]) -> None:
    """6,000 vectors shaped like SFace's (1,500 people of 4 photos): at least 99 % of the
    same-person matches above the default threshold that exact search finds, with exact
    similarities (Milvus's segments sealed, so that its IVF_SQ8 index serves them)."""
    x = identities(1500, 4, seed=3)
    synthetic_collection(svc, "many", x)
    with svc.store.transaction() as conn:
        coll = svc.store.collections.get(conn, "many")
    index = svc.indexes.get(coll)
    assert len(index) == len(x)
    if backend["vector_backend"] == "milvus":
        index.collection.flush()  # type: ignore[attr-defined]
    rng = np.random.default_rng(5)
    who = rng.choice(1500, 100, replace=False)
    q = identities(1500, 1, seed=3, photos_seed=77)[who]
    res = svc.search.by_vectors("many", q, operation="search.vectors", max_results=20)
    truth = q @ x.T
    found = wanted = 0
    for i, person in enumerate(who):
        matches = res.results[i].matches
        wanted += sum(1 for j in range(person * 4, person * 4 + 4) if truth[i, j] >= COS_AT_80)
        found += sum(1 for m in matches if m.face.external_id == f"p{person}")
        for m in matches:  # exact similarities, at or above the threshold
            assert m.similarity >= res.threshold
    assert wanted > 200 and found / wanted >= 0.99, (found, wanted)


@pytest.fixture
def erasing_milvus(tmp_path: Path, milvus_server: Any) -> Iterator[tuple[Any, Any]]:
    """A Milvus server of its own, with docs/deploy.md's erasure settings scaled down (message
    log retention 1 minute, checked every 5 s, compacted every 10 s; garbage collector every
    second), and those settings. The module's server stops meanwhile (two servers of the
    ``milvus`` wheel cannot run at once: both take etcd's port 2380)."""
    from facesearch.storage.milvus import ServerSettings
    from tests.milvus_server import start, wait_usable

    settings = ServerSettings(retention_min=1, ticker_s=5, compaction_s=10, gc_interval_s=1,
                              gc_drop_s=1)
    milvus_server.stop()
    try:
        server = start(tmp_path / "milvus", settings)
        try:
            yield server, settings
        finally:
            server.stop()
    finally:
        milvus_server.start()
        wait_usable(milvus_server)


def test_erased_vectors_leave_every_milvus_file(home: Path, pipeline: Pipeline,
                                                erasing_milvus: tuple[Any, Any],
                                                tmp_path: Path) -> None:
    """An erasure's vectors, inserted in bulk (one large message) and as one real face (a
    small one), are in Milvus's segment files and its message log (rocksmq) first; within the
    bound the server's settings give, which the receipt states, no file under the server's
    data directory holds their bytes (segments, index files, the message log's RocksDB files
    and write-ahead log, etcd), while a kept vector stays."""
    server, settings = erasing_milvus
    bound = settings.erasure_bound_s
    backend = {"vector_backend": "milvus",
               "milvus_uri": f"http://127.0.0.1:{server.listen_port}",
               "milvus_prefix": "t" + uuid.uuid4().hex[:12], "milvus_erasure_bound_s": bound}
    fs = open_service(home, pipeline, backend)
    base = tmp_path / "milvus"

    def holding_any(data: bytes) -> list[Path]:
        """Files of the server's data, configuration and logs (not its programs, ``bin``)."""
        return [p for sub in base.iterdir() if sub.name != "bin"
                for p in ([sub] if sub.is_file() and data in sub.read_bytes() else
                          holding(sub, data))]

    try:
        x = identities(600, 4, seed=8)
        synthetic_collection(fs, "e", x)
        obama = fs.collections.index_image("e", face("obama.jpg"), external_id="p4")
        with fs.store.transaction() as conn:
            coll = fs.store.collections.get(conn, "e")
            rows = fs.store.faces.all_rows(conn, coll.id)
            by_id = {f.face_id: r for r, f in fs.store.faces.by_rows(conn, rows).items()}
            real = fs.store.faces.embeddings(conn, np.asarray([by_id[obama.indexed[0].face_id]]),
                                       EMBEDDING_DIM)[0]
        index = fs.indexes.get(coll)
        index.collection.flush()  # type: ignore[attr-defined]
        erased = [x[17].astype(np.float32).tobytes(), real.astype(np.float32).tobytes()]
        kept = x[25].astype(np.float32).tobytes()
        for target in erased:
            where = holding_any(target)
            assert any("rocksmq" in str(p) for p in where), where  # the message log
            assert any("insert_log" in str(p) for p in where), where  # a segment
        index_dir = base / "data" / "index_files"
        deadline = time.monotonic() + 120  # the sealed segment's IVF_SQ8 index (8-bit codes)
        while not [p for p in index_dir.rglob("*") if p.is_file()]:
            assert time.monotonic() < deadline, "no index file was written"
            time.sleep(1)
        indexed = {p for p in index_dir.rglob("*") if p.is_file()}
        start = time.monotonic()
        receipt = fs.erasure.erase("e", external_id="p4")  # photos 16..19 and the real face
        assert len(receipt.face_ids) == 5
        assert f"at most {bound} s" in receipt.vector_copies
        while left := [p for t in erased for p in holding_any(t)]:
            assert time.monotonic() - start < bound, f"erased vectors still in {left}"
            time.sleep(5)
        took = time.monotonic() - start
        assert holding_any(kept)  # the others are kept, and found by the same search
        assert not indexed & {p for p in index_dir.rglob("*") if p.is_file()}
        print(f"erased vectors gone from every Milvus file {took:.0f} s after the erasure "
              f"(bound {bound} s)")
    finally:
        fs.shutdown()


def holding(root: Path, data: bytes) -> list[Path]:
    """Files under ``root`` that contain ``data``."""
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


@pytest.mark.skipif(HAVE_MILVUS, reason="checks the environment without pymilvus")
def test_milvus_without_its_client_is_refused(home: Path, pipeline: Pipeline) -> None:
    from facesearch.errors import BackendError

    with pytest.raises(BackendError, match="scripts/setup-milvus"):
        open_service(home, pipeline, {"vector_backend": "milvus"})


def test_a_milvus_collection_of_another_database_is_refused(
        tmp_path: Path, pipeline: Pipeline, milvus_server: Any) -> None:
    """Two databases with the same prefix would share ``<prefix>_1``: the second refuses."""
    from facesearch.errors import BackendError

    backend = {"vector_backend": "milvus",
               "milvus_uri": f"http://127.0.0.1:{milvus_server.listen_port}",
               "milvus_prefix": "t" + uuid.uuid4().hex[:12]}
    first = open_service(tmp_path / "a" / "home", pipeline, backend)
    second = open_service(tmp_path / "b" / "home", pipeline, backend)
    try:
        for fs in (first, second):
            fs.collections.create("c")
        first.collections.index_image("c", face("obama.jpg"))
        with pytest.raises(BackendError, match="another facesearch database"):
            second.collections.index_image("c", face("biden.jpg"))
    finally:
        first.shutdown()
        second.shutdown()


def test_two_nodes_on_one_milvus_write_each_change_once(
        tmp_path: Path, pipeline: Pipeline, milvus_server: Any) -> None:
    """Two processes on one database and one Milvus: what A indexed is in Milvus once (B
    reads and writes nothing of it), A's deletion is gone from B's searches at once without
    a reconciliation, and B after a restart reads nothing but the shared position."""
    backend = {"vector_backend": "milvus",
               "milvus_uri": f"http://127.0.0.1:{milvus_server.listen_port}",
               "milvus_prefix": "t" + uuid.uuid4().hex[:12]}
    home = tmp_path / "home"
    a = open_service(home, pipeline, backend)
    b = open_service(home, pipeline, backend)  # the same database (SQLite here)
    try:
        a.collections.create("c")
        ids = {n: a.collections.index_image("c", face(f), external_id=n).indexed[0].face_id
               for n, f in (("obama", "obama.jpg"), ("obama2", "obama2.jpg"),
                            ("biden", "biden.jpg"))}
        probe = face("obama-480p.jpg")
        hits = b.search.by_image("c", probe).results[0].matches
        assert sorted(m.face.external_id for m in hits) == ["obama", "obama2"]
        assert (b.indexes.stats.rows, b.indexes.stats.full) == (0, 0)  # A wrote them
        a.erasure.delete_faces("c", [ids["obama"]])
        hits = b.search.by_image("c", probe).results[0].matches
        assert [m.face.external_id for m in hits] == ["obama2"]
        assert (b.indexes.stats.rows, b.indexes.stats.full) == (0, 0)
        b.shutdown()
        b = open_service(home, pipeline, backend)
        hits = b.search.by_image("c", probe).results[0].matches
        assert [m.face.external_id for m in hits] == ["obama2"]
        assert (b.indexes.stats.rows, b.indexes.stats.full) == (0, 0)
    finally:
        a.shutdown()
        b.shutdown()


def test_milvus_down_is_answered_at_once_and_recovers(
        tmp_path: Path, pipeline: Pipeline, milvus_server: Any) -> None:
    """Milvus stopped: a search fails within seconds with UnavailableError (HTTP 503), not
    after pymilvus's minutes of retries; what needs no vectors works, also in a process
    opened while Milvus is down; once Milvus is back, searches work again by themselves.
    (Last in this module: it stops the module's server, and starts it again.)"""
    from facesearch.errors import UnavailableError

    backend = {"vector_backend": "milvus",
               "milvus_uri": f"http://127.0.0.1:{milvus_server.listen_port}",
               "milvus_prefix": "t" + uuid.uuid4().hex[:12]}
    fs = open_service(tmp_path / "a" / "home", pipeline, backend)
    try:
        fs.collections.create("c")
        fs.collections.index_image("c", face("obama.jpg"), external_id="obama")
        probe = face("obama2.jpg")
        assert fs.search.by_image("c", probe).results[0].matches
        milvus_server.stop()
        try:
            for _ in range(2):
                t = time.monotonic()
                with pytest.raises(UnavailableError, match="Milvus server does not answer"):
                    fs.search.by_image("c", probe)
                with pytest.raises(UnavailableError):
                    fs.indexes.check()
                assert time.monotonic() - t < 60  # 5 s timeouts (pymilvus alone: minutes)
            assert [c.name for c in fs.collections.list_collections()] == ["c"]
            other = open_service(tmp_path / "b" / "home", pipeline, backend)
            try:  # opened while Milvus is down: what needs no vectors does not wait for it
                assert [c.name for c in other.collections.list_collections()] == []
            finally:
                other.shutdown()
        finally:
            milvus_server.start()
        deadline = time.monotonic() + 180
        while True:
            try:
                hits = fs.search.by_image("c", probe).results[0].matches
                break
            except UnavailableError:
                assert time.monotonic() < deadline, "no recovery after Milvus restarted"
                time.sleep(1)
        assert [m.face.external_id for m in hits] == ["obama"]
    finally:
        fs.shutdown()
