"""A collection's vector index at millions of faces, probed with real faces: recall against
exact search (the top 10 above the default threshold, and the mate), latency, memory, build
time, for the settings the index can take (cells scanned, shortlists, codes).

Faces: the shipped model's (SFace) embeddings of lfw-dev. Each person with two or more photos
is a probe: the first photo searches, the others (the mates) are enrolled. The rest of the N
faces are face-like vectors: mixtures of three real embeddings of the people with one photo
(Dirichlet weights, plus a little noise), so they crowd where real faces are, unlike
isotropic vectors. The exact vectors live in a memory-mapped file, as the store's do on disk,
and score each query's final shortlist.

For each size N the inverted file is built the way the service builds it
(:meth:`facesearch.storage.index.VectorIndex.build`), once per code size; then each setting of
cells scanned and shortlists searches every probe (top 10, one query at a time, 2 threads).
Against exact search over all N:

- ``top-10``: the share of the exact top 10 at or above the default threshold (cosine 0.366,
  similarity 80) that the index returns in its top 10;
- ``mate``: of the probes whose best mate exact search ranks in its top 10 at or above the
  threshold, the share whose index top 10 holds that mate.

    .venv/bin/python bench/index_scale.py [--sizes 1000000,5000000] [--subvectors 32,64]
        [--probe 0.3,0.45,0.6] [--first 256,1024,2048] [--second 64,128]

The embeddings are computed once (about 5 minutes on 2 cores) and cached
(``$FACESEARCH_CACHE/eval``, as ``facesearch eval`` does).
"""

from __future__ import annotations

import argparse
import itertools
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from facesearch.storage.index import VectorIndex
from facesearch.vision.similarity import COS_AT_80

DIM = 128
CHUNK = 500_000
EXACT_CHUNK = 50_000
"""Faces scored at a time by exact search (a (probes, chunk) matrix: memory)."""
LFW = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "lfw-dev" / "images"
NOISE = 0.1
"""Norm of the isotropic noise added to each mixture (before normalising)."""


@dataclass
class Faces:
    probes: np.ndarray
    """(P, 128) one photo of each probe person."""
    mates: np.ndarray
    """(M, 128) the other photos of the probe people."""
    mate_of: np.ndarray
    """(M,) the probe each mate belongs to."""
    pool: np.ndarray
    """(S, 128) photos of the people with one photo: what mixtures are made of."""


def real_faces(lfw: Path) -> Faces:
    from facesearch.evaluation.embeddings import Status, default_cache_dir, embed_images

    paths = sorted(str(p) for p in lfw.rglob("*.jpg"))
    emb = embed_images(paths, "fast", cache_dir=default_cache_dir())
    by_person: dict[str, list[np.ndarray]] = {}
    for p, v, st in zip(emb.paths, emb.vectors, emb.status, strict=True):
        if st == Status.FOUND:
            by_person.setdefault(Path(p).parent.name, []).append(v)
    probes, mates, mate_of, pool = [], [], [], []
    for vs in by_person.values():
        if len(vs) == 1:
            pool.append(vs[0])
            continue
        probes.append(vs[0])
        mates += vs[1:]
        mate_of += [len(probes) - 1] * (len(vs) - 1)
    f32 = np.float32
    return Faces(np.asarray(probes, f32), np.asarray(mates, f32), np.asarray(mate_of),
                 np.asarray(pool, f32))


