"""A collection's vector index at 1, 5 and 20 million faces: build time, memory, search
latency and recall, on vectors shaped like the shipped model's.

Vectors: people with 4 photos each, drawn like SFace's embeddings of lfw-dev (measured there
with the shipped model: a common offset of norm 0.33 that puts different people's mean cosine
near 0.1, isotropic otherwise; photos of one person at a mean cosine of about 0.68). With
``--measure DIR`` the offset and spreads are measured from the embeddings in ``DIR`` (a
``facesearch eval`` cache) instead of these defaults.

For each size N: the index is built the way the service builds it
(:meth:`facesearch.storage.index.VectorIndex.build`: exact below 100,000 faces, otherwise the
inverted file), from vectors generated a chunk at a time; the exact vectors live in a
memory-mapped file, as the store's do on disk, and score each query's final shortlist. Then
500 searches of new photos of enrolled people (top 10, one query at a time, 2 threads),
timed; recall = share of the same-person matches at or above the default threshold
(cosine 0.366) that an exact search over all N finds, found by the index.

    .venv/bin/python bench/index_scale.py [--sizes 1000000,5000000,20000000] [--queries 500]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from facesearch.storage.index import VectorIndex

DIM = 128
COS_AT_80 = 0.366
PER_ID = 4
CHUNK = 1_000_000


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


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(n: int, queries: int, workdir: Path) -> dict[str, float]:
    people = People(n // PER_ID)
    vec_file = workdir / f"vectors-{n}.f32"
    t = time.perf_counter()
    mm = np.lib.format.open_memmap(vec_file, mode="w+", dtype=np.float32, shape=(n, DIM))
    for s in range(0, n, CHUNK):
        mm[s:s + CHUNK] = people.photos(s, min(n, s + CHUNK))
    mm.flush()
    gen_s = time.perf_counter() - t
    ids = np.arange(n, dtype=np.int64)
    base_rss = rss_mb()
    t = time.perf_counter()
    index = VectorIndex.build(DIM, ids, lambda rows: np.asarray(mm[rows]))
    build_s = time.perf_counter() - t
    index_rss = rss_mb() - base_rss
    who = np.random.default_rng(11).choice(n // PER_ID, queries, replace=False)
    q = people.new_photos(who)
    faiss.omp_set_num_threads(2)
    lat = []
    found_ids = []
    for i in range(queries):
        t = time.perf_counter()
        _, got = index.search(q[i:i + 1], 10, exact=lambda rows: np.asarray(mm[rows]))
        lat.append((time.perf_counter() - t) * 1000)
        found_ids.append(set(got[0].tolist()))
    # exact truth over everything, a chunk at a time: same-person matches above threshold
    wanted = found = 0
    for i, person in enumerate(who):
        rows = np.arange(person * PER_ID, person * PER_ID + PER_ID)
        sims = np.asarray(mm[rows]) @ q[i]
        mine = set(rows[sims >= COS_AT_80].tolist())
        wanted += len(mine)
        found += len(mine & found_ids[i])
    return {"n": n, "kind": index.kind, "gen_s": gen_s, "build_s": build_s,
            "index_mb": index_rss, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024, "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "recall": found / max(wanted, 1), "wanted": wanted}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000,5000000,20000000")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    print("| faces | form | build | index memory | peak RSS | search p50 | p99 | recall |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            r = run(n, args.queries, Path(tmp))
            print(f"| {n:,} | {r['kind']} | {r['build_s']:.0f} s | {r['index_mb']:,.0f} MB | "
                  f"{r['peak_mb']:,.0f} MB | {r['p50']:.1f} ms | {r['p99']:.1f} ms | "
                  f"{r['recall']:.4f} ({r['wanted']} matches) |", flush=True)
            (Path(tmp) / f"vectors-{n}.f32").unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
