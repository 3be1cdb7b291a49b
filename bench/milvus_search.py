"""Vectors on Milvus against FAISS: search latency and recall at 100,000 faces, and the time
an erasure takes (delete, flush, compaction).

Vectors shaped like SFace's on lfw-dev (:class:`People`: synthetic people of 4 photos each). A
Milvus 2.3 standalone server (the ``milvus`` wheel) is started in a temporary folder; the
vectors go into one collection the way :class:`facesearch.storage.milvus.MilvusVectors`
writes them (upserts of 10,000, IVF_SQ8, segments sealed and indexed), and each query runs
the service's path (:meth:`MilvusCollection.search`: Milvus's shortlist, scored exactly on
the exact vectors, here a memory-mapped file as the store's on disk). The same queries run
on the FAISS index the service builds (:class:`facesearch.storage.index.VectorIndex`).
500 searches of new photos of enrolled people, top 10, one at a time; recall = share of the
same-person matches at or above the default threshold (cosine 0.366) that exact search finds.

Runs in the Milvus environment (scripts/setup-milvus):

    .venv-milvus/bin/python bench/milvus_search.py [--n 100000] [--queries 500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from index_scale import COS_AT_80, DIM

from facesearch.storage.index import VectorIndex
from facesearch.storage.milvus import INTERIM_NPROBE, NLIST, MilvusCollection

PER_ID = 4
"""Photos of each synthetic person."""


class People:
    """Deterministic synthetic people: identity ``i``'s photo ``j`` is the same vector
    whenever it is asked for."""

    def __init__(self, n_ids: int, offset: float = 0.33, within: float = 0.65,
                 seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        mu = rng.normal(size=DIM)
        self.mu = (mu * offset / np.linalg.norm(mu)).astype(np.float32)
        self.n_ids = n_ids
        self.within = within
        self.seed = seed

    def centres(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), DIM), np.float32)
        for k, i in enumerate(ids):
            out[k] = np.random.default_rng((self.seed, 1, int(i))).normal(size=DIM)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def photos(self, start: int, stop: int, photo_seed: int = 2) -> np.ndarray:
        """Photos ``start`` .. ``stop`` (photo k is person k // 4), unit vectors."""
        people = np.arange(start, stop) // PER_ID
        uniq, inv = np.unique(people, return_inverse=True)
        c = self.centres(uniq)[inv]
        noise = np.random.default_rng((self.seed, photo_seed, start)).normal(
            size=(stop - start, DIM)).astype(np.float32)
        x = c * 0.9 + noise * (self.within / np.sqrt(DIM)) + self.mu
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def new_photos(self, people: np.ndarray) -> np.ndarray:
        c = self.centres(people)
        noise = np.random.default_rng((self.seed, 7)).normal(
            size=(len(people), DIM)).astype(np.float32)
        x = c * 0.9 + noise * (self.within / np.sqrt(DIM)) + self.mu
        return x / np.linalg.norm(x, axis=1, keepdims=True)



def recall(found: list[set[int]], who: np.ndarray, q: np.ndarray, x: np.ndarray) -> float:
    wanted = hit = 0
    for i, person in enumerate(who):
        rows = np.arange(person * PER_ID, person * PER_ID + PER_ID)
        mine = set(rows[x[rows] @ q[i] >= COS_AT_80].tolist())
        wanted += len(mine)
        hit += len(mine & found[i])
    return hit / max(wanted, 1)


def timed(search: object, q: np.ndarray) -> tuple[list[float], list[set[int]]]:
    lat, found = [], []
    for i in range(len(q)):
        t = time.perf_counter()
        _, got = search(q[i:i + 1])  # type: ignore[operator]
        lat.append((time.perf_counter() - t) * 1000)
        found.append(set(got[0].tolist()))
    return lat, found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    args = ap.parse_args()
    n = args.n
    people = People(n // PER_ID)
    x = people.photos(0, n)
    ids = np.arange(n, dtype=np.int64)
    who = np.random.default_rng(11).choice(n // PER_ID, args.queries, replace=False)
    q = people.new_photos(who)

    def exact(rows: np.ndarray) -> np.ndarray:
        return x[rows]

    from milvus import MilvusServer, MilvusServerConfig
    from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, connections

    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        server = MilvusServer(MilvusServerConfig())
        server.set_base_dir(tmp)
        # segments not yet indexed are searched on an interim index: scan as much of it as
        # the IVF_SQ8 index (docs/deploy.md)
        server.config.set("queryNode.segcore.interimIndex.nprobe", INTERIM_NPROBE)
        t = time.perf_counter()
        server.start()
        start_s = time.perf_counter() - t
        try:
            connections.connect("bench", uri=f"http://127.0.0.1:{server.listen_port}")
            schema = CollectionSchema([
                FieldSchema("id", DataType.INT64, is_primary=True),
                FieldSchema("vector", DataType.FLOAT_VECTOR, dim=DIM)])
            c = Collection("bench_1", schema, using="bench")
            c.create_index("vector", {"index_type": "IVF_SQ8", "metric_type": "IP",
                                      "params": {"nlist": NLIST}})
            c.load()
            mc = MilvusCollection(c, None, size=n)  # type: ignore[arg-type]
            t = time.perf_counter()
            mc.upsert(ids, exact)
            c.flush()
            from pymilvus import utility

            utility.wait_for_index_building_complete("bench_1", using="bench")
            load_s = time.perf_counter() - t
            mc.search(q[:5], 10, exact=exact)  # warm
            lat, found = timed(lambda v: mc.search(v, 10, exact=exact), q)
            rows_out.append(("Milvus 2.3, segments on the interim index + exact rescoring", lat,
                             recall(found, who, q, x), f"{load_s:.0f} s"))
            t = time.perf_counter()
            while not all(g.index_name for g in utility.get_query_segment_info(
                    "bench_1", using="bench")):
                time.sleep(1)
            handoff_s = time.perf_counter() - t
            lat, found = timed(lambda v: mc.search(v, 10, exact=exact), q)
            rows_out.append(("Milvus 2.3, IVF_SQ8 loaded + exact rescoring", lat,
                             recall(found, who, q, x), f"+{handoff_s:.0f} s"))
            t = time.perf_counter()
            mc.delete(ids[17:18])
            mc.purge(120)
            erase_s = time.perf_counter() - t
        finally:
            connections.disconnect("bench")
            server.stop()
    for large, form in ((n + 1, "exact (flat)"), (n, "inverted file (ivf)")):
        t = time.perf_counter()
        index = VectorIndex.build(DIM, ids, x, large=large)
        build_s = time.perf_counter() - t
        lat, found = timed(lambda v, ix=index: ix.search(v, 10, exact=exact), q)
        rows_out.append((f"FAISS {form}", lat, recall(found, who, q, x), f"{build_s:.0f} s"))
    print(f"{n:,} faces, {args.queries} searches (top 10, one at a time); Milvus started in "
          f"{start_s:.1f} s; one erasure on Milvus (delete, flush, compaction): {erase_s:.1f} s")
    print("| backend | load / build | search p50 | p95 | recall |")
    print("|---|---|---|---|---|")
    for name, lat, rec, build in rows_out:
        print(f"| {name} | {build} | {np.percentile(lat, 50):.1f} ms | "
              f"{np.percentile(lat, 95):.1f} ms | {rec:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