def mixtures(pool: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Face-like vectors ``start`` .. ``stop`` (deterministic): each a Dirichlet mixture of
    three pool embeddings plus noise, normalised."""
    rng = np.random.default_rng((5, start))
    n = stop - start
    pick = rng.integers(0, len(pool), size=(n, 3))
    w = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
    x = np.einsum("nk,nkd->nd", w, pool[pick])
    x += rng.normal(size=(n, DIM)).astype(np.float32) * (NOISE / np.sqrt(DIM))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Truth:
    top: np.ndarray
    """(P, 10) exact top-10 ids."""
    sims: np.ndarray
    """(P, 10) their cosines."""
    mate: np.ndarray
    """(P,) each probe's best mate id if exact search ranks it in the top 10 at or above
    the threshold, else -1."""


def exact(mm: np.ndarray, faces: Faces, n_mix: int) -> Truth:
    q = faces.probes
    top_s = np.full((len(q), 10), -np.inf, np.float32)
    top_i = np.full((len(q), 10), -1, np.int64)
    for s in range(0, len(mm), EXACT_CHUNK):
        sims = q @ np.asarray(mm[s:s + EXACT_CHUNK]).T
        part = np.argpartition(-sims, 9, axis=1)[:, :10]
        ps = np.take_along_axis(sims, part, 1)
        alls = np.concatenate([top_s, ps], 1)
        alli = np.concatenate([top_i, part + s], 1)
        order = np.argsort(-alls, axis=1, kind="stable")[:, :10]
        top_s, top_i = np.take_along_axis(alls, order, 1), np.take_along_axis(alli, order, 1)
    mate = np.full(len(q), -1, np.int64)
    ids = n_mix + np.arange(len(faces.mates))
    for p in range(len(q)):
        mine = ids[faces.mate_of == p]
        best = mine[np.argmax(np.asarray(mm[mine]) @ q[p])]
        row = np.where(top_i[p] == best)[0]
        if len(row) and top_s[p, row[0]] >= COS_AT_80:
            mate[p] = best
    return Truth(top_i, top_s, mate)


def measure(index: VectorIndex, mm: np.ndarray, faces: Faces, truth: Truth) -> dict[str, float]:
    lat, got = [], []
    for i in range(len(faces.probes)):
        t = time.perf_counter()
        _, ids = index.search(faces.probes[i:i + 1], 10, exact=lambda r: np.asarray(mm[r]))
        lat.append((time.perf_counter() - t) * 1000)
        got.append(set(ids[0].tolist()))
    want = hit = 0
    for i in range(len(faces.probes)):
        above = set(truth.top[i][truth.sims[i] >= COS_AT_80].tolist())
        want += len(above)
        hit += len(above & got[i])
    has_mate = truth.mate >= 0
    mates = sum(int(truth.mate[i]) in got[i] for i in np.where(has_mate)[0])
    return {"top10": hit / max(want, 1), "want": want, "mate": mates / max(has_mate.sum(), 1),
            "mates": mates, "of": int(has_mate.sum()),
            "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000,5000000")
    ap.add_argument("--subvectors", default="32,64", help="4-bit codes: sub-quantisers")
    ap.add_argument("--probe", default="0.3,0.45,0.6", help="shares of the cells scanned")
    ap.add_argument("--first", default="256,1024,2048", help="4-bit shortlist (min)")
    ap.add_argument("--second", default="64,128", help="8-bit shortlist (min)")
    ap.add_argument("--lfw", type=Path, default=LFW)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    faiss.omp_set_num_threads(2)
    faces = real_faces(args.lfw)
    print(f"{len(faces.probes)} probes, {len(faces.mates)} mates, {len(faces.pool)} "
          f"single-photo people mixed into the distractors; threshold cosine {COS_AT_80}")
    print("| faces | codes | cells | scanned | shortlists | build | index memory | "
          "p50 | p99 | top-10 above threshold | mate found |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            n_mix = n - len(faces.mates)
            mm = np.lib.format.open_memmap(Path(tmp) / "v.npy", mode="w+", dtype=np.float32,
                                           shape=(n, DIM))
            for s in range(0, n_mix, CHUNK):
                mm[s:min(n_mix, s + CHUNK)] = mixtures(faces.pool, s, min(n_mix, s + CHUNK))
            mm[n_mix:] = faces.mates
            mm.flush()
            truth = exact(mm, faces, n_mix)
            ids = np.arange(n, dtype=np.int64)
            for sub in (int(x) for x in args.subvectors.split(",")):
                base = rss_mb()
                t = time.perf_counter()
                index = VectorIndex.build(DIM, ids, lambda r: np.asarray(mm[r]), subvectors=sub)
                build_s = time.perf_counter() - t
                mem = rss_mb() - base
                cells = faiss.extract_index_ivf(index._index).nlist  # noqa: SLF001
                for frac, first, second in itertools.product(
                        (float(x) for x in args.probe.split(",")),
                        (int(x) for x in args.first.split(",")),
                        (int(x) for x in args.second.split(","))):
                    index.probe_fraction = frac
                    index.shortlists = lambda k, f=first, s=second: (max(10 * k, f),
                                                                     max(2 * k, s))
                    r = measure(index, mm, faces, truth)
                    print(f"| {n:,} | {sub // 2} B | {cells} | {frac:.2f} | {first}/{second} | "
                          f"{build_s:.0f} s | {mem:,.0f} MB | {r['p50']:.1f} ms | "
                          f"{r['p99']:.1f} ms | {r['top10']:.3f} ({r['want']}) | "
                          f"{r['mate']:.3f} ({r['mates']}/{r['of']}) |", flush=True)
                del index
            del mm
            (Path(tmp) / "v.npy").unlink()
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
