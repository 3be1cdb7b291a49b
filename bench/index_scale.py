"""A collection's vector index at millions of faces, probed with real faces: recall against
exact search (the top 10 above the default threshold, and the mate), latency, memory, build
time, for the settings the index can take (cells scanned, shortlists, codes, FAISS threads).

Faces: the shipped model's (SFace) embeddings of lfw-dev. Each person with two or more photos
is a probe: the first photo searches, the others (the mates) are enrolled. The rest of the N
faces are face-like vectors: mixtures of three real embeddings of the people with one photo
(Dirichlet weights, plus a little noise), so they crowd where real faces are, unlike
isotropic vectors. The exact vectors live in a file, as the store's do on disk, and score each
query's final shortlist.

For each size N the inverted file is built the way the service builds it
(:meth:`facesearch.storage.index.VectorIndex.build`), once per code size; then each setting of
cells scanned, shortlists and FAISS threads searches every probe (top 10, one query at a time).
Latency is wall time (a busy machine's waits included) and the process's CPU time per
query (what a query costs, whatever the machine's load). Against exact search over all N:

- ``top-10``: the share of the exact top 10 at or above the default threshold (cosine 0.366,
  similarity 80) that the index returns in its top 10;
- ``mate``: of the probes whose best mate exact search ranks in its top 10 at or above the
  threshold, the share whose index top 10 holds that mate.

    .venv/bin/python bench/index_scale.py [--sizes 1000000,5000000] [--subvectors 64]
        [--cells 0] [--probe 0.3,0.45,0.6] [--first 256,1024,2048] [--second 64]
        [--threads 2] [--workdir DIR [--keep]] [--cell-ranks]
        [--save-index | --load-index | --build-only]

``--probe`` and ``--first`` default to the service's own policy for each size
(:func:`facesearch.storage.index.probe_fraction_for`, :func:`facesearch.storage.index.shortlist`);
``--cells 0`` is the service's :func:`facesearch.storage.index.cells_for`. ``--keep`` keeps
the face-like vectors and the exact top 10 in ``--workdir`` (``v<N>.f32``, ``truth<N>.npz``)
and reuses them (20,000,000 faces are 10.2 GB of vectors: generating and searching them
exactly takes minutes); ``--save-index`` writes each index built there
(``index<N>-<codes>-<cells>.faiss``, ``.sq8``), ``--load-index`` reads it instead of building
it again (the build at 20,000,000 faces took 22 minutes of a busy machine), ``--build-only``
builds and saves without measuring. ``--cell-ranks`` trains only the cells (k-means, as
``build`` does) and prints, per share of cells scanned, the share of the mates and of the exact top 10 above
the threshold that lie in the scanned cells: the bound on recall that the cells alone set,
without building the index.

The exact vectors are read from the file a chunk at a time (the page cache holds them, not
the process), so the benchmark's resident memory is the index's plus the rows it touched.

The embeddings are computed once (about 5 minutes on 2 cores) and cached
(``$FACESEARCH_CACHE/eval``, as ``facesearch eval`` does).
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from facesearch.storage.index import (
    TRAIN_MAX,
    TRAIN_SAMPLE,
    VectorIndex,
    cells_for,
    probe_fraction_for,
    shortlist,
)
from facesearch.vision.similarity import DEFAULT_EMBEDDER, SCALES

COS_AT_80 = SCALES[DEFAULT_EMBEDDER].cos_at_80
"""The default threshold (similarity 80) of the default model, as a cosine."""
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


class Vectors:
    """The N exact vectors in a raw float32 file, read with ``pread`` (through the page
    cache: a map of the file would count the pages around every row read as the process's
    memory)."""

    def __init__(self, path: Path, n: int) -> None:
        self.path, self.n = path, n
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.n

    def range(self, start: int, stop: int) -> np.ndarray:
        buf = os.pread(self._fd, (stop - start) * DIM * 4, start * DIM * 4)
        return np.frombuffer(buf, np.float32).reshape(-1, DIM)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        if len(ids) and ids[-1] - ids[0] == len(ids) - 1 and np.all(np.diff(ids) == 1):
            return self.range(int(ids[0]), int(ids[-1]) + 1)
        size = DIM * 4
        buf = b"".join(os.pread(self._fd, size, int(i) * size) for i in ids)
        return np.frombuffer(buf, np.float32).reshape(-1, DIM)


def make_vectors(path: Path, n: int, faces: Faces) -> Vectors:
    """Write the N faces (face-like mixtures, then the mates) to ``path``."""
    n_mix = n - len(faces.mates)
    with path.open("wb") as f:
        for s in range(0, n_mix, CHUNK):
            f.write(mixtures(faces.pool, s, min(n_mix, s + CHUNK)).astype(np.float32).tobytes())
        f.write(faces.mates.astype(np.float32).tobytes())
    return Vectors(path, n)


@dataclass
class Truth:
    top: np.ndarray
    """(P, 10) exact top-10 ids."""
    sims: np.ndarray
    """(P, 10) their cosines."""
    mate: np.ndarray
    """(P,) each probe's best mate id if exact search ranks it in the top 10 at or above
    the threshold, else -1."""


def exact(vecs: Vectors, faces: Faces, n_mix: int) -> Truth:
    q = faces.probes
    top_s = np.full((len(q), 10), -np.inf, np.float32)
    top_i = np.full((len(q), 10), -1, np.int64)
    for s in range(0, len(vecs), EXACT_CHUNK):
        sims = q @ vecs.range(s, min(len(vecs), s + EXACT_CHUNK)).T
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
        best = mine[np.argmax(vecs.rows(mine) @ q[p])]
        row = np.where(top_i[p] == best)[0]
        if len(row) and top_s[p, row[0]] >= COS_AT_80:
            mate[p] = best
    return Truth(top_i, top_s, mate)


def measure(index: VectorIndex, vecs: Vectors, faces: Faces,
            truth: Truth) -> dict[str, float]:
    lat, cpu, got = [], [], []
    for i in range(len(faces.probes)):
        t, c = time.perf_counter(), time.process_time()
        _, ids = index.search(faces.probes[i:i + 1], 10, exact=vecs.rows)
        lat.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
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
            "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "cpu50": float(np.percentile(cpu, 50)), "cpu99": float(np.percentile(cpu, 99))}


def cell_ranks(vecs: Vectors, faces: Faces, truth: Truth, nlist: int,
               fractions: list[float]) -> None:
    """Print, per share of cells scanned, the share of mates and of the exact top 10 above the
    threshold whose cell is among those scanned (cells trained as ``VectorIndex.build``
    trains them)."""
    n = len(vecs)
    ids = np.arange(n, dtype=np.int64)
    sample = np.sort(np.random.default_rng(n).choice(
        ids, min(n, TRAIN_SAMPLE * nlist, TRAIN_MAX), replace=False))
    t = time.perf_counter()
    ivf = faiss.index_factory(DIM, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.train(np.ascontiguousarray(vecs.rows(sample)))
    train_s = time.perf_counter() - t
    quant = faiss.downcast_index(ivf.quantizer)
    _, order = quant.search(faces.probes, nlist)
    rank = np.empty_like(order)
    rank[np.arange(len(order))[:, None], order] = np.arange(nlist)[None, :]
    above = truth.sims >= COS_AT_80
    top_ids = truth.top[above]
    top_q = np.nonzero(above)[0]
    _, top_cell = quant.search(np.ascontiguousarray(vecs.rows(np.sort(top_ids))), 1)
    cell_of = dict(zip(np.sort(top_ids).tolist(), top_cell[:, 0].tolist(), strict=True))
    top_rank = np.array([rank[q, cell_of[i]] for q, i in zip(top_q, top_ids.tolist(),
                                                           strict=True)])
    has = np.nonzero(truth.mate >= 0)[0]
    _, mate_cell = quant.search(np.ascontiguousarray(vecs.rows(truth.mate[has])), 1)
    mate_rank = rank[has, mate_cell[:, 0]]
    for f in fractions:
        nprobe = max(1, int(np.ceil(f * nlist)))
        print(f"| {n:,} | {nlist} | {f:.3f} | {nprobe} | {train_s:.0f} s | "
              f"{np.mean(top_rank < nprobe):.3f} ({len(top_rank)}) | "
              f"{np.mean(mate_rank < nprobe):.3f} ({int(np.sum(mate_rank < nprobe))}/"
              f"{len(has)}) |", flush=True)


def floats(text: str | None) -> list[float] | None:
    return None if text is None else [float(x) for x in text.split(",")]


def ints(text: str | None) -> list[int] | None:
    return None if text is None else [int(x) for x in text.split(",")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000,5000000")
    ap.add_argument("--subvectors", default="64", help="4-bit codes: sub-quantisers")
    ap.add_argument("--cells", default="0", help="inverted-file cells (0: cells_for(N))")
    ap.add_argument("--probe", default=None,
                    help="shares of the cells scanned (default: probe_fraction_for(N))")
    ap.add_argument("--first", default=None,
                    help="4-bit shortlist (default: the service's shortlist(10))")
    ap.add_argument("--second", default="64", help="8-bit shortlist (min)")
    ap.add_argument("--threads", default="2",
                    help="FAISS (OpenMP) threads of the searching thread")
    ap.add_argument("--lfw", type=Path, default=LFW)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true",
                    help="keep and reuse the vectors and exact answers in --workdir")
    ap.add_argument("--save-index", action="store_true", help="save each index in --workdir")
    ap.add_argument("--load-index", action="store_true",
                    help="load each index from --workdir (saved by --save-index)")
    ap.add_argument("--build-only", action="store_true", help="build and save, no search")
    ap.add_argument("--cell-ranks", action="store_true",
                    help="train the cells only: recall bound per share scanned")
    args = ap.parse_args()
    faces = real_faces(args.lfw)
    print(f"{len(faces.probes)} probes, {len(faces.mates)} mates, {len(faces.pool)} "
          f"single-photo people mixed into the distractors; threshold cosine {COS_AT_80}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        keep_dir = args.workdir if args.keep and args.workdir else Path(tmp)
        for n in (int(x) for x in args.sizes.split(",")):
            n_mix = n - len(faces.mates)
            t = time.perf_counter()
            path, truth_path = keep_dir / f"v{n}.f32", keep_dir / f"truth{n}.npz"
            if path.is_file() and path.stat().st_size == n * DIM * 4:
                vecs = Vectors(path, n)
            else:
                vecs = make_vectors(path, n, faces)
            if args.build_only:
                truth = Truth(np.zeros((0, 10), np.int64), np.zeros((0, 10)), np.zeros(0))
            elif truth_path.is_file():
                z = np.load(truth_path)
                truth = Truth(z["top"], z["sims"], z["mate"])
            else:
                truth = exact(vecs, faces, n_mix)
                np.savez(truth_path, top=truth.top, sims=truth.sims, mate=truth.mate)
            print(f"{n:,} faces and their exact top 10: {time.perf_counter() - t:.0f} s; "
                  f"{int(np.sum(truth.sims >= COS_AT_80))} of the exact top 10 above the "
                  f"threshold, {int(np.sum(truth.mate >= 0))} mates", flush=True)
            cells = [c or cells_for(n) for c in ints(args.cells) or [0]]
            fracs = floats(args.probe) or [probe_fraction_for(n)]
            if args.cell_ranks:
                print("| faces | cells | scanned | cells scanned | k-means | top-10 above "
                      "threshold in scanned cells | mates in scanned cells |")
                print("|---|---|---|---|---|---|---|")
                for nlist in cells:
                    cell_ranks(vecs, faces, truth, nlist, fracs)
                continue
            print("| faces | codes | cells | scanned | shortlists | build | index memory | "
                  "p50 | p99 | CPU p50 / p99 | top-10 above threshold | mate found |")
            print("|---|---|---|---|---|---|---|---|---|---|---|---|")
            ids = np.arange(n, dtype=np.int64)
            faiss.omp_set_num_threads(2)  # building: 2 cores
            for sub, nlist in itertools.product(ints(args.subvectors) or [], cells):
                base = rss_mb()
                t = time.perf_counter()
                saved = keep_dir / f"index{n}-{sub // 2}-{nlist}"
                if args.load_index:
                    index = VectorIndex(DIM, faiss.read_index(f"{saved}.faiss"),
                                        faiss.read_index(f"{saved}.sq8"), n)
                else:
                    index = VectorIndex.build(DIM, ids, vecs.rows, subvectors=sub, cells=nlist)
                build_s = time.perf_counter() - t
                mem = rss_mb() - base
                print(f"index {'loaded' if args.load_index else 'built'} in {build_s:.0f} s, "
                      f"{mem:,.0f} MB; load average {os.getloadavg()[0]:.1f}", flush=True)
                if args.save_index or args.build_only:
                    faiss.write_index(index._index, f"{saved}.faiss")  # noqa: SLF001
                    faiss.write_index(index._refine, f"{saved}.sq8")  # noqa: SLF001
                if args.build_only:
                    continue
                for frac, first, second, threads in itertools.product(
                        fracs, ints(args.first) or [shortlist(10, n)[0]],
                        ints(args.second) or [], ints(args.threads) or []):
                    faiss.omp_set_num_threads(threads)
                    index.probe_fraction = frac
                    index.shortlists = lambda k, f=first, s=second: (max(10 * k, f),
                                                                     max(2 * k, s))
                    r = measure(index, vecs, faces, truth)
                    print(f"| {n:,} | {sub // 2} B | {nlist} | {frac:.3f} | {first}/{second} | "
                          f"{build_s:.0f} s | {mem:,.0f} MB | {r['p50']:.1f} ms | "
                          f"{r['p99']:.1f} ms | {r['cpu50']:.1f} / {r['cpu99']:.1f} ms | "
                          f"{r['top10']:.3f} ({r['want']}) | "
                          f"{r['mate']:.3f} ({r['mates']}/{r['of']}) | "
                          f"{threads} threads, load {os.getloadavg()[0]:.1f}", flush=True)
                del index
            if not args.keep:
                path.unlink()
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
