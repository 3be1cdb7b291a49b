"""Search latency on a large collection (synthetic unit vectors; real probe images).

Fills a collection with N synthetic faces (default 300,000) straight through the store, then
times, over Q random queries: the vector index alone (and its recall: the share of the exact
top k over every stored vector that it returns), the service's search (index + metadata), and
the whole search-by-image request (decode, detect, embed, search) on a real probe photo.
Recall on real faces among millions: ``bench/index_scale.py``.

    .venv/bin/python bench/search_latency.py [--faces 300000] [--queries 500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT.parent / "shared" / "testdata" / "faces" / "obama2.jpg"


def fill(fs, name: str, n: int, seed: int = 0) -> None:
    from facesearch.storage.records import NewFace, NewImage
    from facesearch.vision.embed import l2_normalise

    rng = np.random.default_rng(seed)
    q = {"size": 50.0, "sharpness": 50.0, "brightness": 50.0, "yaw": 0.0, "pitch": 0.0,
         "roll": 0.0}
    lm = [[0.0, 0.0]] * 5
    with fs.store.transaction() as conn:
        coll = fs.store.collections.get(conn, name)
    for start in range(0, n, 10_000):
        m = min(10_000, n - start)
        vecs = l2_normalise(rng.normal(size=(m, 128)))
        with fs.store.transaction() as conn:
            # One synthetic "image" per 10,000 faces (faces need an image record), then one
            # multi-row insert of the faces.
            image_row = fs.store.images.insert(conn, coll.id, NewImage(
                image_id=str(uuid.uuid4()), sha256=f"synthetic-{start}", source=None,
                external_id=None, width=250, height=250, faces_detected=m, faces_indexed=m),
                time.time())
            fs.store.faces.insert(conn, coll.id, image_row, [NewFace(
                face_id=str(uuid.uuid4()), external_id=f"person-{start + j}",
                box=(0, 0, 100, 100), landmarks=lm, score=0.99, quality=q,
                embedding=vecs[j]) for j in range(m)], 250, 250, time.time(), coll.model_version)


def pct(xs: list[float]) -> str:
    a = np.array(xs) * 1000
    return f"p50 {np.percentile(a, 50):7.2f} ms   p99 {np.percentile(a, 99):7.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=300_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--max-results", type=int, default=10)
    args = ap.parse_args()
    from facesearch.service import FaceSearch
    from facesearch.storage.index import VectorIndex
    from facesearch.vision.decode import load_image
    from facesearch.vision.embed import l2_normalise

    with tempfile.TemporaryDirectory() as home, FaceSearch.open(home) as fs:
        fs.collections.create("big")
        t = time.perf_counter()
        fill(fs, "big", args.faces)
        print(f"filled {args.faces} faces in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        with fs.store.transaction() as conn:
            coll = fs.store.collections.get(conn, "big")
        index = fs.indexes.rebuild(coll)  # the form the size calls for, at once
        print(f"built the vector index ({index.kind}, {len(index)} vectors) in "
              f"{time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        VectorIndex.load(fs.indexes.path(coll.id), 128, fs.sealer)
        print(f"reopened the saved vector index in {time.perf_counter() - t:.2f} s")
        queries = l2_normalise(np.random.default_rng(1).normal(size=(args.queries, 128)))
        raw, svc = [], []
        found = []
        for q in queries:
            t = time.perf_counter()
            with fs.store.transaction() as conn:
                _, got = index.search(q[None], args.max_results,
                                      exact=lambda ids: fs.store.faces.embeddings(conn, ids, 128))
            raw.append(time.perf_counter() - t)
            found.append(set(got[0].tolist()))
            t = time.perf_counter()
            fs.search.by_vectors("big", q[None], operation="search.vectors",
                                 max_results=args.max_results, threshold=0)
            svc.append(time.perf_counter() - t)
        # recall: the share of the exact top k (over every stored vector) the index returned
        with fs.store.transaction() as conn:
            rows = fs.store.faces.all_rows(conn, coll.id)
        hit = 0
        best = np.full((len(queries), args.max_results), -np.inf, np.float32)
        best_i = np.full((len(queries), args.max_results), -1, np.int64)
        for s in range(0, len(rows), 50_000):
            chunk = rows[s:s + 50_000]
            with fs.store.transaction() as conn:
                sims = queries @ fs.store.faces.embeddings(conn, chunk, 128).T
            alls = np.concatenate([best, sims], 1)
            alli = np.concatenate([best_i, np.broadcast_to(chunk, sims.shape)], 1)
            order = np.argsort(-alls, axis=1, kind="stable")[:, :args.max_results]
            best, best_i = np.take_along_axis(alls, order, 1), np.take_along_axis(alli, order, 1)
        for i in range(len(queries)):
            hit += len(found[i] & set(best_i[i].tolist()))
        recall = hit / (len(queries) * args.max_results)
        probe = PROBE.read_bytes()
        fs.search.by_image("big", probe)  # warm-up: loads the models
        full = []
        for _ in range(min(50, args.queries)):
            t = time.perf_counter()
            fs.search.by_image("big", load_image(probe), max_results=args.max_results)
            full.append(time.perf_counter() - t)
        print(f"collection: {args.faces} faces, top {args.max_results}, pipeline "
              f"{fs.pipeline.model_version}")
        print(f"vector index search (exact re-rank from the store) {pct(raw)}   recall of "
              f"the exact top {args.max_results}: {recall:.4f}")
        print(f"service search (+metadata)   {pct(svc)}")
        print(f"search by image (end to end) {pct(full)}")


if __name__ == "__main__":
    main()
